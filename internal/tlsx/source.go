package tlsx

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Source holds a node's current certificate and the CA pool it trusts, and
// replaces the certificate before it expires: tls.Configs built on it read
// the current one at every handshake, so a renewal needs no restart and
// drops no connection (established connections keep the certificate they
// were made with). Safe for concurrent use.
type Source struct {
	roots *x509.CertPool
	ca    *x509.Certificate
	load  func() (*tls.Certificate, error)
	// refresh says when to call load again, given the current leaf.
	refresh func(leaf *x509.Certificate) time.Time

	mu   sync.Mutex
	cur  *tls.Certificate
	id   Identity
	next time.Time
	last error // the latest failed refresh, kept while the old cert serves
}

// renewAt is when an issued certificate is renewed: two thirds into its
// life, so a renewal that fails has a third of the life to be retried.
func renewAt(leaf *x509.Certificate) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(life * 2 / 3)
}

// Issuing is a source whose certificate ca issues here, for id, each
// valid for validity and renewed two thirds into its life: a controller
// that holds the cluster CA's key.
func Issuing(ca *CA, id Identity, validity time.Duration) (*Source, error) {
	s := &Source{roots: ca.Pool(), ca: ca.Cert, refresh: renewAt}
	s.load = func() (*tls.Certificate, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		certPEM, err := ca.Issue(IssueParams{Identity: id, PublicKey: key.Public(), Validity: validity})
		if err != nil {
			return nil, err
		}
		keyPEM, err := KeyPEM(key)
		if err != nil {
			return nil, err
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		return &c, err
	}
	return s, s.init()
}

// Files names PEM files: the CA certificate, and the holder's certificate
// and private key.
type Files struct {
	CA, Cert, Key string
}

// FromFiles is a source over an operator's files. The files are read now
// (any problem is an error naming the file), and again when they change on
// disk (checked at most once a minute), so the operator's renewal tooling
// can replace them in place.
func FromFiles(f Files) (*Source, error) {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return nil, errors.New("TLS needs all three of --tls-ca, --tls-cert and --tls-key")
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("reading --tls-ca: %w", err)
	}
	ca, err := ParseCA(caPEM, nil)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca %s: %w", f.CA, err)
	}
	var stamp []byte
	s := &Source{roots: ca.Pool(), ca: ca.Cert}
	s.load = func() (*tls.Certificate, error) {
		certPEM, err := os.ReadFile(f.Cert)
		if err != nil {
			return nil, fmt.Errorf("reading --tls-cert: %w", err)
		}
		keyPEM, err := os.ReadFile(f.Key)
		if err != nil {
			return nil, fmt.Errorf("reading --tls-key: %w", err)
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert %s and --tls-key %s: %w", f.Cert, f.Key, err)
		}
		stamp = append(certPEM, keyPEM...)
		return &c, nil
	}
	s.refresh = func(*x509.Certificate) time.Time { return time.Now().Add(time.Minute) }
	if err := s.init(); err != nil {
		return nil, err
	}
	// A refresh that reads the same bytes changes nothing; compare before
	// swapping so a mid-write read (new cert, old key) is not taken.
	load := s.load
	s.load = func() (*tls.Certificate, error) {
		old := stamp
		c, err := load()
		if err == nil && bytes.Equal(old, stamp) {
			return s.cur, nil
		}
		return c, err
	}
	return s, nil
}

// FromPEM is a fixed source over PEM bytes (no refresh): tests and
// credentials handed over in memory.
func FromPEM(caPEM, certPEM, keyPEM []byte) (*Source, error) {
	ca, err := ParseCA(caPEM, nil)
	if err != nil {
		return nil, err
	}
	s := &Source{roots: ca.Pool(), ca: ca.Cert, refresh: func(*x509.Certificate) time.Time { return time.Now().Add(24 * time.Hour) }}
	s.load = func() (*tls.Certificate, error) {
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		return &c, err
	}
	return s, s.init()
}

// init loads the first certificate; any problem is an error.
func (s *Source) init() error {
	c, id, err := s.check(s.load())
	if err != nil {
		return err
	}
	s.cur, s.id, s.next = c, id, s.refresh(c.Leaf)
	return nil
}

// check verifies a loaded certificate against the CA and the clock.
func (s *Source) check(c *tls.Certificate, err error) (*tls.Certificate, Identity, error) {
	if err != nil {
		return nil, Identity{}, err
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, Identity{}, err
		}
	}
	// Servers send the CA after their certificate, so that a host joining
	// with a token can check the CA against the token's pin.
	if len(c.Certificate) == 1 {
		c.Certificate = append(c.Certificate, s.ca.Raw)
	}
	leaf := c.Leaf
	now := time.Now()
	switch {
	case now.Before(leaf.NotBefore):
		return nil, Identity{}, fmt.Errorf("certificate %q is not valid before %s and this host's clock says %s: is the clock behind?",
			leaf.Subject.CommonName, leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case now.After(leaf.NotAfter):
		return nil, Identity{}, fmt.Errorf("certificate %q expired at %s (this host's clock says %s): renew it, or check the clock",
			leaf.Subject.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, Identity{}, fmt.Errorf("certificate %q was not issued by CA %q: %w", leaf.Subject.CommonName, s.ca.Subject.CommonName, err)
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return nil, Identity{}, err
	}
	return c, id, nil
}

// Identity is who the certificate names.
func (s *Source) Identity() Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// Roots is the pool of the trusted CA.
func (s *Source) Roots() *x509.CertPool { return s.roots }

// CACert is the trusted CA's certificate.
func (s *Source) CACert() *x509.Certificate { return s.ca }

// Current returns the certificate to present now, renewing or reloading it
// first when it is due. A failed refresh keeps the current certificate
// while it is valid (and is retried a minute later).
func (s *Source) Current() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if now.Before(s.next) {
		return s.cur, nil
	}
	c, id, err := s.check(s.load())
	switch {
	case err == nil && id != s.id:
		err = fmt.Errorf("the refreshed certificate names %s, not %s", id, s.id)
	case err == nil:
		s.cur, s.next, s.last = c, s.refresh(c.Leaf), nil
		return c, nil
	}
	s.last, s.next = err, now.Add(time.Minute)
	if now.After(s.cur.Leaf.NotAfter) {
		return nil, fmt.Errorf("certificate expired and could not be renewed: %w", err)
	}
	return s.cur, nil
}

// LastError is why the latest refresh failed, nil when it did not.
func (s *Source) LastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// NotAfter is when the current certificate expires.
func (s *Source) NotAfter() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.Leaf.NotAfter
}

// ServerConfig is the TLS configuration of a controller's gRPC listener: it
// presents the current certificate and verifies a client certificate
// against the CA when one is given. Whether a call needs one, and whose, is
// the server's interceptors' decision (a node joining with a token has
// none yet).
func (s *Source) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.Current() },
		ClientCAs:      s.roots,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		NextProtos:     []string{"h2"},
	}
}

// ClientConfig is the TLS configuration for dialling a controller: it
// presents the current certificate and accepts only a controller
// certificate of the CA.
func (s *Source) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              s.roots,
		ServerName:           ControllerServerName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return s.Current() },
		VerifyConnection:     requirePeerKind(KindController),
	}
}

// requirePeerKind refuses a handshake whose verified peer is not a kind.
func requirePeerKind(k Kind) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("the peer presented no certificate; a %s's is required", k)
		}
		id, err := IdentityOf(cs.PeerCertificates[0])
		if err != nil {
			return err
		}
		if id.Kind != k {
			return fmt.Errorf("the peer is %s, not a %s", id, k)
		}
		return nil
	}
}

// Reload reads the certificate again now (after its files were replaced)
// and returns why it could not; the current one stays on failure.
func (s *Source) Reload() error {
	s.mu.Lock()
	s.next = time.Time{}
	s.mu.Unlock()
	if _, err := s.Current(); err != nil {
		return err
	}
	return s.LastError()
}

// RenewDue reports whether the current certificate is two thirds into its
// life: time for its holder to get a new one.
func (s *Source) RenewDue(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !now.Before(renewAt(s.cur.Leaf))
}
