package tlsx

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// JoinToken is a token of the cluster: an id (public), a secret (stored
// only hashed), and the pin of the cluster CA, so the holder can check it
// talks to this cluster before it sends the secret. A join token
// (tmjoin1.ID.SECRET.PIN) gets a new agent or controller node its
// certificate; an access token (tmuser1.ID.SECRET.PIN) is a CLI user's
// bearer credential.
type JoinToken struct {
	ID, Secret string
	// Pin is the hex SHA-256 of the CA certificate (DER).
	Pin    string
	prefix string
}

const (
	joinTokenPrefix   = "tmjoin1"
	accessTokenPrefix = "tmuser1"
)

// NewJoinToken makes a join token for the CA.
func NewJoinToken(ca *x509.Certificate) JoinToken {
	return JoinToken{ID: randHex(8), Secret: randHex(24), Pin: CAPin(ca), prefix: joinTokenPrefix}
}

// NewAccessToken makes a CLI user's bearer token for the CA.
func NewAccessToken(ca *x509.Certificate) JoinToken {
	t := NewJoinToken(ca)
	t.prefix = accessTokenPrefix
	return t
}

func (t JoinToken) String() string {
	p := t.prefix
	if p == "" {
		p = joinTokenPrefix
	}
	return strings.Join([]string{p, t.ID, t.Secret, t.Pin}, ".")
}

// SecretHash is what the catalog stores.
func (t JoinToken) SecretHash() []byte {
	h := sha256.Sum256([]byte(t.Secret))
	return h[:]
}

// ParseJoinToken parses a join token as printed (surrounding space
// ignored).
func ParseJoinToken(s string) (JoinToken, error) { return parseToken(s, joinTokenPrefix, "join") }

// ParseAccessToken parses a CLI user's bearer token.
func ParseAccessToken(s string) (JoinToken, error) { return parseToken(s, accessTokenPrefix, "access") }

func parseToken(s, prefix, what string) (JoinToken, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 4 || parts[0] != prefix || parts[1] == "" || parts[2] == "" || len(parts[3]) != 64 {
		return JoinToken{}, fmt.Errorf("not a Tidemark %s token (want %s.ID.SECRET.PIN, as printed by tidemark token create)", what, prefix)
	}
	return JoinToken{ID: parts[1], Secret: parts[2], Pin: parts[3], prefix: prefix}, nil
}

// CAPin is the hex SHA-256 of a CA certificate.
func CAPin(ca *x509.Certificate) string {
	h := sha256.Sum256(ca.Raw)
	return hex.EncodeToString(h[:])
}

// PinnedClientConfig dials a controller for a join: there is no client
// certificate yet, and the server is accepted only when the chain it sends
// holds the CA with the pin and its certificate is a controller's of that
// CA.
func PinnedClientConfig(pin string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The standard check needs the CA in a pool, and the joining host
		// has no CA yet: VerifyPeerCertificate does the whole check
		// against the pinned CA instead.
		InsecureSkipVerify: true, //nolint:gosec // verified below against the pinned CA
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			certs := make([]*x509.Certificate, 0, len(raw))
			for _, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				certs = append(certs, c)
			}
			if len(certs) == 0 {
				return errors.New("the controller presented no certificate")
			}
			var ca *x509.Certificate
			for _, c := range certs[1:] {
				if subtle.ConstantTimeCompare([]byte(CAPin(c)), []byte(pin)) == 1 {
					ca = c
				}
			}
			if ca == nil {
				return errors.New("the controller's CA does not match the join token's pin: this is not the cluster that made the token")
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: ControllerServerName,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("the controller's certificate: %w", err)
			}
			id, err := IdentityOf(certs[0])
			if err != nil {
				return err
			}
			if id.Kind != KindController {
				return fmt.Errorf("the peer is %s, not a controller", id)
			}
			return nil
		},
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail
	}
	return hex.EncodeToString(b)
}
