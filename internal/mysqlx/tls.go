package mysqlx

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
)

// TLS to the database server. go-sql-driver's own `tls=` parameter knows
// only true (system roots, host name checked), skip-verify, preferred and
// names registered in code: no way to give a CA file. A server with a
// private CA is the usual case, so a DSN may carry the MySQL client's own
// option names, which Tidemark takes out of the DSN before the driver
// sees it (the driver would send an unknown parameter to the server as a
// session variable):
//
//	ssl-mode=disabled|preferred|required|verify-ca|verify-identity
//	ssl-ca=PATH     CA bundle (PEM) the server's certificate must chain to
//	ssl-cert=PATH   client certificate (PEM), for users created REQUIRE X509
//	ssl-key=PATH    its private key (PEM)
//
// The modes mean what they mean to mysql(1): required encrypts without
// checking the certificate, unless ssl-ca is given, which makes it
// verify-ca (as the MySQL client does); verify-ca checks the chain but not
// the name; verify-identity checks both. ssl-ca without ssl-mode means
// verify-identity: a CA given is a CA meant to be checked.

// SSLMode is a DSN's ssl-mode.
type SSLMode string

// The ssl-mode values.
const (
	SSLDisabled       SSLMode = "disabled"
	SSLPreferred      SSLMode = "preferred"
	SSLRequired       SSLMode = "required"
	SSLVerifyCA       SSLMode = "verify-ca"
	SSLVerifyIdentity SSLMode = "verify-identity"
)

// sslParams are the DSN's ssl-* parameters, in the DSN's own spelling, so
// that String can give them back.
type sslParams struct {
	mode          SSLMode
	ca, cert, key string
	raw           url.Values
}

var sslKeys = []string{"ssl-mode", "ssl-ca", "ssl-cert", "ssl-key"}

// splitSSLParams removes the ssl-* parameters from dsn. It returns the DSN
// without them and the parameters (nil when there were none).
func splitSSLParams(dsn string) (string, *sslParams, error) {
	// The query starts at the '?' before the first ssl-* key. Not the
	// driver's rule (the last '/' starts the database name): a path in
	// ssl-ca has slashes of its own.
	first := -1
	for _, k := range sslKeys {
		for _, sep := range []string{"?", "&"} {
			if j := strings.Index(dsn, sep+k+"="); j >= 0 && (first < 0 || j < first) {
				first = j
			}
		}
	}
	if first < 0 {
		return dsn, nil, nil
	}
	i := strings.LastIndexByte(dsn[:first+1], '?')
	if i < 0 {
		return dsn, nil, nil
	}
	// The other parameters stay as written: the driver reads some of them
	// unescaped (charset=a,b), so they must not be re-encoded.
	var (
		p    *sslParams
		kept []string
	)
	for _, kv := range strings.Split(dsn[i+1:], "&") {
		k, raw, _ := strings.Cut(kv, "=")
		if !slices.Contains(sslKeys, k) {
			kept = append(kept, kv)
			continue
		}
		v, err := url.QueryUnescape(raw)
		if err != nil {
			return dsn, nil, fmt.Errorf("the DSN's %s: %w", k, err)
		}
		if p == nil {
			p = &sslParams{raw: url.Values{}}
		}
		p.raw.Set(k, v)
		switch k {
		case "ssl-mode":
			p.mode = SSLMode(strings.ReplaceAll(strings.ToLower(v), "_", "-"))
		case "ssl-ca":
			p.ca = v
		case "ssl-cert":
			p.cert = v
		case "ssl-key":
			p.key = v
		}
	}
	if p == nil {
		return dsn, nil, nil
	}
	rest := dsn[:i]
	if len(kept) > 0 {
		rest += "?" + strings.Join(kept, "&")
	}
	return rest, p, nil
}

// config builds the TLS configuration of the parameters for a server at
// addr (host:port, or a socket path). It returns nil for disabled.
func (p *sslParams) config(addr string, driverTLS string) (cfg *tls.Config, fallback bool, err error) {
	if driverTLS != "" && driverTLS != "false" {
		return nil, false, fmt.Errorf("the DSN has both tls=%s and ssl-* parameters: use one (ssl-mode=verify-identity is tls=true with a CA file of your own)", driverTLS)
	}
	mode := p.effectiveMode()
	if (p.cert == "") != (p.key == "") {
		return nil, false, errors.New("ssl-cert and ssl-key go together: give both (the client certificate and its private key) or neither")
	}
	switch mode {
	case SSLDisabled:
		if p.ca != "" || p.cert != "" {
			return nil, false, errors.New("ssl-mode=disabled with ssl-ca/ssl-cert: drop those, or choose a mode that uses them (verify-identity)")
		}
		return nil, false, nil
	case SSLPreferred, SSLRequired, SSLVerifyCA, SSLVerifyIdentity:
	default:
		return nil, false, fmt.Errorf("unknown ssl-mode %q: one of disabled, preferred, required, verify-ca, verify-identity", p.mode)
	}
	cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	var roots *x509.CertPool
	if p.ca != "" {
		pem, err := os.ReadFile(p.ca)
		if err != nil {
			return nil, false, fmt.Errorf("ssl-ca: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, false, fmt.Errorf("ssl-ca %s holds no PEM certificate", p.ca)
		}
		cfg.RootCAs = roots
	}
	if p.cert != "" {
		kp, err := tls.LoadX509KeyPair(p.cert, p.key)
		if err != nil {
			return nil, false, fmt.Errorf("ssl-cert %s / ssl-key %s: %w", p.cert, p.key, err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	switch mode {
	case SSLPreferred, SSLRequired:
		// Encryption only, as mysql(1)'s modes of these names.
		cfg.InsecureSkipVerify = true
		return cfg, mode == SSLPreferred, nil
	case SSLVerifyCA:
		// The chain is checked, the name is not.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyChain(cs, roots)
		}
		return cfg, false, nil
	default: // verify-identity
		host := addr
		if h, _, err := net.SplitHostPort(addr); err == nil {
			host = h
		}
		if strings.HasPrefix(addr, "/") {
			return nil, false, fmt.Errorf("ssl-mode=verify-identity over the socket %s: there is no host name to check; use ssl-mode=verify-ca, or connect over tcp(HOST:PORT)", addr)
		}
		cfg.ServerName = host
		return cfg, false, nil
	}
}

// verifyChain checks the server's certificate chain against roots (the
// system's when nil), without its name: verify-ca.
func verifyChain(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the server sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
	if err != nil {
		return fmt.Errorf("the server's certificate does not chain to ssl-ca: %w", err)
	}
	return nil
}

// effectiveMode is the mode the parameters ask for: ssl-mode, with
// required and a CA meaning verify-ca (as the MySQL client does), and no
// mode meaning verify-identity with a CA and required without one.
func (p *sslParams) effectiveMode() SSLMode {
	switch {
	case p.mode == "" && p.ca != "":
		return SSLVerifyIdentity
	case p.mode == "":
		return SSLRequired
	case p.mode == SSLRequired && p.ca != "":
		return SSLVerifyCA
	}
	return p.mode
}

// String gives the parameters back as a DSN query.
func (p *sslParams) String() string { return p.raw.Encode() }

// TLSVerifyError explains err when it is the server's certificate failing
// the DSN's checks (nil otherwise): a configuration error that no retry
// mends, so callers stop on it instead of retrying as if the server were
// unreachable.
func TLSVerifyError(err error, d *DSN) error {
	if msg, ok := tlsVerifyMsg(err); ok {
		return fmt.Errorf("TLS to %s: %s", d.Addr(), msg)
	}
	return nil
}

// tlsVerifyMsg is what err, a certificate failing the DSN's checks, means
// and what to do (false: err is something else). Translate and
// TLSVerifyError both word it so.
func tlsVerifyMsg(err error) (string, bool) {
	var (
		verr *tls.CertificateVerificationError
		unk  x509.UnknownAuthorityError
		host x509.HostnameError
		inv  x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &host):
		return "the server's certificate is not for this host name (" + err.Error() + "): connect by a name the certificate holds, or use ssl-mode=verify-ca", true
	case errors.As(err, &verr), errors.As(err, &unk), errors.As(err, &inv), strings.Contains(err.Error(), "does not chain to ssl-ca"):
		return "the server's certificate failed verification (" + err.Error() + "): give the CA that signed it as ssl-ca=PATH in the DSN", true
	}
	return "", false
}
