package mysqlx

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestSSLParamsParse: the ssl-* parameters leave the DSN before the driver
// sees it (paths with slashes included), come back in String, and every
// bad combination is refused naming what to change.
func TestSSLParamsParse(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := ParseDSN("u:p@tcp(db1:3306)/?ssl-mode=required&parseTime=true")
	if err != nil {
		t.Fatal(err)
	}
	if c := d.Config(); c.TLS == nil || !c.TLS.InsecureSkipVerify || !c.ParseTime {
		t.Fatalf("required: TLS %+v parseTime %v", c.TLS, c.ParseTime)
	}
	if s := d.String(); strings.Contains(s, ":p@") || !strings.Contains(s, "ssl-mode=required") || !strings.Contains(s, "parseTime=true") {
		t.Fatalf("String() = %q", s)
	}
	if m, _, _, _ := d.SSL(); m != SSLRequired {
		t.Fatalf("SSL mode %q", m)
	}
	// The other parameters reach the driver as written (it reads
	// charset's list unescaped).
	d, err = ParseDSN("u@tcp(db1:3306)/shop?charset=utf8mb4,utf8&ssl-mode=required")
	if err != nil {
		t.Fatal(err)
	}
	if c := d.Config(); c.DBName != "shop" || c.TLS == nil || !strings.Contains(c.FormatDSN(), "charset=utf8mb4,utf8") {
		t.Fatalf("charset list with ssl-mode: %s", c.FormatDSN())
	}
	d, err = ParseDSN("u@tcp(db1:3306)/?ssl-mode=DISABLED")
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := d.TLS(); c != nil {
		t.Fatal("disabled has a TLS config")
	}
	d, err = ParseDSN("u@tcp(db1:3306)/")
	if err != nil {
		t.Fatal(err)
	}
	if m, _, _, _ := d.SSL(); m != "" {
		t.Fatalf("no TLS setting gives mode %q, want the tool's default", m)
	}
	for _, tc := range []struct{ dsn, want string }{
		{"u@tcp(db1:3306)/?ssl-mode=sometimes", `unknown ssl-mode "sometimes"`},
		{"u@tcp(db1:3306)/?ssl-cert=/x.pem", "ssl-cert and ssl-key go together"},
		{"u@tcp(db1:3306)/?ssl-mode=disabled&ssl-ca=" + ca, "ssl-mode=disabled with ssl-ca"},
		{"u@tcp(db1:3306)/?tls=true&ssl-mode=required", "both tls=true and ssl-*"},
		{"u@tcp(db1:3306)/?ssl-ca=" + ca, "holds no PEM certificate"},
		{"u@tcp(db1:3306)/?ssl-ca=" + filepath.Join(dir, "missing.pem"), "no such file"},
		{"u@unix(/run/mysqld.sock)/?ssl-mode=verify-identity&ssl-ca=/etc/ssl/certs/ca-certificates.crt", "no host name to check"},
	} {
		_, err := ParseDSN(tc.dsn)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.dsn, err, tc.want)
		}
	}
}

// TestTLSModes connects to a real mariadbd over TLS in every mode: the
// users the server admits only over TLS (and with a client certificate)
// get in exactly when the DSN's settings are right, a wrong CA or host
// name is refused with an error that says what to fix, and the session is
// encrypted.
func TestTLSModes(t *testing.T) {
	m, f := testenv.StartMariaDBTLS(t)
	tcp := fmt.Sprintf("tcp(127.0.0.1:%d)/", m.Port)
	byName := fmt.Sprintf("tcp(localhost:%d)/", m.Port)
	cipher := func(dsn string) (string, error) {
		d, err := ParseDSN(dsn)
		if err != nil {
			return "", err
		}
		db, err := d.Open(nil)
		if err != nil {
			return "", err
		}
		defer func() { _ = db.Close() }()
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(10*time.Second))
		defer cancel()
		var name, c string
		err = db.QueryRowContext(ctx, "SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&name, &c)
		if err != nil {
			if terr := TLSVerifyError(err, d); terr != nil {
				return "", terr
			}
		}
		return c, err
	}
	for _, tc := range []struct {
		name, dsn string
		plain     bool   // connects, unencrypted
		want      string // error substring; "" connects encrypted
	}{
		{"no TLS: REQUIRE SSL refuses", "tls_user@" + tcp, false, "Access denied"},
		{"no TLS: tidemark connects in plain text", "tidemark@" + tcp, true, ""},
		{"required", "tls_user@" + tcp + "?ssl-mode=required", false, ""},
		{"preferred", "tls_user@" + tcp + "?ssl-mode=preferred", false, ""},
		{"verify-ca", "tls_user@" + tcp + "?ssl-mode=verify-ca&ssl-ca=" + f.CA, false, ""},
		{"verify-identity by IP", "tls_user@" + tcp + "?ssl-ca=" + f.CA, false, ""},
		{"verify-identity by name", "tls_user@" + byName + "?ssl-mode=verify-identity&ssl-ca=" + f.CA, false, ""},
		{"required with a CA checks it", "tls_user@" + tcp + "?ssl-mode=required&ssl-ca=" + f.OtherCA, false, "give the CA that signed it as ssl-ca"},
		{"verify-ca, wrong CA", "tls_user@" + tcp + "?ssl-mode=verify-ca&ssl-ca=" + f.OtherCA, false, "give the CA that signed it as ssl-ca"},
		{"verify-identity, wrong CA", "tls_user@" + tcp + "?ssl-ca=" + f.OtherCA, false, "give the CA that signed it as ssl-ca"},
		{"tls=true: system roots do not know the test CA", "tls_user@" + tcp + "?tls=true", false, "give the CA that signed it as ssl-ca"},
		{"x509 without a client certificate", "x509_user@" + tcp + "?ssl-ca=" + f.CA, false, "Access denied"},
		{"x509 with a client certificate", "x509_user@" + tcp + "?ssl-ca=" + f.CA + "&ssl-cert=" + f.ClientCert + "&ssl-key=" + f.ClientKey, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := cipher(tc.dsn)
			switch {
			case tc.want != "":
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want one containing %q", err, tc.want)
				}
			case err != nil:
				t.Fatal(err)
			case tc.plain && c != "":
				t.Fatalf("plain connection has cipher %q", c)
			case !tc.plain && c == "":
				t.Fatal("connected without encryption")
			}
		})
	}
}

// TestWithAddrKeepsSSL: the DSN of another group member keeps the TLS
// parameters (a CA path's slashes would break the driver's parser).
func TestWithAddrKeepsSSL(t *testing.T) {
	in := "repl@tcp(db1:3306)/?ssl-ca=/etc/mysql/ca.pem&ssl-mode=verify-ca&parseTime=true"
	out, err := WithAddr(in, "db2:3307")
	if err != nil {
		t.Fatal(err)
	}
	if TCPAddr(out) != "db2:3307" || TCPAddr(in) != "db1:3306" {
		t.Fatalf("addresses: %q -> %q", TCPAddr(in), TCPAddr(out))
	}
	if !strings.Contains(out, "ssl-ca=%2Fetc%2Fmysql%2Fca.pem") || !strings.Contains(out, "ssl-mode=verify-ca") || !strings.Contains(out, "parseTime=true") {
		t.Fatalf("WithAddr = %q", out)
	}
	if TCPAddr("u@unix(/run/mysqld.sock)/?ssl-mode=required") != "" {
		t.Fatal("a socket DSN has a TCP address")
	}
}
