package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TLSFiles are the PEM files of a TLS test server: its CA, and a client
// certificate that CA signed. OtherCA is a CA that signed nothing here (a
// wrong ssl-ca).
type TLSFiles struct {
	CA, ClientCert, ClientKey, OtherCA string
}

// StartMariaDBTLS starts a mariadbd that offers TLS with a certificate for
// 127.0.0.1 and "localhost" from a CA of its own, and creates two users
// besides tidemark and root (all privileges, no password): tls_user, which
// the server admits only over TLS (REQUIRE SSL), and x509_user, which also
// needs a client certificate from the CA (REQUIRE X509). opts are as for
// StartMariaDB, the TLS options added.
func StartMariaDBTLS(t testing.TB, opts ...MariaDBOptions) (*MariaDB, TLSFiles) {
	t.Helper()
	dir := t.TempDir()
	caCert, caKey := newTestCA(t, "tidemark test MariaDB CA")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	f := TLSFiles{CA: write("ca.pem", certPEM(caCert.Raw))}
	other, _ := newTestCA(t, "tidemark test unrelated CA")
	f.OtherCA = write("other-ca.pem", certPEM(other.Raw))
	srvCert, srvKey := issueTestCert(t, caCert, caKey, "mariadbd", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	sc, sk := write("server.pem", srvCert), write("server-key.pem", srvKey)
	cliCert, cliKey := issueTestCert(t, caCert, caKey, "tidemark client", nil, nil)
	f.ClientCert, f.ClientKey = write("client.pem", cliCert), write("client-key.pem", cliKey)

	var o MariaDBOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	o.ExtraArgs = append([]string{"--ssl-ca=" + f.CA, "--ssl-cert=" + sc, "--ssl-key=" + sk}, o.ExtraArgs...)
	m := StartMariaDB(t, o)
	// Out of the binlog, as testenv's own users: a test's binlog holds its
	// own statements only. (SET STATEMENT, not SET SESSION: Exec's pooled
	// connection serves the test's later statements too.)
	m.Exec(t, "SET STATEMENT sql_log_bin=0 FOR CREATE USER tls_user@'%' REQUIRE SSL",
		"SET STATEMENT sql_log_bin=0 FOR GRANT ALL PRIVILEGES ON *.* TO tls_user@'%'",
		"SET STATEMENT sql_log_bin=0 FOR CREATE USER x509_user@'%' REQUIRE X509",
		"SET STATEMENT sql_log_bin=0 FOR GRANT ALL PRIVILEGES ON *.* TO x509_user@'%'")
	return m, f
}

func newTestCA(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func issueTestCert(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, dns []string, ips []net.IP) (certPEMBytes, keyPEMBytes []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    dns, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM(der), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
