package tlsx_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tidemark-backup/tidemark/internal/tlsx"
)

func newCA(t *testing.T, name string) *tlsx.CA {
	t.Helper()
	ca, err := tlsx.NewCA(name, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func source(t *testing.T, ca *tlsx.CA, id tlsx.Identity) *tlsx.Source {
	t.Helper()
	cert, key, err := ca.IssueKeyPair(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := tlsx.FromPEM(ca.CertPEM(), cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// handshake runs one TLS handshake between a server and a client config
// and returns both sides' errors.
func handshake(t *testing.T, srv, cli *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(a, srv)
		done <- s.Handshake()
		_ = s.Close()
	}()
	c := tls.Client(b, cli)
	clientErr = c.Handshake()
	if clientErr == nil {
		// TLS 1.3: the server's verdict on the client certificate comes
		// with the first read.
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, clientErr = c.Read(make([]byte, 1))
		if errors.Is(clientErr, io.EOF) {
			clientErr = nil
		}
	}
	_ = c.Close()
	return <-done, clientErr
}

func TestIdentityRoundTrip(t *testing.T) {
	ca := newCA(t, "test")
	for _, id := range []tlsx.Identity{
		{Kind: tlsx.KindController, Name: "n1"},
		{Kind: tlsx.KindAgent, Name: "db-1.example"},
		{Kind: tlsx.KindUser, Name: "alice", Role: tlsx.RoleOperator},
	} {
		s := source(t, ca, id)
		if got := s.Identity(); got != id {
			t.Errorf("issued %v, read back %v", id, got)
		}
	}
	for _, bad := range []tlsx.Identity{
		{Kind: tlsx.KindUser, Name: "bob"},
		{Kind: tlsx.KindAgent, Name: "x", Role: tlsx.RoleAdmin},
		{Kind: "robot", Name: "r"},
		{Kind: tlsx.KindAgent, Name: ""},
	} {
		if _, _, err := ca.IssueKeyPair(bad, time.Hour); err == nil {
			t.Errorf("issued a certificate for invalid identity %#v", bad)
		}
	}
	if !tlsx.RoleAdmin.Allows(tlsx.RoleOperator) || tlsx.RoleViewer.Allows(tlsx.RoleOperator) || tlsx.Role("").Allows(tlsx.RoleViewer) {
		t.Error("role order wrong")
	}
}

// TestHandshakes: both ends must hold certificates of the same CA, and a
// client only accepts a controller.
func TestHandshakes(t *testing.T) {
	ca, other := newCA(t, "cluster"), newCA(t, "other")
	ctl := source(t, ca, tlsx.Identity{Kind: tlsx.KindController, Name: "n1"})
	agent := source(t, ca, tlsx.Identity{Kind: tlsx.KindAgent, Name: "db1"})
	stranger := source(t, other, tlsx.Identity{Kind: tlsx.KindAgent, Name: "db1"})
	strangerCtl := source(t, other, tlsx.Identity{Kind: tlsx.KindController, Name: "n1"})

	if se, ce := handshake(t, ctl.ServerConfig(), agent.ClientConfig()); se != nil || ce != nil {
		t.Fatalf("agent to controller: server %v, client %v", se, ce)
	}
	// A client certificate of another CA is refused by the server.
	if se, _ := handshake(t, ctl.ServerConfig(), stranger.ClientConfig()); se == nil || !strings.Contains(se.Error(), "certificate") {
		t.Fatalf("a certificate of another CA was accepted: %v", se)
	}
	// A server of another CA is refused by the client.
	if _, ce := handshake(t, strangerCtl.ServerConfig(), agent.ClientConfig()); ce == nil || !strings.Contains(ce.Error(), "unknown authority") {
		t.Fatalf("a controller of another CA was accepted: %v", ce)
	}
	// An agent's certificate cannot pose as a controller.
	if _, ce := handshake(t, agent.ServerConfig(), ctl.ClientConfig()); ce == nil {
		t.Fatal("an agent's certificate served as a controller")
	}
}

func TestRaftStreamLayer(t *testing.T) {
	ca := newCA(t, "cluster")
	n1 := source(t, ca, tlsx.Identity{Kind: tlsx.KindController, Name: "n1"})
	n2 := source(t, ca, tlsx.Identity{Kind: tlsx.KindController, Name: "n2"})
	agent := source(t, ca, tlsx.Identity{Kind: tlsx.KindAgent, Name: "db1"})
	l, err := tlsx.NewStreamLayer("127.0.0.1:0", nil, n1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	l2, err := tlsx.NewStreamLayer("127.0.0.1:0", nil, n2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l2.Close() }()
	c, err := l2.Dial(raft.ServerAddress(l.Addr().String()), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q %v", buf, err)
	}
	_ = c.Close()
	// The certificate answering at a member's address must name it.
	l2.SetMemberNames(func(a raft.ServerAddress) (raft.ServerID, bool) {
		return "n3", a == raft.ServerAddress(l.Addr().String())
	})
	if _, err := l2.Dial(raft.ServerAddress(l.Addr().String()), 2*time.Second); err == nil ||
		!strings.Contains(err.Error(), `names controller "n1", but the member at that address is "n3"`) {
		t.Fatalf("n1's certificate at n3's address: %v", err)
	}
	l2.SetMemberNames(func(a raft.ServerAddress) (raft.ServerID, bool) { return "n1", true })
	c, err = l2.Dial(raft.ServerAddress(l.Addr().String()), 2*time.Second)
	if err != nil {
		t.Fatalf("n1 at its own address: %v", err)
	}
	_ = c.Close()
	// An agent's certificate is refused by the Raft port.
	la, err := tlsx.NewStreamLayer("127.0.0.1:0", nil, agent)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = la.Close() }()
	c, err = la.Dial(raft.ServerAddress(l.Addr().String()), 2*time.Second)
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = c.Write([]byte("ping"))
		_, err = io.ReadFull(c, buf)
		_ = c.Close()
	}
	if err == nil {
		t.Fatal("an agent's certificate spoke to the Raft port")
	}
}

func TestSeal(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	sealed, err := tlsx.Seal([]byte("secret key pem"), key)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("secret")) {
		t.Fatal("sealed text shows the key")
	}
	got, err := tlsx.Unseal(sealed, key)
	if err != nil || string(got) != "secret key pem" {
		t.Fatalf("unseal: %q %v", got, err)
	}
	if _, err := tlsx.Unseal(sealed, bytes.Repeat([]byte{8}, 32)); !errors.Is(err, tlsx.ErrWrongKeyFile) {
		t.Fatalf("wrong key file: %v", err)
	}
	if _, err := tlsx.Seal([]byte("x"), []byte("short")); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("short key file: %v", err)
	}
}

// TestFromFiles: unreadable or mismatched files are clear errors; a file
// replaced on disk is picked up.
func TestFromFiles(t *testing.T) {
	dir := t.TempDir()
	ca, other := newCA(t, "cluster"), newCA(t, "other")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key, _ := ca.IssueKeyPair(tlsx.Identity{Kind: tlsx.KindAgent, Name: "db1"}, time.Hour)
	ocert, okey, _ := other.IssueKeyPair(tlsx.Identity{Kind: tlsx.KindAgent, Name: "db1"}, time.Hour)
	f := tlsx.Files{CA: write("ca.pem", ca.CertPEM()), Cert: write("cert.pem", cert), Key: write("key.pem", key)}
	s, err := tlsx.FromFiles(f)
	if err != nil {
		t.Fatal(err)
	}
	if s.Identity().Name != "db1" {
		t.Fatal(s.Identity())
	}
	for name, tc := range map[string]struct {
		f    tlsx.Files
		want string
	}{
		"missing key":   {tlsx.Files{CA: f.CA, Cert: f.Cert, Key: filepath.Join(dir, "nope.pem")}, "reading --tls-key"},
		"missing flag":  {tlsx.Files{CA: f.CA, Cert: f.Cert}, "all three"},
		"other CA":      {tlsx.Files{CA: f.CA, Cert: write("o.pem", ocert), Key: write("ok.pem", okey)}, `not issued by CA "cluster"`},
		"key mismatch":  {tlsx.Files{CA: f.CA, Cert: f.Cert, Key: write("ok2.pem", okey)}, "private key does not match"},
		"ca not a cert": {tlsx.Files{CA: f.Key, Cert: f.Cert, Key: f.Key}, "--tls-ca"},
	} {
		if _, err := tlsx.FromFiles(tc.f); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
	}
}

func TestExpiredAndFuture(t *testing.T) {
	ca := newCA(t, "cluster")
	cert, key, _ := ca.IssueKeyPair(tlsx.Identity{Kind: tlsx.KindAgent, Name: "db1"}, time.Nanosecond)
	time.Sleep(time.Millisecond)
	if _, err := tlsx.FromPEM(ca.CertPEM(), cert, key); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired certificate: %v", err)
	}
}

// TestIssuingRenews: an issuing source replaces its certificate two thirds
// into its life, and the new one keeps the identity.
func TestIssuingRenews(t *testing.T) {
	ca := newCA(t, "cluster")
	// Issued certificates are back-dated 5 minutes: a 1-minute validity is
	// past two thirds at once.
	s, err := tlsx.Issuing(ca, tlsx.Identity{Kind: tlsx.KindController, Name: "n1"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := s.Current()
	second, err := s.Current()
	if err != nil {
		t.Fatal(err)
	}
	if first.Leaf.SerialNumber.Cmp(second.Leaf.SerialNumber) == 0 {
		t.Fatal("not renewed")
	}
	if s.Identity().Name != "n1" {
		t.Fatal(s.Identity())
	}
	long, _ := tlsx.Issuing(ca, tlsx.Identity{Kind: tlsx.KindController, Name: "n1"}, time.Hour)
	a, _ := long.Current()
	b, _ := long.Current()
	if a != b {
		t.Fatal("renewed a fresh certificate")
	}
}

func TestRequireLoopback(t *testing.T) {
	if err := tlsx.RequireLoopback("--grpc-addr", "127.0.0.1:7400", "[::1]:1", "localhost:9"); err != nil {
		t.Fatal(err)
	}
	err := tlsx.RequireLoopback("--grpc-addr", "127.0.0.1:7400", "10.0.0.1:7400", "0.0.0.0:1")
	if err == nil || !strings.Contains(err.Error(), "--grpc-addr 10.0.0.1:7400, 0.0.0.0:1 is not loopback") {
		t.Fatal(err)
	}
}

// TestClockBehind: a certificate not valid yet (this host's clock behind
// the issuer's by more than the back-dating) says so at start.
func TestClockBehind(t *testing.T) {
	ca := newCA(t, "cluster")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := tlsx.Identity{Kind: tlsx.KindAgent, Name: "db1"}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "db1"},
		NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, URIs: []*url.URL{id.URI()}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := tlsx.KeyPEM(key)
	_, err = tlsx.FromPEM(ca.CertPEM(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM)
	if err == nil || !strings.Contains(err.Error(), "is the clock behind?") {
		t.Fatalf("certificate from the future: %v", err)
	}
}
