package testenv

import (
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
)

// TestCloneDouble: the double answers as its comment says MySQL 8.0 does
// (the tables empty before the first clone, the documented refusals, the
// rows after one), and its clone holds the backend's data files without
// binlogs, with the backend's coordinates.
func TestCloneDouble(t *testing.T) {
	m := StartMariaDB(t, MariaDBOptions{Name: "clone-double"})
	m.Exec(t, "CREATE DATABASE d", "CREATE TABLE d.t (id INT PRIMARY KEY)", "INSERT INTO d.t VALUES (1), (2)")
	c := StartCloneDouble(t, m)
	db, err := sql.Open("mysql", c.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	db.SetMaxOpenConns(1)
	errNo := func(err error) uint16 {
		var me *mysql.MySQLError
		if errors.As(err, &me) {
			return me.Number
		}
		return 0
	}
	count := func(q string) int {
		t.Helper()
		var n int
		if err := db.QueryRow(q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	if n := count("SELECT COUNT(*) FROM performance_schema.clone_status"); n != 0 {
		t.Errorf("clone_status before any clone: %d rows", n)
	}
	if n := count("SELECT COUNT(*) FROM performance_schema.clone_progress"); n != 0 {
		t.Errorf("clone_progress before any clone: %d rows", n)
	}
	var status string
	if err := db.QueryRow("SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME='clone'").Scan(&status); err != nil || status != "ACTIVE" {
		t.Errorf("plugin: %q %v", status, err)
	}

	parent := t.TempDir()
	for _, bad := range []struct {
		dir  string
		want uint16
	}{
		{parent, 1007}, // exists
		{filepath.Join(m.DataDir, "inside"), 3632}, // ER_PATH_IN_DATADIR
		{"relative/dir", 1210},
	} {
		_, err := db.Exec("CLONE LOCAL DATA DIRECTORY = '" + bad.dir + "'")
		if errNo(err) != bad.want {
			t.Errorf("CLONE into %s: %v, want error %d", bad.dir, err, bad.want)
		}
	}

	dir := filepath.Join(parent, "clone")
	if _, err := db.Exec("CLONE LOCAL DATA DIRECTORY '" + dir + "'"); err != nil {
		t.Fatal(err)
	}
	var file string
	var pos uint64
	rows, err := m.DB(t).Query("SHOW MASTER STATUS")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		cols, _ := rows.Columns()
		vals := []any{&file, &pos}
		for len(vals) < len(cols) {
			vals = append(vals, new(sql.RawBytes))
		}
		if err := rows.Scan(vals...); err != nil {
			t.Fatal(err)
		}
	}
	_ = rows.Close()
	var state, dest, bfile string
	var bpos uint64
	if err := db.QueryRow("SELECT STATE, DESTINATION, BINLOG_FILE, BINLOG_POSITION FROM performance_schema.clone_status").Scan(&state, &dest, &bfile, &bpos); err != nil {
		t.Fatal(err)
	}
	if state != "Completed" || dest != dir || bfile != file || bpos != pos {
		t.Errorf("clone_status %s %s %s:%d, want Completed %s %s:%d", state, dest, bfile, bpos, dir, file, pos)
	}
	var stages []string
	rows, err = db.Query("SELECT STAGE, STATE, ESTIMATE, DATA FROM performance_schema.clone_progress")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var st, s string
		var est, data int64
		if err := rows.Scan(&st, &s, &est, &data); err != nil {
			t.Fatal(err)
		}
		stages = append(stages, st+"="+s)
		if st == "FILE COPY" && (est == 0 || est != data) {
			t.Errorf("FILE COPY estimate %d data %d", est, data)
		}
	}
	_ = rows.Close()
	if got := strings.Join(stages, ","); got != "DROP DATA=Completed,FILE COPY=Completed,PAGE COPY=Completed,REDO COPY=Completed,FILE SYNC=Completed,RESTART=Not Started,RECOVERY=Not Started" {
		t.Errorf("clone_progress: %s", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "d", "t.ibd")); err != nil {
		t.Errorf("the clone lacks d/t.ibd: %v", err)
	}
	if bins, _ := filepath.Glob(filepath.Join(dir, "binlog.*")); len(bins) != 0 {
		t.Errorf("the clone holds binlogs: %v", bins)
	}

	c.SetPlugin("")
	if _, err := db.Exec("CLONE LOCAL DATA DIRECTORY = '" + filepath.Join(parent, "again") + "'"); errNo(err) != 1524 {
		t.Errorf("CLONE without the plugin: %v, want 1524", err)
	}
	if err := db.QueryRow("SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME='clone'").Scan(&status); !errors.Is(err, sql.ErrNoRows) {
		t.Errorf("plugin row without the plugin: %v", err)
	}
	c.SetPlugin("ACTIVE")
	c.SetBackupAdmin(false)
	if _, err := db.Exec("CLONE LOCAL DATA DIRECTORY = '" + filepath.Join(parent, "again") + "'"); errNo(err) != 1227 || !strings.Contains(err.Error(), "BACKUP_ADMIN") {
		t.Errorf("CLONE without BACKUP_ADMIN: %v", err)
	}
}
