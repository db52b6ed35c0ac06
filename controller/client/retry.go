package client

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Defaults of the retry layer (Options.AttemptTimeout, Options.RetryBudget).
const (
	// DefaultAttemptTimeout bounds one attempt at one address, so a node
	// that hangs (SIGSTOPped, or cut off without a reset) costs this much,
	// not the call's whole budget: a third of the time left when the call
	// starts, between MinAttemptTimeout and this. A controller answers a
	// read or commits a write in milliseconds; an attempt that takes longer
	// is retried (a write under its idempotency key, so it takes effect
	// once).
	DefaultAttemptTimeout = 5 * time.Second
	// MinAttemptTimeout leaves room for the controller's own bounded
	// waits, which must end inside one attempt or the call never gets
	// their answer: a second per unreachable peer in ClusterStatus, two
	// for a follower asking the leader before it answers ListAgents,
	// ListInstances or GetBinlogStatus from its own catalog.
	MinAttemptTimeout = 3 * time.Second
	// DefaultRetryBudget is how long a call without a deadline keeps
	// retrying.
	DefaultRetryBudget = 30 * time.Second
)

// idempotencyField is the field every mutating request that may be retried
// carries (control.proto, number 21).
const idempotencyField protoreflect.Name = "idempotency_key"

// NewIdempotencyKey returns a random key (128 bits, hex) for one logical
// write; its retries reuse it.
func NewIdempotencyKey() string {
	b := make([]byte, 16)
	_, _ = crand.Read(b) // never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

type directKey struct{}

// Direct marks a call to go to the Conn's own address only, once: no
// retry, no other node (a probe of one node, a test asking a given node).
func Direct(ctx context.Context) context.Context {
	return context.WithValue(ctx, directKey{}, true)
}

// CallError is a call that failed at every address it tried until its
// deadline. Its gRPC status (status.FromError) has the code of the last
// failure and the whole message.
type CallError struct {
	// Method is the RPC's full name.
	Method string
	// Tried has one entry per address tried, in first-tried order, with
	// the last error it gave and how many attempts it got.
	Tried    []*AddrError
	Attempts map[string]int
	Elapsed  time.Duration
	last     error
}

func (e *CallError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s failed at every controller tried within %s:", shortMethod(e.Method), e.Elapsed.Round(10*time.Millisecond))
	for i, ae := range e.Tried {
		if i > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, " %s (%d attempts): %s", ae.Addr, e.Attempts[ae.Addr], describe(ae.Err))
	}
	return b.String()
}

// Unwrap returns the last error of each address.
func (e *CallError) Unwrap() []error {
	out := make([]error, len(e.Tried))
	for i, ae := range e.Tried {
		out[i] = ae
	}
	return out
}

// GRPCStatus is the last failure's code with the whole message.
func (e *CallError) GRPCStatus() *status.Status {
	return status.New(status.Code(e.last), e.Error())
}

// describe is an attempt's error in one clause: a controller's own answer
// as it gave it (its messages name the node: "node c2 knows no leader
// ..."), a transport failure as Classify words it.
func describe(err error) string {
	if st, ok := status.FromError(err); ok && (strings.HasPrefix(st.Message(), "node ") || strings.HasPrefix(st.Message(), "the leader ")) {
		return st.Message()
	}
	c := Classify(err)
	if st, ok := status.FromError(c); ok {
		return st.Message()
	}
	return c.Error()
}

func shortMethod(m string) string {
	if i := strings.LastIndexByte(m, '/'); i >= 0 {
		return m[i+1:]
	}
	return m
}

// readOnly reports whether a method only reads: such a call may be sent
// again, to any node, whatever happened to the first.
func readOnly(method string) bool {
	name := shortMethod(method)
	for _, p := range []string{"List", "Get", "Explain", "Plan"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return name == "NodeStatus" || name == "ClusterStatus"
}

// pool is the addresses of one cluster, shared by the Conns dialled
// together, with a connection per address for retries.
type pool struct {
	opts Options

	mu    sync.Mutex
	addrs []string
	conns map[string]*grpc.ClientConn
	// refs counts the Conns that share the pool; the last Close closes
	// the retry connections.
	refs int
	// last is the address that answered last: the next call tries it
	// first (after a failover, the new leader).
	last string
}

func newPool(addrs []string, opts Options) *pool {
	return &pool{opts: opts, addrs: append([]string(nil), addrs...), conns: map[string]*grpc.ClientConn{}}
}

// add makes more addresses known (the cluster's members).
func (p *pool) add(addrs ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range addrs {
		if a != "" && !contains(p.addrs, a) {
			p.addrs = append(p.addrs, a)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// order is the addresses to try for a call from a Conn at home.
func (p *pool) order(home string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	first := home
	if p.last != "" {
		first = p.last
	}
	out := []string{first}
	if first != home {
		out = append(out, home)
	}
	for _, a := range p.addrs {
		if !contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

func (p *pool) answered(addr string) {
	p.mu.Lock()
	p.last = addr
	p.mu.Unlock()
}

// conn returns the retry connection to addr (without the retry
// interceptor: the loop is the interceptor's).
func (p *pool) conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cc, ok := p.conns[addr]; ok {
		return cc, nil
	}
	dopts, err := p.opts.dialOptions()
	if err != nil {
		return nil, err
	}
	cc, err := grpc.NewClient(addr, dopts...)
	if err != nil {
		return nil, fmt.Errorf("%w: bad address: %w", ErrUnreachable, err)
	}
	p.conns[addr] = cc
	return cc, nil
}

func (p *pool) ref() {
	p.mu.Lock()
	p.refs++
	p.mu.Unlock()
}

// release drops a Conn's reference; the last closes the connections.
func (p *pool) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refs--; p.refs > 0 {
		return
	}
	for a, cc := range p.conns {
		_ = cc.Close()
		delete(p.conns, a)
	}
}

// transient reports whether an attempt's failure says nothing about the
// request, only about the node or the moment: nothing answered, no leader,
// a leader stepping down, or the attempt's own deadline (not the call's).
func transient(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return errors.Is(err, ErrUnreachable)
}

// interceptor returns the unary interceptor of the Conn dialled at home:
// a read, or a write that carries an idempotency key (one is made here
// when the request has the field and it is empty), is retried at every
// address of the pool, home (or the address that answered last) first,
// with backoff, each attempt bounded by the attempt timeout, until the
// call's deadline; a write without the field (policy apply, agent revoke,
// member changes) the same way, but only after failures that prove it was
// not applied (notApplied).
func (p *pool) interceptor(home string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if direct, _ := ctx.Value(directKey{}).(bool); direct {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		m, ok := req.(proto.Message)
		if !ok {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		if fd := m.ProtoReflect().Descriptor().Fields().ByName(idempotencyField); fd != nil && fd.Kind() == protoreflect.StringKind {
			if m.ProtoReflect().Get(fd).String() == "" {
				// A copy: the caller's request may be sent again as a new
				// write, which must get a new key.
				m = proto.Clone(m)
				m.ProtoReflect().Set(fd, protoreflect.ValueOfString(NewIdempotencyKey()))
				req = m
			}
		} else if !readOnly(method) {
			// A write without a key: retried only where the failure
			// proves it was not applied.
			return p.retry(ctx, home, method, req, reply, cc, invoker, opts, true)
		}
		return p.retry(ctx, home, method, req, reply, cc, invoker, opts, false)
	}
}

// notApplied reports whether an attempt's failure proves that a write was
// not applied, so that one without an idempotency key may be sent again:
// nothing was sent (the address did not answer), or the node it reached
// knew no leader, or was asked as leader and is not. A leader that dies or
// steps down after it received the write, or an attempt's deadline, may
// hide a write that commits: those are final for such a write.
func notApplied(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if errors.Is(err, ErrUnreachable) {
		return true
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	m := st.Message()
	if strings.Contains(m, "knows no leader") || strings.Contains(m, "but is not the leader") {
		return true
	}
	// A connection refused before anything was sent.
	return strings.Contains(m, "connection refused") || strings.Contains(m, "no such host")
}

// retry sends the call until it succeeds, fails for the request's own
// sake, or the call's deadline passes. unkeyed: a write that must not be
// sent twice: retried only when notApplied, and each attempt may use the
// whole remaining time (a slow write cut short could still commit).
func (p *pool) retry(ctx context.Context, home, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts []grpc.CallOption, unkeyed bool) error {
	start := time.Now()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.budget())
		defer cancel()
	}
	attemptTimeout := p.opts.AttemptTimeout
	dl, _ := ctx.Deadline()
	if attemptTimeout <= 0 {
		attemptTimeout = min(DefaultAttemptTimeout, max(MinAttemptTimeout, time.Until(dl)/3))
	}
	retryable := transient
	if unkeyed {
		attemptTimeout, retryable = time.Until(dl), notApplied
	}
	ce := &CallError{Method: method, Attempts: map[string]int{}}
	seen := map[string]*AddrError{}
	backoff := 50 * time.Millisecond
	for {
		for _, addr := range p.order(home) {
			err := p.attempt(ctx, attemptTimeout, addr, home, method, req, reply, cc, invoker, opts)
			if err == nil {
				p.answered(addr)
				return nil
			}
			if ctx.Err() == nil && !retryable(ctx, err) {
				return err // the answer to the request: not the node's state
			}
			ce.Attempts[addr]++
			// The call's deadline cutting an attempt short says less than
			// what the address said before: keep that.
			cut := ctx.Err() != nil && status.Code(err) == codes.DeadlineExceeded
			if !cut || ce.last == nil {
				ce.last = err
			}
			if ae, ok := seen[addr]; ok {
				if !cut {
					ae.Err = err
				}
			} else {
				seen[addr] = &AddrError{Addr: addr, Err: err}
				ce.Tried = append(ce.Tried, seen[addr])
			}
			if ctx.Err() != nil {
				break
			}
		}
		if ctx.Err() != nil {
			ce.Elapsed = time.Since(start)
			return ce
		}
		// Jittered, so the clients of one failover do not retry in step.
		d := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			ce.Elapsed = time.Since(start)
			return ce
		case <-time.After(d):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// attempt sends the call once to addr, bounded by the attempt timeout.
func (p *pool) attempt(ctx context.Context, timeout time.Duration, addr, home, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts []grpc.CallOption) error {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if addr == home {
		return invoker(actx, method, req, reply, cc, opts...)
	}
	occ, err := p.conn(addr)
	if err != nil {
		return err
	}
	return occ.Invoke(actx, method, req, reply, opts...)
}

func (p *pool) budget() time.Duration {
	if p.opts.RetryBudget > 0 {
		return p.opts.RetryBudget
	}
	return DefaultRetryBudget
}
