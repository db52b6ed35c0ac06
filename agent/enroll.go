package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// enroll gets the agent's certificate with its join token when it has none
// yet: a key pair made here (the private key never leaves the host), a
// signing request, and the certificate the cluster returns, written to the
// TLS files. An agent that has its certificate already ignores the token.
func (a *Agent) enroll(ctx context.Context) error {
	cfg := a.cfg
	if cfg.JoinToken == "" || cfg.Insecure {
		return nil
	}
	if _, err := os.Stat(cfg.TLS.Cert); err == nil {
		a.log.Info("agent has its certificate; the join token is not needed", "cert", cfg.TLS.Cert)
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("--tls-cert: %w", err)
	}
	tok, err := tlsx.ParseJoinToken(cfg.JoinToken)
	if err != nil {
		return fmt.Errorf("--join-token: %w", err)
	}
	keyPEM, csr, err := tlsx.NewCSR(tlsx.Identity{Kind: tlsx.KindAgent, Name: cfg.Name})
	if err != nil {
		return err
	}
	req := &v1.JoinRequest{Token: cfg.JoinToken, Name: cfg.Name, Role: string(tlsx.KindAgent), Csr: csr}
	creds := credentials.NewTLS(tlsx.PinnedClientConfig(tok.Pin))
	var errs []error
	for _, addr := range cfg.Controllers {
		resp, err := joinVia(ctx, addr, creds, req, cfg.ConnectTimeout)
		if err == nil {
			for _, f := range []struct {
				path string
				b    []byte
			}{{cfg.TLS.Key, keyPEM}, {cfg.TLS.CA, resp.GetCaPem()}, {cfg.TLS.Cert, resp.GetCertPem()}} {
				if err := writePrivate(f.path, f.b); err != nil {
					return fmt.Errorf("writing the agent's credential: %w", err)
				}
			}
			a.log.Info("joined the cluster with a join token", "token", tok.ID, "controller", addr, "cert", cfg.TLS.Cert)
			return nil
		}
		if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument {
			return &FatalError{Msg: fmt.Sprintf("controller %s refused the join token: %s", addr, st.Message())}
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return &FatalError{Msg: fmt.Sprintf("could not join with the token: %v", errors.Join(errs...))}
}

func joinVia(ctx context.Context, addr string, creds credentials.TransportCredentials, req *v1.JoinRequest, timeout time.Duration) (*v1.JoinResponse, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	defer func() { _ = cc.Close() }()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return v1.NewControlServiceClient(cc).Join(ctx, req)
}

// writePrivate writes a file only the owner can read, atomically.
func writePrivate(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
