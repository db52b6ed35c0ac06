package metrics

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ServeParams configure the HTTP listener.
type ServeParams struct {
	// Addr is HOST:PORT to listen on.
	Addr string
	// Flag names the setting Addr came from, for errors ("--metrics-addr").
	Flag string
	// TLS, when set, serves HTTPS with it. It must verify client
	// certificates if given (tls.VerifyClientCertIfGiven): /metrics and
	// /debug/pprof then require a verified client certificate, /healthz and
	// /readyz do not (a kubelet's HTTPS probe presents none). Nil serves
	// plain HTTP (a daemon run with --insecure).
	TLS *tls.Config
	// CheckPeer, when set, may refuse a verified client certificate (a
	// controller refuses a revoked agent's).
	CheckPeer func(*x509.Certificate) error
	// Authorize, when set, may admit a TLS request without a client
	// certificate to /metrics and /debug/pprof (a controller checks a
	// bearer access token); nil or an error refuses it.
	Authorize func(*http.Request) error
	// Pprof serves /debug/pprof/*.
	Pprof bool
	// Logger receives the listener's errors; nil discards them.
	Logger *slog.Logger
}

// Server is the running listener.
type Server struct {
	srv *http.Server
	lis net.Listener
	log *slog.Logger
}

// Serve starts serving r on p.Addr and returns once the address is bound.
// An address in use (or any listen error) is returned naming the address
// and p.Flag, so the daemon fails at start instead of running unwatched.
func Serve(r *Registry, p ServeParams) (*Server, error) {
	if r == nil {
		return nil, errors.New("metrics: Serve needs a Registry")
	}
	if p.Flag == "" {
		p.Flag = "--metrics-addr"
	}
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, _, err := net.SplitHostPort(p.Addr); err != nil {
		return nil, fmt.Errorf("%s %q: want HOST:PORT (%w)", p.Flag, p.Addr, err)
	}
	lis, err := net.Listen("tcp", p.Addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%s %s: the address is already in use by another process: choose a free port: %w", p.Flag, p.Addr, err)
		}
		return nil, fmt.Errorf("%s %s: cannot listen: %w", p.Flag, p.Addr, err)
	}
	mux := http.NewServeMux()
	secure := p.TLS != nil
	guard := func(h http.Handler) http.Handler {
		if !secure {
			return h
		}
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.TLS != nil && len(req.TLS.VerifiedChains) > 0 {
				if p.CheckPeer != nil {
					if err := p.CheckPeer(req.TLS.VerifiedChains[0][0]); err != nil {
						http.Error(w, err.Error(), http.StatusForbidden)
						return
					}
				}
				h.ServeHTTP(w, req)
				return
			}
			if p.Authorize != nil && req.Header.Get("Authorization") != "" {
				if err := p.Authorize(req); err != nil {
					http.Error(w, err.Error(), http.StatusForbidden)
					return
				}
				h.ServeHTTP(w, req)
				return
			}
			msg := "this endpoint needs a client certificate of the cluster CA (Prometheus: tls_config with cert_file and key_file)"
			if p.Authorize != nil {
				msg += ", or an access token of the viewer role or above (Prometheus: authorization with credentials_file)"
			}
			http.Error(w, msg, http.StatusUnauthorized)
		})
	}
	mux.Handle("/metrics", guard(promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn), Registry: r.reg,
	})))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := r.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			if secure && (req.TLS == nil || len(req.TLS.VerifiedChains) == 0) {
				// The reasons name repositories and nodes: only for
				// callers of the cluster; a probe needs the code alone.
				_, _ = w.Write([]byte("not ready (the reasons are shown to a client certificate of the cluster CA, and logged)\n"))
				return
			}
			_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if p.Pprof {
		mux.Handle("/debug/pprof/", guard(http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/cmdline", guard(http.HandlerFunc(pprof.Cmdline)))
		mux.Handle("/debug/pprof/profile", guard(http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/symbol", guard(http.HandlerFunc(pprof.Symbol)))
		mux.Handle("/debug/pprof/trace", guard(http.HandlerFunc(pprof.Trace)))
	}
	s := &Server{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, TLSConfig: p.TLS,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)},
		lis: lis, log: log,
	}
	go func() {
		var err error
		if secure {
			err = s.srv.ServeTLS(lis, "", "")
		} else {
			err = s.srv.Serve(lis)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "addr", p.Addr, "err", err)
		}
	}()
	log.Info("serving metrics and health", "addr", lis.Addr().String(), "tls", secure, "pprof", p.Pprof)
	return s, nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Close stops the listener, waiting a moment for scrapes in flight.
func (s *Server) Close() {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}
