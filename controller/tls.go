package controller

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TLSConfig is the node's transport security. Exactly one of: Insecure,
// Files (an operator's CA and this node's certificate), or CAKeyFile (the
// cluster's own CA, created at bootstrap, its key sealed with the file).
type TLSConfig struct {
	// Insecure serves plaintext with no identities; refused unless every
	// address (gRPC, Raft, --join) is a loopback one.
	Insecure bool
	// Files are operator-supplied PEM files; the node certificate must
	// name this node (tidemark://controller/NODE_ID) and is re-read when
	// replaced on disk.
	Files tlsx.Files
	// CAKeyFile seals the cluster CA's private key (at least 32 random
	// bytes; created at bootstrap when missing). Every controller of the
	// cluster is given the same file; nobody else needs it.
	CAKeyFile string
	// CertValidity is the life of the certificates the cluster CA issues
	// to this node (renewed two thirds in).
	CertValidity time.Duration
	// AgentCertValidity is the life of an agent's certificate issued for
	// a join token.
	AgentCertValidity time.Duration
	// JoinToken (tidemark token create --role controller) lets a new node
	// fetch the cluster CA, sealed, from the node it joins through; the
	// same CAKeyFile opens it.
	JoinToken string
}

// validate checks the choice (addresses are checked in Start, once a
// restarted node's are known).
func (t *TLSConfig) validate() error {
	files := t.Files != (tlsx.Files{})
	switch {
	case t.Insecure && (files || t.CAKeyFile != ""):
		return errors.New("--insecure serves plaintext: do not give --tls-* or --ca-key-file with it")
	case files && t.CAKeyFile != "":
		return errors.New("give --tls-ca/--tls-cert/--tls-key (your own CA) or --ca-key-file (the cluster's own CA), not both")
	case !t.Insecure && !files && t.CAKeyFile == "":
		return errors.New("no TLS: give --ca-key-file FILE (the cluster's own CA, its key sealed with FILE; created at bootstrap), or --tls-ca/--tls-cert/--tls-key (your own CA), or --insecure (plaintext, loopback only)")
	case t.CertValidity < 10*time.Minute:
		return fmt.Errorf("--cert-validity %s: at least 10m", t.CertValidity)
	case t.AgentCertValidity < 10*time.Minute:
		return fmt.Errorf("--agent-cert-validity %s: at least 10m", t.AgentCertValidity)
	case t.JoinToken != "" && t.CAKeyFile == "":
		return errors.New("--join-token fetches the cluster's own CA, which opens with --ca-key-file: give it too")
	}
	return nil
}

// Files of the cluster CA in the data directory. The CA certificate is
// public; the key is sealed with --ca-key-file.
const (
	tlsDir        = "tls"
	caCertFile    = "ca.pem"
	caSealedFile  = "ca-key.sealed"
	adminCredsDir = "admin"
)

// adminCredentialValidity is the life of the admin credential a bootstrap
// writes: long enough to set the cluster up and issue others.
const adminCredentialValidity = 365 * 24 * time.Hour

// caValidity is the life of a generated cluster CA.
const caValidity = 10 * 365 * 24 * time.Hour

// setupTLS makes the node's certificate source (nil for --insecure), and
// at a bootstrap the cluster CA. fresh: the data directory is new.
func (s *Server) setupTLS(ctx context.Context, fresh bool) error {
	t := s.cfg.TLS
	if t.Insecure {
		addrs := append([]string{s.id.GRPCAddr, s.id.grpcAdvertise(), s.id.RaftAddr, s.id.raftAdvertise()}, s.cfg.Join...)
		return tlsx.RequireLoopback("address", addrs...)
	}
	self := tlsx.Identity{Kind: tlsx.KindController, Name: s.id.NodeID}
	if t.Files != (tlsx.Files{}) {
		src, err := tlsx.FromFiles(t.Files)
		if err != nil {
			return err
		}
		if got := src.Identity(); got != self {
			return fmt.Errorf("--tls-cert %s names %s, but this node is %s: issue it for tidemark://controller/%s", t.Files.Cert, got, self, s.id.NodeID)
		}
		s.tls = src
		return nil
	}
	dir := filepath.Join(s.cfg.DataDir, tlsDir)
	ca, err := loadCA(dir, t.CAKeyFile)
	switch {
	case errors.Is(err, fs.ErrNotExist) && fresh && s.cfg.Bootstrap:
		if ca, err = s.createCA(dir); err != nil {
			return err
		}
	case errors.Is(err, fs.ErrNotExist) && fresh && t.JoinToken != "":
		if err := s.fetchCA(ctx, dir); err != nil {
			return err
		}
		if ca, err = loadCA(dir, t.CAKeyFile); err != nil {
			return err
		}
	case errors.Is(err, fs.ErrNotExist) && fresh:
		return errors.New("joining a cluster whose CA it made itself needs --join-token FILE (tidemark token create --role controller) " +
			"and the cluster's --ca-key-file; or run every node with --tls-ca/--tls-cert/--tls-key")
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("--data-dir %s has no cluster CA (%s): was the node started with --tls-ca/--tls-cert/--tls-key? give them again", s.cfg.DataDir, dir)
	case err != nil:
		return err
	}
	s.ca = ca
	src, err := tlsx.Issuing(ca, self, t.CertValidity)
	if err != nil {
		return err
	}
	s.tls = src
	return nil
}

// loadCA opens the cluster CA in dir with the key file; fs.ErrNotExist
// when there is none.
func loadCA(dir, keyFile string) (*tlsx.CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, caCertFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("reading the cluster CA: %w", err)
	}
	sealed, err := os.ReadFile(filepath.Join(dir, caSealedFile))
	if err != nil {
		return nil, fmt.Errorf("reading the cluster CA key: %w", err)
	}
	kf, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("reading --ca-key-file: %w", err)
	}
	keyPEM, err := tlsx.Unseal(sealed, kf)
	if err != nil {
		return nil, fmt.Errorf("--ca-key-file %s: %w", keyFile, err)
	}
	ca, err := tlsx.ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the cluster CA in %s: %w", dir, err)
	}
	return ca, nil
}

// createCA makes the cluster CA at a bootstrap, seals its key with the
// key file (creating the file when missing), and writes an admin
// credential for the operator.
func (s *Server) createCA(dir string) (*tlsx.CA, error) {
	keyFile := s.cfg.TLS.CAKeyFile
	kf, err := os.ReadFile(keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		kf = make([]byte, tlsx.MinKeyFileSize)
		if _, err := rand.Read(kf); err != nil {
			return nil, err
		}
		if err := writeFileSync(keyFile, kf, 0o600); err != nil {
			return nil, fmt.Errorf("creating --ca-key-file: %w", err)
		}
		s.log.Info("created the CA key file; give the same file to every controller of the cluster, and to no one else", "file", keyFile)
	} else if err != nil {
		return nil, fmt.Errorf("reading --ca-key-file: %w", err)
	}
	ca, err := tlsx.NewCA("tidemark cluster CA ("+s.id.NodeID+")", caValidity)
	if err != nil {
		return nil, err
	}
	keyPEM, err := tlsx.KeyPEM(ca.Key)
	if err != nil {
		return nil, err
	}
	sealed, err := tlsx.Seal(keyPEM, kf)
	if err != nil {
		return nil, fmt.Errorf("--ca-key-file %s: %w", keyFile, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, adminCredsDir), 0o700); err != nil {
		return nil, err
	}
	cert, key, err := ca.IssueKeyPair(tlsx.Identity{Kind: tlsx.KindUser, Name: "admin", Role: tlsx.RoleAdmin}, adminCredentialValidity)
	if err != nil {
		return nil, err
	}
	admin := filepath.Join(dir, adminCredsDir)
	for _, f := range []struct {
		path string
		b    []byte
	}{
		{filepath.Join(admin, "ca.pem"), ca.CertPEM()},
		{filepath.Join(admin, "cert.pem"), cert},
		{filepath.Join(admin, "key.pem"), key},
		{filepath.Join(dir, caSealedFile), sealed},
		// The CA certificate last: its presence says the rest is there.
		{filepath.Join(dir, caCertFile), ca.CertPEM()},
	} {
		if err := writeFileSync(f.path, f.b, 0o600); err != nil {
			return nil, fmt.Errorf("writing the cluster CA: %w", err)
		}
	}
	s.log.Info("created the cluster CA; an admin credential for the CLI is in "+admin, "hint", "export TIDEMARK_CREDENTIALS="+admin)
	return ca, nil
}

// AdminCredentials is where a bootstrap that created the cluster CA wrote
// the admin credential (ca.pem, cert.pem, key.pem), under dataDir.
func AdminCredentials(dataDir string) string { return filepath.Join(dataDir, tlsDir, adminCredsDir) }

func writeFileSync(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	return err
}

// Credential is a certificate and its private key, with the CA that
// issued it, in PEM: what a CLI user or agent presents.
type Credential struct {
	CA, Cert, Key []byte
}

// WriteDir writes the credential as ca.pem, cert.pem and key.pem in dir
// (the layout --credentials reads), readable by the owner only.
func (c Credential) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, b := range map[string][]byte{"ca.pem": c.CA, "cert.pem": c.Cert, "key.pem": c.Key} {
		if err := writeFileSync(filepath.Join(dir, name), b, 0o600); err != nil {
			return fmt.Errorf("writing credential %s: %w", filepath.Join(dir, name), err)
		}
	}
	return nil
}

// ErrNoCA: this node does not hold a CA key (operator-supplied
// certificates, or --insecure), so it cannot issue credentials.
var ErrNoCA = errors.New("this controller does not hold the cluster CA's key (it runs with --tls-* certificates from your own CA, or --insecure): issue credentials with your CA")

// Issue makes a credential for id, valid for validity, with the cluster
// CA; the key pair is made here (the local agent of `tidemark dev`).
func (s *Server) Issue(id tlsx.Identity, validity time.Duration) (Credential, error) {
	if s.ca == nil {
		return Credential{}, ErrNoCA
	}
	cert, key, err := s.ca.IssueKeyPair(id, validity)
	if err != nil {
		return Credential{}, err
	}
	return Credential{CA: s.ca.CertPEM(), Cert: cert, Key: key}, nil
}

// fetchCA gets the cluster CA, its key sealed, from a node of cfg.Join
// with the join token, and writes it into dir. The node is trusted only
// when it shows the CA the token pins.
func (s *Server) fetchCA(ctx context.Context, dir string) error {
	tok, err := tlsx.ParseJoinToken(s.cfg.TLS.JoinToken)
	if err != nil {
		return fmt.Errorf("--join-token: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.JoinTimeout)
	defer cancel()
	opts := client.Options{TLS: tlsx.PinnedClientConfig(tok.Pin), ProbeTimeout: 2 * time.Second}
	var last error
	for ctx.Err() == nil {
		var resp *v1.JoinResponse
		resp, last = client.Join(ctx, s.cfg.Join, opts, &v1.JoinRequest{Token: s.cfg.TLS.JoinToken, Name: s.id.NodeID, Role: string(tlsx.KindController)})
		if last == nil {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			if err := writeFileSync(filepath.Join(dir, caSealedFile), resp.GetSealedCaKey(), 0o600); err != nil {
				return err
			}
			return writeFileSync(filepath.Join(dir, caCertFile), resp.GetCaPem(), 0o600)
		}
		if !client.Retryable(last) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
	return fmt.Errorf("joining with the token: %w", last)
}
