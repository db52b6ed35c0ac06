package tlsx

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Kind is what holds a certificate.
type Kind string

const (
	// KindController is a controller node; its name is the node id.
	KindController Kind = "controller"
	// KindAgent is an agent; its name is the agent's --name.
	KindAgent Kind = "agent"
	// KindUser is a CLI credential; it carries a Role.
	KindUser Kind = "user"
)

// Role is what a CLI credential may do. Each role includes the ones
// before it.
type Role string

const (
	RoleViewer   Role = "viewer"
	RoleOperator Role = "operator"
	RoleAdmin    Role = "admin"
)

// rank orders the roles; 0 is not a role.
func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Allows reports whether r includes need.
func (r Role) Allows(need Role) bool { return r.rank() > 0 && r.rank() >= need.rank() }

// ParseRole parses a role name.
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(s))
	if r.rank() == 0 {
		return "", fmt.Errorf("role %q: use viewer, operator or admin", s)
	}
	return r, nil
}

// Identity is who a certificate names. It travels in the certificate as a
// URI SAN, tidemark://KIND/NAME[?role=ROLE], and as the subject's common
// name (for people reading the certificate).
type Identity struct {
	Kind Kind
	Name string
	// Role is set for KindUser only.
	Role Role
}

func (id Identity) String() string {
	if id.Kind == KindUser {
		return fmt.Sprintf("user %s (%s)", id.Name, id.Role)
	}
	return string(id.Kind) + " " + id.Name
}

// Validate checks the identity is one a certificate may carry.
func (id Identity) Validate() error {
	switch id.Kind {
	case KindController, KindAgent:
		if id.Role != "" {
			return fmt.Errorf("%s: only user credentials carry a role", id)
		}
	case KindUser:
		if id.Role.rank() == 0 {
			return fmt.Errorf("user %s: role %q: use viewer, operator or admin", id.Name, id.Role)
		}
	default:
		return fmt.Errorf("identity kind %q: want controller, agent or user", id.Kind)
	}
	if id.Name == "" || strings.ContainsAny(id.Name, "/?#") {
		return fmt.Errorf("%s name %q: must be non-empty, without '/', '?' or '#'", id.Kind, id.Name)
	}
	return nil
}

// URI is the identity's URI SAN.
func (id Identity) URI() *url.URL {
	u := &url.URL{Scheme: uriScheme, Host: string(id.Kind), Path: "/" + id.Name}
	if id.Role != "" {
		u.RawQuery = url.Values{"role": {string(id.Role)}}.Encode()
	}
	return u
}

const uriScheme = "tidemark"

// IdentityOf reads the identity from a certificate; an error when it
// carries none or more than one.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != uriScheme {
			continue
		}
		id := Identity{Kind: Kind(u.Host), Name: strings.TrimPrefix(u.Path, "/"), Role: Role(u.Query().Get("role"))}
		if err := id.Validate(); err != nil {
			return Identity{}, fmt.Errorf("certificate %q: %w", cert.Subject.CommonName, err)
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, fmt.Errorf("certificate %q names no Tidemark identity (no tidemark:// URI): it was not issued for Tidemark", cert.Subject.CommonName)
	case 1:
		return found[0], nil
	}
	return Identity{}, fmt.Errorf("certificate %q names %d Tidemark identities; want one", cert.Subject.CommonName, len(found))
}

// ErrNoPeerCert: the caller presented no certificate (or the connection is
// not TLS).
var ErrNoPeerCert = errors.New("no client certificate")

// PeerIdentity is the verified identity of a gRPC call's peer. The chain
// was verified against the CA by the handshake.
func PeerIdentity(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return Identity{}, ErrNoPeerCert
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Identity{}, ErrNoPeerCert
	}
	return IdentityOf(info.State.VerifiedChains[0][0])
}
