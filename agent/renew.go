package agent

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// renewCheckInterval is how often the agent looks at its certificate's age.
const renewCheckInterval = time.Minute

// renewLoop renews the agent's certificate two thirds into its life: a new
// key made here, a signing request sent over the current certificate, the
// files replaced, and the certificate source reloaded (new connections use
// the new certificate; the open stream keeps its own). A cluster whose
// controllers do not hold a CA key (an operator's CA) answers
// FailedPrecondition, and the loop stops: those certificates are renewed
// by the operator, whose replaced files the source picks up.
func (a *Agent) renewLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.RenewCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !a.tls.RenewDue(time.Now()) {
			continue
		}
		err := a.renew(ctx)
		if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition {
			a.log.Info("the controllers do not issue certificates (an operator's CA): renew the agent's certificate files there", "cert", a.cfg.TLS.Cert, "expires", a.tls.NotAfter())
			return
		}
		if err != nil {
			a.log.Warn("certificate renewal failed; retrying", "err", err, "expires", a.tls.NotAfter())
			continue
		}
		a.log.Info("certificate renewed", "expires", a.tls.NotAfter())
	}
}

func (a *Agent) renew(ctx context.Context) error {
	keyPEM, csr, err := tlsx.NewCSR(tlsx.Identity{Kind: tlsx.KindAgent, Name: a.cfg.Name})
	if err != nil {
		return err
	}
	var last error
	for _, addr := range a.cfg.Controllers {
		var resp *v1.RenewCertificateResponse
		resp, last = a.renewVia(ctx, addr, csr)
		if last != nil {
			if st, ok := status.FromError(last); ok && st.Code() == codes.FailedPrecondition {
				return last
			}
			continue
		}
		// The key first: a reload between the two writes fails (key and
		// certificate differ) and keeps the old pair.
		if err := writePrivate(a.cfg.TLS.Key, keyPEM); err != nil {
			return fmt.Errorf("writing --tls-key: %w", err)
		}
		if err := writePrivate(a.cfg.TLS.Cert, resp.GetCertPem()); err != nil {
			return fmt.Errorf("writing --tls-cert: %w", err)
		}
		return a.tls.Reload()
	}
	return last
}

func (a *Agent) renewVia(ctx context.Context, addr string, csr []byte) (*v1.RenewCertificateResponse, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(a.transport()))
	if err != nil {
		return nil, err
	}
	defer func() { _ = cc.Close() }()
	ctx, cancel := context.WithTimeout(ctx, a.cfg.ConnectTimeout)
	defer cancel()
	return v1.NewControlServiceClient(cc).RenewCertificate(ctx, &v1.RenewCertificateRequest{Csr: csr})
}
