package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// EnvController is the environment variable that lists controller
// addresses when --controller is not given.
const EnvController = "TIDEMARK_CONTROLLER"

var (
	// ErrNotController: the address answers, but not as a Tidemark
	// controller (another gRPC service, another protocol, the Raft port).
	ErrNotController = errors.New("not a tidemark controller")
	// ErrUnreachable: nothing answers at the address.
	ErrUnreachable = errors.New("unreachable")
	// ErrTLS: the TLS handshake failed (another CA, an expired or
	// revoked certificate, one side plaintext).
	ErrTLS = errors.New("TLS handshake failed")
)

// Conn is a connection to one controller node. Any node serves reads and
// forwards writes to the leader; DialLeader saves that hop.
//
// Unary calls ride out elections and dead nodes: a read, or a write whose
// request has an idempotency_key field (filled with a new key when empty),
// that fails because nothing answers, no leader is known, the leader steps
// down or an attempt times out, is sent again to the other addresses the
// Conn was dialled with (and the cluster's members), with backoff, until
// the call's deadline; it then fails with a *CallError naming every
// address tried and what each said. Any other write is sent once. Streams
// (WatchJob, Connect) are not retried here.
type Conn struct {
	// Addr is the address dialled.
	Addr string
	// NodeID is the node's id, as it reported.
	NodeID  string
	Control v1.ControlServiceClient
	Cluster v1.ClusterServiceClient
	Agent   v1.AgentServiceClient
	cc      *grpc.ClientConn
	pool    *pool
}

// Close closes the connection.
func (c *Conn) Close() error {
	c.pool.release()
	return c.cc.Close()
}

// Options tune dialling. One of TLS and Insecure must be set: there is
// no default transport, so nothing dials plaintext by accident.
type Options struct {
	// TLS is the mutual-TLS configuration (tlsx.Source.ClientConfig).
	TLS *tls.Config
	// Insecure dials plaintext (a controller started with --insecure).
	Insecure bool
	// Bearer is a CLI user's access token (tidemark login), sent with
	// every call over TLS in place of a client certificate.
	Bearer string
	// ProbeTimeout bounds the check of one address (default 3s).
	ProbeTimeout time.Duration
	// AttemptTimeout bounds one attempt of a retried call at one address
	// (default: a third of the call's time, between MinAttemptTimeout and
	// DefaultAttemptTimeout).
	AttemptTimeout time.Duration
	// RetryBudget bounds the retries of a call whose context has no
	// deadline (default DefaultRetryBudget).
	RetryBudget time.Duration
	// DialOptions are added to the defaults.
	DialOptions []grpc.DialOption
}

// ErrNoCredentials: Options names no transport.
var ErrNoCredentials = errors.New("no credentials to reach the controller: give --credentials DIR (or TIDEMARK_CREDENTIALS), --tls-ca/--tls-cert/--tls-key, an access token (tidemark login --token-file F, or TIDEMARK_TOKEN_FILE), or --insecure for a plaintext controller on loopback")

// Credentials is the transport the options name.
func (o Options) Credentials() (credentials.TransportCredentials, error) {
	switch {
	case o.TLS != nil && o.Insecure:
		return nil, errors.New("both TLS credentials and --insecure given: choose one")
	case o.TLS != nil:
		return tlsx.GRPC(o.TLS), nil
	case o.Insecure:
		return insecure.NewCredentials(), nil
	}
	return nil, ErrNoCredentials
}

// Addrs splits a comma-separated address list (a --controller flag), or
// returns the list in $TIDEMARK_CONTROLLER when flag is empty.
func Addrs(flag string) []string {
	if flag == "" {
		flag = os.Getenv(EnvController)
	}
	var out []string
	for _, a := range strings.Split(flag, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// AddrError is why one address was passed over.
type AddrError struct {
	Addr string
	Err  error
}

func (e *AddrError) Error() string { return e.Addr + ": " + e.Err.Error() }
func (e *AddrError) Unwrap() error { return e.Err }

// DialAny tries the addresses in order and returns a connection to the
// first that answers as a Tidemark controller. When none does, the error
// joins one *AddrError per address, each wrapping ErrNotController,
// ErrUnreachable or the status the node answered.
func DialAny(ctx context.Context, addrs []string, opts Options) (*Conn, error) {
	if len(addrs) == 0 {
		return nil, fmt.Errorf("no controller address: give --controller HOST:PORT[,HOST:PORT...] or set %s", EnvController)
	}
	if _, err := opts.Credentials(); err != nil {
		return nil, err
	}
	p := newPool(addrs, opts)
	var errs []error
	for _, a := range addrs {
		c, err := dial(ctx, a, opts, p)
		if err == nil {
			return c, nil
		}
		errs = append(errs, &AddrError{Addr: a, Err: err})
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// DialLeader returns a connection to the leader: it dials any node, asks
// it who leads, and dials that. When the leader is unknown or does not
// answer it returns the node it found, which forwards writes.
func DialLeader(ctx context.Context, addrs []string, opts Options) (*Conn, error) {
	c, err := DialAny(ctx, addrs, opts)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout(opts))
	defer cancel()
	pctx = Direct(pctx)
	cs, err := c.Control.ClusterStatus(pctx, &v1.ClusterStatusRequest{})
	if err != nil {
		return c, nil //nolint:nilerr // the node found is a fine fallback
	}
	// The members' addresses join the ones given, for retries.
	for _, m := range cs.GetMembers() {
		c.pool.add(m.GetAddress())
	}
	if cs.GetLeaderId() == "" || cs.GetLeaderId() == c.NodeID {
		return c, nil
	}
	for _, m := range cs.GetMembers() {
		if m.GetId() == cs.GetLeaderId() && m.GetAddress() != "" && m.GetAddress() != c.Addr {
			if l, err := dial(ctx, m.GetAddress(), opts, c.pool); err == nil {
				_ = c.Close()
				return l, nil
			}
		}
	}
	return c, nil
}

func probeTimeout(o Options) time.Duration {
	if o.ProbeTimeout > 0 {
		return o.ProbeTimeout
	}
	return 3 * time.Second
}

// dialOptions are the transport, the bearer token and the caller's
// options, without the retry interceptor.
func (o Options) dialOptions() ([]grpc.DialOption, error) {
	creds, err := o.Credentials()
	if err != nil {
		return nil, err
	}
	dopts := append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, o.DialOptions...)
	if o.Bearer != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(bearer(o.Bearer)))
	}
	return dopts, nil
}

// dial connects to addr and checks, with NodeStatus, that a controller
// answers there. The Conn retries through p.
func dial(ctx context.Context, addr string, opts Options, p *pool) (*Conn, error) {
	dopts, err := opts.dialOptions()
	if err != nil {
		return nil, err
	}
	dopts = append(dopts, grpc.WithChainUnaryInterceptor(p.interceptor(addr)))
	cc, err := grpc.NewClient(addr, dopts...)
	if err != nil {
		return nil, fmt.Errorf("%w: bad address: %w", ErrUnreachable, err)
	}
	c := &Conn{Addr: addr, cc: cc, pool: p, Control: v1.NewControlServiceClient(cc), Cluster: v1.NewClusterServiceClient(cc), Agent: v1.NewAgentServiceClient(cc)}
	pctx, cancel := context.WithTimeout(Direct(ctx), probeTimeout(opts))
	defer cancel()
	st, err := c.Cluster.NodeStatus(pctx, &v1.NodeStatusRequest{})
	if err != nil {
		_ = cc.Close()
		return nil, Classify(err)
	}
	p.ref()
	c.NodeID = st.GetNodeId()
	return c, nil
}

// Classify turns the error of a first call to an address into
// ErrNotController or ErrUnreachable (wrapped, with the cause) when it is
// one of those, else returns it as is.
func Classify(err error) error {
	st, _ := status.FromError(err)
	msg := st.Message()
	switch st.Code() {
	case codes.Unimplemented:
		return fmt.Errorf("%w: it serves gRPC but not the controller API (%s)", ErrNotController, msg)
	case codes.Unavailable, codes.Internal, codes.Unknown:
		if strings.Contains(msg, "missing selected ALPN property") {
			return fmt.Errorf("%w: it does not speak gRPC (a TLS server without HTTP/2: a Raft port?)", ErrNotController)
		}
		if strings.Contains(msg, "first record does not look like a TLS handshake") {
			return notTLSError{fmt.Errorf("%w: it does not speak TLS (plaintext: a controller started with --insecure? then dial it with --insecure too)", ErrTLS)}
		}
		if i := strings.Index(msg, "tls: "); i >= 0 || strings.Contains(msg, "x509: ") {
			if i < 0 {
				i = strings.Index(msg, "x509: ")
			}
			return fmt.Errorf("%w: %s (does this credential come from the cluster's CA, is it unexpired, and are the clocks right?)", ErrTLS, strings.TrimSuffix(msg[i:], `"`))
		}
		for _, sign := range []string{"server preface", "http2:", "malformed", "unexpected HTTP status", "content-type", "frame too large", "tls:"} {
			if strings.Contains(msg, sign) {
				return fmt.Errorf("%w: it does not speak gRPC (%s)", ErrNotController, notGRPCCause(msg))
			}
		}
		if st.Code() == codes.Unavailable {
			// Keep the cause, not gRPC's wrapping of it.
			if i := strings.Index(msg, "dial tcp"); i >= 0 {
				msg = strings.TrimSuffix(msg[i:], `"`)
			}
			return fmt.Errorf("%w: %s", ErrUnreachable, msg)
		}
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: no answer in time (%s)", ErrUnreachable, msg)
	}
	return err
}

// notGRPCCause shortens gRPC's description of a peer that is not a gRPC
// server.
func notGRPCCause(msg string) string {
	switch {
	case strings.Contains(msg, "looked like an HTTP/1.1 header"):
		return "it answers HTTP/1.1"
	case strings.Contains(msg, "server preface: EOF"):
		return "it closed the connection; a controller that requires TLS does that to a plaintext client"
	}
	return msg
}

// Join exchanges a join token for the cluster CA and a certificate, with
// the first of addrs that answers; opts carries the pinned TLS
// configuration (tlsx.PinnedClientConfig), as the joining host has no
// certificate yet.
func Join(ctx context.Context, addrs []string, opts Options, req *v1.JoinRequest) (*v1.JoinResponse, error) {
	creds, err := opts.Credentials()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, a := range addrs {
		cc, err := grpc.NewClient(a, grpc.WithTransportCredentials(creds))
		if err != nil {
			errs = append(errs, &AddrError{Addr: a, Err: err})
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*probeTimeout(opts))
		resp, err := v1.NewControlServiceClient(cc).Join(cctx, req)
		cancel()
		_ = cc.Close()
		if err == nil {
			return resp, nil
		}
		if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument {
			// The token was refused: no other node will think otherwise.
			return nil, fmt.Errorf("%s refused the join token: %s", a, st.Message())
		}
		errs = append(errs, &AddrError{Addr: a, Err: Classify(err)})
	}
	return nil, errors.Join(errs...)
}

// Retryable reports whether a failed call may succeed later (no leader,
// nothing answering yet).
func Retryable(err error) bool {
	if errors.Is(err, ErrUnreachable) {
		return true
	}
	var ae *AddrError
	if errors.As(err, &ae) {
		st, ok := status.FromError(ae.Err)
		return ok && st.Code() == codes.Unavailable
	}
	return false
}

// bearer sends an access token with every call, over TLS only.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// ErrNotTLS: the address answered in plaintext (a controller started with
// --insecure, or not a controller at all): no credential was refused. Such
// an error is also ErrTLS, with the same message.
var ErrNotTLS = errors.New("the peer does not speak TLS")

type notTLSError struct{ error }

func (e notTLSError) Unwrap() error      { return e.error }
func (notTLSError) Is(target error) bool { return target == ErrNotTLS }
