package apply

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

// TLS on the replication connection the target opens to the source. The
// target is the TLS client (its replica thread, CHANGE MASTER ...
// MASTER_SSL=1); the source answers the MySQL protocol's SSL request
// (CLIENT_SSL in the handshake, then tls.Server on the connection), and,
// when TLS is on, refuses a replica that logs in without it: the binlog
// it would receive is the instance's data.
//
// Verification is the target's to do, with a CA file it can read on its
// own host (MASTER_SSL_CA is a path, there is no way to hand it a
// certificate over SQL). So an ephemeral certificate is verifiable only
// when the target runs on this host: with a loopback serve address
// Tidemark writes it to a world-readable file in the temporary directory
// and names it in MASTER_SSL_CA, with MASTER_SSL_VERIFY_SERVER_CERT=1
// (chain and host name). A remote target gets encryption without
// verification, unless the operator gives a certificate and key of their
// own (CertFile, KeyFile) and the path on the target's host of the CA
// that signed them (CAFile).

// The TLS modes of the replication source (SourceTLS.Mode).
const (
	TLSAuto = ""    // on when the target's DSN uses TLS, else off
	TLSOn   = "on"  // always; a plaintext replica is refused
	TLSOff  = "off" // plaintext, as before TLS existed here
)

// SourceTLS is how the target's replication connection to the source is
// protected (replication method only; the sql method opens none).
type SourceTLS struct {
	// Mode is TLSAuto, TLSOn or TLSOff ("auto" is TLSAuto too). Auto is
	// on when the target DSN asks for TLS (an ssl-mode other than
	// disabled, or the driver's tls=), or when a certificate is given.
	Mode string
	// CertFile and KeyFile are the source's certificate (PEM, leaf first,
	// then any intermediates) and private key. Default: an ephemeral
	// self-signed ECDSA P-256 pair made for this apply, naming the serve
	// address's host.
	CertFile, KeyFile string
	// CAFile is a path on the TARGET's host: the CA bundle that signed
	// CertFile, which the target verifies the source by (chain and host
	// name: the certificate must name the serve address's host). Default:
	// the ephemeral certificate itself, written here, when the serve
	// address is loopback (the target is on this host); otherwise no
	// verification (encrypted only, with a warning).
	CAFile string
}

// TLSUsed reports the TLS of the replication connection.
type TLSUsed struct {
	// Sessions is how many replica logins the source served over TLS (a
	// receiver that reconnects logs in again).
	Sessions int64
	Version  string // of the last session, e.g. "TLS 1.3"
	// Verified: the target checked the source's certificate (its
	// replication status showed Master_SSL_Verify_Server_Cert=Yes with a
	// CA file); CAFile is that file, as the target was told.
	Verified bool
	CAFile   string
	// Ephemeral: the certificate was made for this apply.
	Ephemeral bool
}

// String describes the TLS in a few words; "" for nil (none).
func (u *TLSUsed) String() string {
	if u == nil {
		return ""
	}
	v := u.Version
	if v == "" {
		v = "TLS"
	}
	if u.Verified {
		return v + ", source certificate verified by the target"
	}
	return v + ", source certificate not verified by the target"
}

// sourceTLS is the resolved TLS of one apply's source: the server side
// and what the target is told.
type sourceTLS struct {
	cfg       *tls.Config
	caFile    string // MASTER_SSL_CA, a path on the target's host; "" none
	verify    bool   // MASTER_SSL_VERIFY_SERVER_CERT=1
	ephemeral bool
	tmpDir    string // the ephemeral CA file's directory, removed by close
}

func (t *sourceTLS) close() {
	if t != nil && t.tmpDir != "" {
		_ = os.RemoveAll(t.tmpDir)
	}
}

// validateTLS refuses contradictory TLS settings before anything runs.
func validateTLS(p Params) error {
	st := p.TLS
	switch strings.ToLower(st.Mode) {
	case TLSAuto, "auto", TLSOn, TLSOff:
	default:
		return fmt.Errorf("roll forward: unknown serve TLS mode %q (use auto, on or off)", st.Mode)
	}
	off := strings.EqualFold(st.Mode, TLSOff)
	given := st.CertFile != "" || st.KeyFile != "" || st.CAFile != ""
	switch {
	case (st.CertFile == "") != (st.KeyFile == ""):
		return errors.New("roll forward: the serve TLS certificate and key go together: give both, or neither for an ephemeral pair")
	case st.CAFile != "" && st.CertFile == "":
		return errors.New("roll forward: a serve TLS CA file names the CA that signed the serve certificate: give the certificate and key too (an ephemeral certificate is verified without one when the target is on this host)")
	case off && given:
		return errors.New("roll forward: serve TLS is off but a certificate, key or CA is given: drop them, or turn TLS on")
	case strings.EqualFold(st.Mode, TLSOn) && p.Method == MethodSQL:
		return errors.New("roll forward: serve TLS is on, but the sql method opens no replication connection to serve: drop one of them")
	}
	if st.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(st.CertFile, st.KeyFile); err != nil {
			return fmt.Errorf("roll forward: serve TLS certificate %s / key %s: %w", st.CertFile, st.KeyFile, err)
		}
	}
	return nil
}

// wantTLS says whether the source speaks TLS for these params and target DSN.
func wantTLS(p Params, dsn *mysqlx.DSN) bool {
	switch strings.ToLower(p.TLS.Mode) {
	case TLSOn:
		return true
	case TLSOff:
		return false
	}
	if p.TLS.CertFile != "" {
		return true
	}
	mode, _, _, _ := dsn.SSL()
	return mode != "" && mode != mysqlx.SSLDisabled
}

// isLoopback reports whether host is this host's loopback.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// newSourceTLS loads the operator's pair or makes an ephemeral one for a
// source the target reaches at host.
func newSourceTLS(st SourceTLS, host string) (*sourceTLS, error) {
	out := &sourceTLS{}
	var cert tls.Certificate
	if st.CertFile != "" {
		var err error
		if cert, err = tls.LoadX509KeyPair(st.CertFile, st.KeyFile); err != nil {
			return nil, fmt.Errorf("serve TLS certificate %s / key %s: %w", st.CertFile, st.KeyFile, err)
		}
		out.caFile, out.verify = st.CAFile, st.CAFile != ""
	} else {
		der, key, err := ephemeralCert(host)
		if err != nil {
			return nil, fmt.Errorf("making an ephemeral TLS certificate for the replication source: %w", err)
		}
		cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
		out.ephemeral = true
		if isLoopback(host) {
			// The target is on this host: it can read a file we write, if
			// it is readable by the server's own user (a certificate is
			// public).
			dir, err := os.MkdirTemp("", "tidemark-pitr-tls-")
			if err != nil {
				return nil, fmt.Errorf("writing the replication source's CA file: %w", err)
			}
			out.tmpDir = dir
			f := filepath.Join(dir, "source-ca.pem")
			if err := errors.Join(os.Chmod(dir, 0o755), os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644), os.Chmod(f, 0o644)); err != nil {
				out.close()
				return nil, fmt.Errorf("writing the replication source's CA file %s: %w", f, err)
			}
			out.caFile, out.verify = f, true
		}
	}
	out.cfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return out, nil
}

// ephemeralCert makes a self-signed ECDSA P-256 certificate naming host,
// the one the target connects to (MASTER_HOST), so that the target's host
// name check passes. It is its own CA: the target trusts exactly it.
func ephemeralCert(host string) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host, Organization: []string{"Tidemark point-in-time restore source"}},
		// A restore may run for days; the key dies with the apply.
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	return der, key, err
}

// changeMasterTLS is the TLS part of the CHANGE MASTER statement. Every
// option is explicit: MariaDB 11.3 and later verify the source's
// certificate by default, which an unverifiable certificate must not
// meet.
func (t *sourceTLS) changeMasterTLS() string {
	if t == nil {
		return "MASTER_SSL=0"
	}
	if !t.verify {
		return "MASTER_SSL=1, MASTER_SSL_CA='', MASTER_SSL_VERIFY_SERVER_CERT=0"
	}
	return "MASTER_SSL=1, MASTER_SSL_CA=" + quote(t.caFile) + ", MASTER_SSL_VERIFY_SERVER_CERT=1"
}

// tlsVersionName names a tls.Version* constant.
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLS 1.2"
	case tls.VersionTLS13:
		return "TLS 1.3"
	}
	return fmt.Sprintf("TLS 0x%04x", v)
}
