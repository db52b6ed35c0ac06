package testenv

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/tlsx"
)

// TestCA is a CA for tests: it issues credentials for controllers, agents
// and users, as sources (in-process) or as files (child processes).
type TestCA struct {
	CA *tlsx.CA

	mu    sync.Mutex
	cache map[tlsx.Identity]*tlsx.Source
}

// NewTestCA makes a CA (certificates valid for a day).
func NewTestCA(t testing.TB) *TestCA {
	t.Helper()
	ca, err := tlsx.NewCA("tidemark test CA", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return TestCAOf(ca)
}

// TestCAOf issues from an existing CA (one a controller made).
func TestCAOf(ca *tlsx.CA) *TestCA {
	return &TestCA{CA: ca, cache: map[tlsx.Identity]*tlsx.Source{}}
}

// Controller, Agent, Admin and User name identities.
func Controller(name string) tlsx.Identity {
	return tlsx.Identity{Kind: tlsx.KindController, Name: name}
}
func Agent(name string) tlsx.Identity { return tlsx.Identity{Kind: tlsx.KindAgent, Name: name} }
func Admin() tlsx.Identity            { return User("admin", tlsx.RoleAdmin) }
func User(name string, r tlsx.Role) tlsx.Identity {
	return tlsx.Identity{Kind: tlsx.KindUser, Name: name, Role: r}
}

// Source is an in-memory credential for id (one per identity).
func (c *TestCA) Source(t testing.TB, id tlsx.Identity) *tlsx.Source {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.cache[id]; ok {
		return s
	}
	cert, key, err := c.CA.IssueKeyPair(id, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := tlsx.FromPEM(c.CA.CertPEM(), cert, key)
	if err != nil {
		t.Fatal(err)
	}
	c.cache[id] = s
	return s
}

// Files writes a credential for id under a new temporary directory, as
// ca.pem, cert.pem and key.pem (the layout of the CLI's --credentials
// DIR), and returns their paths.
func (c *TestCA) Files(t testing.TB, id tlsx.Identity) tlsx.Files {
	t.Helper()
	cert, key, err := c.CA.IssueKeyPair(id, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := tlsx.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem")}
	for p, b := range map[string][]byte{f.CA: c.CA.CertPEM(), f.Cert: cert, f.Key: key} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// Args are the --tls-ca/--tls-cert/--tls-key flags for f.
func Args(f tlsx.Files) []string {
	return []string{"--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key}
}
