package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// FrameSize is the most object bytes one message carries, either way.
const FrameSize = 1 << 20

// ListBatch is the most objects the server puts in one List response.
const ListBatch = 256

// Options tunes a relay store. One of TLS and Insecure must be set.
type Options struct {
	// TLS is the agent's mutual-TLS configuration.
	TLS *tls.Config
	// Insecure dials plaintext (controllers started with --insecure).
	Insecure bool
	// DialOptions are added after the defaults, so they can replace them.
	DialOptions []grpc.DialOption
}

// ParseAddrs parses the part of relay://HOST:PORT[,HOST:PORT...] after the
// scheme: a comma-separated list of controller gRPC addresses.
func ParseAddrs(hosts string) ([]string, error) {
	if hosts == "" {
		return nil, errors.New("no address: write relay://HOST:PORT[,HOST:PORT...] (controller gRPC addresses)")
	}
	if i := strings.IndexAny(hosts, "/?#@"); i >= 0 {
		// Not echoed: what precedes an '@' may be a password.
		return nil, fmt.Errorf("%q not allowed in the address list: write relay://HOST:PORT[,HOST:PORT...] with no path, parameters or user", hosts[i])
	}
	var addrs []string
	for _, a := range strings.Split(hosts, ",") {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("relay address %q: want HOST:PORT: %w", a, err)
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			return nil, fmt.Errorf("relay address %q: port %q is not a number between 1 and 65535", a, port)
		}
		if host == "" {
			return nil, fmt.Errorf("relay address %q: no host", a)
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// RepositoryHeader is the response header in which a controller names the
// repository its --repo holds (archive.RepositoryID; absent or empty before
// `repo init`).
const RepositoryHeader = "tidemark-repository-id"

// Store is a storage.Storage served by a controller's RelayService. It
// dials lazily; the connection tries the addresses in order and moves on to
// the next when one cannot be reached (any controller node serves relay).
// Every answer names the repository the controller serves: once one has,
// an answer from a controller serving another fails, so a backup is never
// split across controllers given different --repo.
type Store struct {
	addrs  []string
	cc     *grpc.ClientConn
	client v1.RelayServiceClient
	repo   *repoCheck
}

// repoCheck remembers the first repository a controller named.
type repoCheck struct {
	mu         sync.Mutex
	id, served string // the repository, and the controller that named it first
}

// check compares the repository a controller at addr names in md.
func (c *repoCheck) check(md metadata.MD, addr string) error {
	ids := md.Get(RepositoryHeader)
	if len(ids) == 0 || ids[0] == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.id == "":
		c.id, c.served = ids[0], addr
	case ids[0] != c.id:
		return status.Errorf(codes.FailedPrecondition,
			"controller %s serves repository %s, but controller %s served repository %s: every controller must be given the same --repo (one bucket and prefix); what was written through %s is not in this repository",
			addr, ids[0], c.served, c.id, c.served)
	}
	return nil
}

func (c *repoCheck) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var md metadata.MD
	var p peer.Peer
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&md), grpc.Peer(&p))...)
	if cerr := c.check(md, peerAddr(&p)); cerr != nil {
		return cerr
	}
	return err
}

func (c *repoCheck) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &checkedStream{ClientStream: cs, c: c}, nil
}

// checkedStream checks the header with the first message received (a Put's
// only one, at its end: the put then fails, and nothing is complete).
type checkedStream struct {
	grpc.ClientStream
	c       *repoCheck
	checked bool
}

func (s *checkedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if !s.checked {
		s.checked = true
		if md, herr := s.Header(); herr == nil {
			addr := ""
			if p, ok := peer.FromContext(s.Context()); ok {
				addr = peerAddr(p)
			}
			if cerr := s.c.check(md, addr); cerr != nil {
				return cerr
			}
		}
	}
	return err
}

func peerAddr(p *peer.Peer) string {
	if p == nil || p.Addr == nil {
		return "?"
	}
	return p.Addr.String()
}

var _ storage.Storage = (*Store)(nil)

// Open returns a store over the controller nodes at addrs (HOST:PORT). It
// does not contact them: the first call does.
func Open(addrs []string, opts Options) (*Store, error) {
	if len(addrs) == 0 {
		return nil, errors.New("relay: no controller address")
	}
	r := manual.NewBuilderWithScheme("tidemark-relay")
	state := resolver.State{}
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(state)
	var creds credentials.TransportCredentials
	switch {
	case opts.TLS != nil && !opts.Insecure:
		creds = tlsx.GRPC(opts.TLS)
	case opts.Insecure && opts.TLS == nil:
		creds = insecure.NewCredentials()
	default:
		return nil, errors.New("relay: give the agent's TLS credentials or --insecure (exactly one)")
	}
	check := &repoCheck{}
	dopts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(check.unary),
		grpc.WithChainStreamInterceptor(check.stream),
		grpc.WithResolvers(r),
		// pick_first walks the list until one address connects.
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"pick_first":{}}]}`),
	}, opts.DialOptions...)
	cc, err := grpc.NewClient(r.Scheme()+":///controllers", dopts...)
	if err != nil {
		return nil, fmt.Errorf("relay %s: %w", strings.Join(addrs, ","), err)
	}
	return &Store{addrs: addrs, cc: cc, client: v1.NewRelayServiceClient(cc), repo: check}, nil
}

// String names the store by its URI.
func (s *Store) String() string { return "relay://" + strings.Join(s.addrs, ",") }

// Close closes the connection.
func (s *Store) Close() error { return s.cc.Close() }

// translate is the one place where gRPC statuses become storage sentinels.
// ctx is the caller's: when it is done, its error wins.
func (s *Store) translate(ctx context.Context, op, key string, err error) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf("relay %s %q via %s", op, key, s)
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w", what, ctxErr)
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	msg := st.Message()
	switch st.Code() {
	case codes.NotFound:
		return fmt.Errorf("%s: %w: %s", what, storage.ErrNotFound, msg)
	case codes.AlreadyExists:
		return fmt.Errorf("%s: %w: %s", what, storage.ErrExists, msg)
	case codes.PermissionDenied, codes.Unauthenticated:
		return fmt.Errorf("%s: %w: %s", what, storage.ErrPermission, msg)
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return fmt.Errorf("%s: %w: %s", what, storage.ErrUnavailable, msg)
	case codes.ResourceExhausted:
		return fmt.Errorf("%s: %w: %s", what, storage.ErrNoSpace, msg)
	case codes.Canceled:
		return fmt.Errorf("%s: %w: %s", what, context.Canceled, msg)
	case codes.Unimplemented:
		return fmt.Errorf("%s: the server does not serve RelayService (is it a tidemark controller of this version?): %s", what, msg)
	}
	return fmt.Errorf("%s: %s", what, msg)
}

// Put streams the body in frames; see the contract of storage.Writer. A
// body that fails, ends short of size, or is cut off by ctx aborts the
// stream, and the controller then discards what it received.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) (err error) {
	if err := storage.CheckKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("relay put %q: %w", key, err)
	}
	if !opts.RetainUntil.IsZero() {
		// The relay protocol carries no retention yet: refuse rather than
		// store a chunk of an Object Lock repository unlocked.
		return fmt.Errorf("relay put %q: the repository uses Object Lock, which the relay does not carry yet: give the agent direct access to the bucket", key)
	}
	if size < 0 {
		size = -1
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel() // aborts the stream unless it completed
	stream, err := s.client.Put(sctx)
	if err != nil {
		return s.translate(ctx, "put", key, err)
	}
	// send returns the stream's status when the server ended it early.
	send := func(m *v1.RelayServicePutRequest) error {
		if err := stream.Send(m); err != nil {
			if errors.Is(err, io.EOF) {
				_, err = stream.CloseAndRecv()
			}
			return s.translate(ctx, "put", key, err)
		}
		return nil
	}
	if err := send(&v1.RelayServicePutRequest{Frame: &v1.RelayServicePutRequest_Header{Header: &v1.RelayPutHeader{
		Key: key, Size: size, IfNotExists: opts.IfNotExists,
	}}}); err != nil {
		return err
	}
	body := r
	if size >= 0 {
		body = io.LimitReader(r, size)
	}
	var sent int64
	for {
		n := int64(FrameSize)
		if size >= 0 && size-sent < n {
			n = size - sent
		}
		// A fresh buffer per frame: gRPC may hold on to a sent message.
		buf := make([]byte, max(n, 1))
		got, rerr := Fill(body, buf)
		if got > 0 {
			sent += int64(got)
			if err := send(&v1.RelayServicePutRequest{Frame: &v1.RelayServicePutRequest_Data{Data: buf[:got]}}); err != nil {
				return err
			}
		}
		if rerr == nil {
			continue
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			// The caller gave up, whatever the body said.
			if errors.Is(rerr, io.EOF) {
				return fmt.Errorf("relay put %q: %w", key, ctxErr)
			}
			return fmt.Errorf("relay put %q: %w (then the body failed: %w)", key, ctxErr, rerr)
		}
		if !errors.Is(rerr, io.EOF) {
			return fmt.Errorf("relay put %q: reading the body: %w", key, rerr)
		}
		break
	}
	if size >= 0 && sent != size {
		return fmt.Errorf("relay put %q: body ended after %d of %d bytes: %w", key, sent, size, io.ErrUnexpectedEOF)
	}
	if err := send(&v1.RelayServicePutRequest{Frame: &v1.RelayServicePutRequest_End{End: &v1.RelayPutEnd{}}}); err != nil {
		return err
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return s.translate(ctx, "put", key, err)
	}
	return nil
}

// Fill reads into buf until it is full or r fails; the error is r's (io.EOF
// at the end). Both ends of the relay cut their frames with it.
func Fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Get opens a byte range; a missing key fails here, not on the first Read.
// The reader must be closed, which ends the stream.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := storage.CheckKey(key); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("relay get %q: negative offset %d", key, offset)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("relay get %q: %w", key, err)
	}
	if length < 0 {
		length = -1
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := s.client.Get(sctx, &v1.RelayServiceGetRequest{Key: key, Offset: offset, Length: length})
	if err != nil {
		cancel()
		return nil, s.translate(ctx, "get", key, err)
	}
	first, err := stream.Recv()
	if err != nil {
		cancel()
		if errors.Is(err, io.EOF) {
			err = status.Error(codes.Internal, "the stream ended before the object was opened")
		}
		return nil, s.translate(ctx, "get", key, err)
	}
	return &getReader{s: s, ctx: ctx, key: key, stream: stream, cancel: cancel, buf: first.GetData()}, nil
}

// getReader hands out one frame at a time: memory stays at one frame.
type getReader struct {
	s      *Store
	ctx    context.Context
	key    string
	stream grpc.ServerStreamingClient[v1.RelayServiceGetResponse]
	cancel context.CancelFunc
	buf    []byte
	err    error
	once   sync.Once
}

func (g *getReader) Read(p []byte) (int, error) {
	for len(g.buf) == 0 {
		if g.err != nil {
			return 0, g.err
		}
		m, err := g.stream.Recv()
		switch {
		case errors.Is(err, io.EOF):
			g.err = io.EOF
		case err != nil:
			g.err = g.s.translate(g.ctx, "get", g.key, err)
		default:
			g.buf = m.GetData()
		}
	}
	n := copy(p, g.buf)
	g.buf = g.buf[n:]
	return n, nil
}

func (g *getReader) Close() error {
	g.once.Do(func() {
		g.cancel()
		if g.err == nil {
			g.err = errors.New("read after close")
		}
	})
	return nil
}

// Stat returns the object's size and time.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := storage.CheckKey(key); err != nil {
		return storage.ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("relay stat %q: %w", key, err)
	}
	resp, err := s.client.Stat(ctx, &v1.RelayServiceStatRequest{Key: key})
	if err != nil {
		return storage.ObjectInfo{}, s.translate(ctx, "stat", key, err)
	}
	return objectInfo(resp.GetObject()), nil
}

func objectInfo(o *v1.RelayObjectInfo) storage.ObjectInfo {
	oi := storage.ObjectInfo{Key: o.GetKey(), Size: o.GetSize()}
	if o.GetModTime() != nil {
		oi.ModTime = o.GetModTime().AsTime()
	}
	return oi
}

// ObjectInfo converts a storage.ObjectInfo for the wire (the server's half).
func ObjectInfo(oi storage.ObjectInfo) *v1.RelayObjectInfo {
	o := &v1.RelayObjectInfo{Key: oi.Key, Size: oi.Size}
	if !oi.ModTime.IsZero() {
		o.ModTime = timestamppb.New(oi.ModTime)
	}
	return o
}

// List calls fn for every object under prefix, from the calling goroutine.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := storage.CheckPrefix(prefix); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("relay list %q: %w", prefix, err)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream when fn stops the listing
	stream, err := s.client.List(sctx, &v1.RelayServiceListRequest{Prefix: prefix})
	if err != nil {
		return s.translate(ctx, "list", prefix, err)
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return s.translate(ctx, "list", prefix, err)
		}
		for _, o := range m.GetObjects() {
			if err := fn(objectInfo(o)); err != nil {
				return err
			}
		}
	}
}

// Delete removes key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storage.CheckKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("relay delete %q: %w", key, err)
	}
	_, err := s.client.Delete(ctx, &v1.RelayServiceDeleteRequest{Key: key})
	return s.translate(ctx, "delete", key, err)
}
