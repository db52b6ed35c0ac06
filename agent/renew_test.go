package agent

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// renewer is the ControlService of a fake controller that holds the CA:
// it renews the calling agent's certificate for the name it carries.
type renewer struct {
	v1.UnimplementedControlServiceServer
	ca    *tlsx.CA
	calls chan string
}

func (r *renewer) RenewCertificate(ctx context.Context, req *v1.RenewCertificateRequest) (*v1.RenewCertificateResponse, error) {
	id, err := tlsx.PeerIdentity(ctx)
	if err != nil {
		return nil, err
	}
	r.calls <- id.Name
	cert, err := r.ca.SignCSR(req.GetCsr(), id, time.Hour)
	return &v1.RenewCertificateResponse{CertPem: cert}, err
}

func serial(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return ""
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return ""
	}
	return c.SerialNumber.String()
}

// TestCertificateRenewal: two thirds into its certificate's life the agent
// gets a new one over its current one, with a key made on its host, and
// its files are replaced.
func TestCertificateRenewal(t *testing.T) {
	t.Parallel()
	ca := testCA(t)
	r := &renewer{ca: ca.CA, calls: make(chan string, 10)}
	fc := startFake(t, func(f *fakeController) { v1.RegisterControlServiceServer(f.srv, r) })
	cfg := testConfig(t, "db-r", fc.addr)
	// Issued certificates are back-dated five minutes: one minute of
	// validity is past two thirds of its life at once.
	cert, key, err := ca.CA.IssueKeyPair(testenv.Agent("db-r"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(cfg.TLS.Cert)
	cfg.TLS.Cert, cfg.TLS.Key = filepath.Join(dir, "short.pem"), filepath.Join(dir, "short-key.pem")
	for p, b := range map[string][]byte{cfg.TLS.Cert: cert, cfg.TLS.Key: key} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg.MySQL = "tidemark@tcp(" + blackHole(t) + ")/"
	cfg.ProbeTimeout = 300 * time.Millisecond
	cfg.RenewCheckInterval = 50 * time.Millisecond
	oldSerial, oldKey := serial(t, cfg.TLS.Cert), key
	runAgent(t, cfg)
	select {
	case name := <-r.calls:
		if name != "db-r" {
			t.Fatalf("renewal asked for %q", name)
		}
	case <-time.After(testenv.Wait(10 * time.Second)):
		t.Fatal("no renewal")
	}
	testenv.WaitFor(t, "the certificate files to be replaced", 10*time.Second, func() error {
		if s := serial(t, cfg.TLS.Cert); s == oldSerial || s == "" {
			return fmt.Errorf("still serial %s", s)
		}
		return nil
	})
	newKey, _ := os.ReadFile(cfg.TLS.Key)
	if string(newKey) == string(oldKey) {
		t.Fatal("renewed with the old key")
	}
	src, err := tlsx.FromFiles(cfg.TLS)
	if err != nil {
		t.Fatalf("the renewed files: %v", err)
	}
	if src.Identity() != testenv.Agent("db-r") || time.Until(src.NotAfter()) < 30*time.Minute {
		t.Fatalf("renewed certificate names %v, expires %s", src.Identity(), src.NotAfter())
	}
}
