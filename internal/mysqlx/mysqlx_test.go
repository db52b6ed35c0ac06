package mysqlx

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/tidemark-backup/tidemark/internal/secret"
)

func TestParseDSNPasswordFromEnv(t *testing.T) {
	t.Setenv(PasswordEnv, "s3cret")
	d, err := ParseDSN("backup@tcp(db1:3306)/")
	if err != nil {
		t.Fatal(err)
	}
	if d.Config().Passwd != "s3cret" || d.User() != "backup" || d.Addr() != "db1:3306" {
		t.Errorf("config %+v", d.Config())
	}
	d, err = ParseDSN("backup:inline@tcp(db1:3306)/")
	if err != nil || d.Config().Passwd != "inline" {
		t.Fatalf("an inline password must win: %v", err)
	}
	var buf strings.Builder
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "dsn", d)
	for _, s := range []string{d.String(), fmt.Sprint(d), fmt.Sprintf("%v %+v", d, d), buf.String()} {
		if strings.Contains(s, "inline") {
			t.Errorf("password shown: %s", s)
		}
	}
	if !strings.Contains(d.String(), "backup:"+secret.Placeholder+"@tcp(db1:3306)") {
		t.Errorf("String() = %s", d.String())
	}
	if _, err := ParseDSN("user:pw@tcp(host"); err == nil || strings.Contains(err.Error(), "pw@") {
		t.Errorf("bad DSN: %v", err)
	}
}

// TestDSNNeverShowsPassword: a parsed DSN prints, logs and marshals
// without its password.
func TestDSNNeverShowsPassword(t *testing.T) {
	d, err := ParseDSN("backup:hunter2@tcp(db1:3306)/")
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "dsn", d)
	j, _ := json.Marshal(struct{ D *DSN }{d})
	for _, out := range []string{fmt.Sprint(d), fmt.Sprintf("%v %s %q %+v", d, d, d, d), string(j), logs.String()} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("password shown: %s", out)
		}
	}
	if d.Config().Passwd != "hunter2" {
		t.Error("the driver config lost the password")
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		v, c, flavor string
		maj, min, p  int
	}{
		{"10.11.6-MariaDB-0+deb12u1", "Debian 12", MariaDB, 10, 11, 6},
		{"5.5.5-10.4.32-MariaDB", "", MariaDB, 10, 4, 32},
		{"8.0.36", "MySQL Community Server - GPL", MySQL, 8, 0, 36},
		{"8.0.35-27", "Percona Server (GPL), Release 27", Percona, 8, 0, 35},
		{"11.4.2-MariaDB-log", "", MariaDB, 11, 4, 2},
	} {
		f, a, b, c := ParseVersion(tc.v, tc.c)
		if f != tc.flavor || a != tc.maj || b != tc.min || c != tc.p {
			t.Errorf("ParseVersion(%q) = %s %d.%d.%d", tc.v, f, a, b, c)
		}
	}
	s := &Server{Major: 10, Minor: 4, Patch: 0}
	if !s.AtLeast(10, 4, 0) || s.AtLeast(10, 5, 0) || !s.AtLeast(5, 7, 99) {
		t.Error("AtLeast")
	}
}

func TestTranslate(t *testing.T) {
	for _, tc := range []struct {
		err  error
		kind error
		msg  string
	}{
		{&mysql.MySQLError{Number: 1045, Message: "Access denied for user 'x'@'h'"}, ErrAccessDenied, PasswordEnv},
		{&mysql.MySQLError{Number: 1227, Message: "Access denied; you need (at least one of) the RELOAD privilege(s)"}, ErrPrivilege, "grant it RELOAD"},
		{&mysql.MySQLError{Number: 1114, Message: "The table 't' is full"}, ErrDiskFull, "free space"},
		{&mysql.MySQLError{Number: 3, Message: "Error writing file './x' (Errcode: 28 \"No space left on device\")"}, ErrDiskFull, "free space"},
		{&mysql.MySQLError{Number: 1148, Message: "The used command is not allowed"}, ErrLocalInfile, "local_infile"},
		{&mysql.MySQLError{Number: 1412, Message: "Table definition has changed"}, ErrTableChanged, "run the backup again"},
		{mysql.ErrInvalidConn, ErrConnectionLost, "run again"},
	} {
		err := TranslateNeed("doing", tc.err, "RELOAD")
		if !errors.Is(err, tc.kind) || !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) || !strings.HasPrefix(err.Error(), "doing: ") {
			t.Errorf("Translate(%v) = %v", tc.err, err)
		}
		if again := Translate("outer", err); again.Error() != err.Error() {
			t.Errorf("translated twice: %v", again)
		}
	}
	if Translate("x", nil) != nil {
		t.Error("nil")
	}
	plain := errors.New("boom")
	if err := Translate("x", plain); !errors.Is(err, plain) || err.Error() != "x: boom" {
		t.Errorf("plain: %v", err)
	}
}

func TestPasswordFromFileAndArgvWarning(t *testing.T) {
	p := t.TempDir() + "/pw"
	if err := os.WriteFile(p, []byte("from-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(PasswordEnv+"_FILE", p)
	d, err := ParseDSN("backup@tcp(db1:3306)/")
	if err != nil || d.Config().Passwd != "from-a-file" {
		t.Fatalf("password from %s_FILE: %v", PasswordEnv, err)
	}
	t.Setenv(PasswordEnv, "also")
	if _, err := ParseDSN("backup@tcp(db1:3306)/"); err == nil || strings.Contains(err.Error(), "from-a-file") {
		t.Fatalf("both %s and its _FILE: %v", PasswordEnv, err)
	}
	if err := ArgvPasswordError("--mysql", "backup:pw@tcp(db1:3306)/"); err == nil || !strings.Contains(err.Error(), PasswordEnv+"_FILE") || strings.Contains(err.Error(), "pw@") {
		t.Fatalf("refusal: %v", err)
	}
	if err := ArgvPasswordError("--mysql", "backup@tcp(db1:3306)/"); err != nil {
		t.Fatalf("refusal without a password: %v", err)
	}
}

// TestStripPassword: a DSN's password leaves its text and comes back when
// the stripped DSN (or another of the same user and address) is parsed;
// other users and addresses do not get it.
func TestStripPassword(t *testing.T) {
	t.Setenv(PasswordEnv, "")
	for _, tc := range []struct{ dsn, want, pw string }{
		{"strip1:p@ss:w/rd@tcp(db7:3306)/shop?parseTime=true", "strip1@tcp(db7:3306)/shop?parseTime=true", "p@ss:w/rd"},
		{"strip2:pw2@unix(/run/mysqld/mysqld.sock)/", "strip2@unix(/run/mysqld/mysqld.sock)/", "pw2"},
		{"strip3:y@tcp(db8:3306)/?ssl-mode=REQUIRED", "strip3@tcp(db8:3306)/?ssl-mode=REQUIRED", "y"},
		{"strip4@tcp(db9:3306)/", "strip4@tcp(db9:3306)/", ""},
	} {
		got, err := StripPassword(tc.dsn)
		if err != nil || got != tc.want {
			t.Errorf("StripPassword of %q = %q, %v", tc.want, got, err)
			continue
		}
		if tc.pw != "" && strings.Contains(got, tc.pw) {
			t.Errorf("%q still holds the password", got)
		}
		d, err := ParseDSN(got)
		if err != nil {
			t.Fatal(err)
		}
		if d.Config().Passwd != tc.pw {
			t.Errorf("ParseDSN(%q): password %q, want %q", got, d.Config().Passwd, tc.pw)
		}
	}
	if d, err := ParseDSN("other@tcp(db7:3306)/"); err != nil || d.Config().Passwd != "" {
		t.Errorf("another user got a password: %v", err)
	}
	if d, err := ParseDSN("strip1@tcp(db8:3306)/"); err != nil || d.Config().Passwd != "" {
		t.Errorf("another address got a password: %v", err)
	}
	if _, err := StripPassword("strip5:secretpw@tcp(db:3306"); err == nil || strings.Contains(err.Error(), "secretpw") {
		t.Errorf("a bad DSN: %v", err)
	}
}
