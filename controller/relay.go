package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/metrics"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/storage/relay"
	"github.com/tidemark-backup/tidemark/internal/storage/retry"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// errNoRepo answers every relay call on a node started without --repo.
var errNoRepo = errors.New("this controller has no --repo; start it with --repo URI")

// RelayServer serves RelayService from one storage.Storage: the node's
// --repo backend. It is not a Raft write, so every node (follower or
// leader) serves it. Safe for concurrent use.
type RelayServer struct {
	v1.UnimplementedRelayServiceServer

	// open opens the backend; nil: the node has no --repo.
	open func(ctx context.Context) (storage.Storage, error)
	// metrics counts the bytes relayed (nil: not counted).
	metrics *metrics.Registry

	mu     sync.Mutex
	store  storage.Storage
	owned  bool // store was opened here, and close closes it
	closed bool

	// The repository the store holds, named in every answer's header
	// (relay.RepositoryHeader), and when it was read.
	idMu sync.Mutex
	id   string
	idAt time.Time
}

// idRefresh is how long a read repository id is trusted: an id, once a
// store has one, does not change (a store emptied and initialized again
// does), and a store without one is read again soon, as `repo init` may
// run through this very relay.
const (
	idRefresh   = time.Minute
	noIDRefresh = time.Second
)

// repositoryID is the repository the node's --repo holds ("" when it has
// none, holds none yet, or cannot be read now).
func (r *RelayServer) repositoryID(ctx context.Context) string {
	if r.open == nil {
		return ""
	}
	st, err := r.backend(ctx)
	if err != nil {
		return ""
	}
	return r.header(ctx, st).Get(relay.RepositoryHeader)[0]
}

// header names the repository st holds, for a client that compares the
// controllers it fails over between. An unreadable config names none: the
// call itself then meets the same trouble and says so.
func (r *RelayServer) header(ctx context.Context, st storage.Storage) metadata.MD {
	r.idMu.Lock()
	defer r.idMu.Unlock()
	wait := idRefresh
	if r.id == "" {
		wait = noIDRefresh
	}
	if r.idAt.IsZero() || time.Since(r.idAt) > wait {
		if id, err := archive.RepositoryID(ctx, st); err == nil {
			r.id = id
		}
		r.idAt = time.Now()
	}
	return metadata.Pairs(relay.RepositoryHeader, r.id)
}

// NewRelayServer serves store (nil: FailedPrecondition for every call, as a
// node without --repo). The caller keeps ownership of store.
func NewRelayServer(store storage.Storage) *RelayServer {
	r := &RelayServer{store: store}
	if store != nil {
		r.open = func(context.Context) (storage.Storage, error) { return store, nil }
	}
	return r
}

// newRepoRelay serves cfg.Repo, opened on first use (an unreachable S3 must
// not stop the node from starting) and again after a failed open; close
// closes it.
func newRepoRelay(cfg Config) *RelayServer {
	r := &RelayServer{metrics: cfg.Metrics}
	if cfg.Repo != "" {
		uri := cfg.Repo
		r.open = func(ctx context.Context) (storage.Storage, error) {
			st, err := location.Open(ctx, uri, location.Options{Create: true, Metrics: cfg.Metrics,
				Retry: retry.Options{Logger: cfg.Logger}})
			if err != nil {
				return nil, fmt.Errorf("opening --repo %s: %w", location.Redact(uri), err)
			}
			return st, nil
		}
	}
	return r
}

// backend returns the store, opening it if need be.
func (r *RelayServer) backend(ctx context.Context) (storage.Storage, error) {
	if r.open == nil {
		return nil, status.Error(codes.FailedPrecondition, errNoRepo.Error())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, status.Error(codes.Unavailable, errShutdown.Error())
	}
	if r.store == nil {
		st, err := r.open(ctx)
		if err != nil {
			return nil, relayStatus(err)
		}
		r.store, r.owned = st, true
	}
	return r.store, nil
}

// close stops serving and closes a store the server opened itself.
func (r *RelayServer) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed && r.owned {
		_ = r.store.Close()
	}
	r.closed = true
}

// relayStatus turns a backend error into the status a relay handler
// returns, with the one code table (codeTable): the relay server also runs
// outside a controller's interceptors (tests, benchmarks).
func relayStatus(err error) error { return toStatus(err) }

func badRelayArg(err error) error { return status.Error(codes.InvalidArgument, err.Error()) }

// errBadPutStream: the client broke the Put framing.
var errBadPutStream = errors.New("invalid put stream")

// Put reads the header, then hands the backend a reader over the data
// frames that fails unless the stream delivers the whole object: size bytes
// (known size) or the end frame (unknown size). A canceled or broken stream
// thus makes the backend's Put fail, and the backend discards the object.
func (r *RelayServer) Put(stream v1.RelayService_PutServer) error {
	st, err := r.backend(stream.Context())
	if err != nil {
		return err
	}
	_ = stream.SetHeader(r.header(stream.Context(), st))
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return badRelayArg(fmt.Errorf("%w: no header", errBadPutStream))
		}
		return relayStatus(err)
	}
	h := first.GetHeader()
	if h == nil {
		return badRelayArg(fmt.Errorf("%w: the first message must be the header", errBadPutStream))
	}
	if err := storage.CheckKey(h.GetKey()); err != nil {
		return badRelayArg(err)
	}
	size := h.GetSize()
	if size < 0 {
		size = -1
	}
	body := &putBody{stream: stream, key: h.GetKey(), size: size}
	err = st.Put(stream.Context(), h.GetKey(), body, size, storage.PutOptions{IfNotExists: h.GetIfNotExists()})
	r.metrics.RelayBytes("in", int(body.got))
	if err != nil {
		if body.err != nil && !errors.Is(err, body.err) {
			// The stream's failure is the cause (and sets the code); the
			// backend's is the symptom.
			st := status.Convert(relayStatus(body.err))
			return status.Error(st.Code(), st.Message()+" (backend: "+err.Error()+")")
		}
		return relayStatus(err)
	}
	return stream.SendAndClose(&v1.RelayServicePutResponse{})
}

// putBody is the body of one relayed Put: one frame in memory at a time.
type putBody struct {
	stream v1.RelayService_PutServer
	key    string
	size   int64 // -1: unknown
	got    int64
	buf    []byte
	ended  bool
	err    error // sticky
}

func (b *putBody) Read(p []byte) (int, error) {
	for len(b.buf) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		if b.ended || (b.size >= 0 && b.got == b.size) {
			// A known size is complete: the backend may commit without
			// waiting for the end frame.
			return 0, io.EOF
		}
		m, err := b.stream.Recv()
		switch {
		case errors.Is(err, io.EOF):
			b.err = fmt.Errorf("put %s: %w: the stream ended after %d bytes without its end frame: %w", b.key, errBadPutStream, b.got, io.ErrUnexpectedEOF)
		case err != nil:
			// Canceled by the client or the connection broke.
			b.err = fmt.Errorf("put %s: receiving: %w", b.key, fromStatus(err))
		case m.GetHeader() != nil:
			b.err = fmt.Errorf("put %s: %w: a second header", b.key, errBadPutStream)
		case m.GetEnd() != nil:
			if b.size >= 0 && b.got != b.size {
				b.err = fmt.Errorf("put %s: %w: end frame after %d of %d bytes: %w", b.key, errBadPutStream, b.got, b.size, io.ErrUnexpectedEOF)
			}
			b.ended = true
		default:
			d := m.GetData()
			switch {
			case len(d) > relay.FrameSize:
				b.err = fmt.Errorf("put %s: %w: a frame of %d bytes (at most %d)", b.key, errBadPutStream, len(d), relay.FrameSize)
			case b.size >= 0 && b.got+int64(len(d)) > b.size:
				b.err = fmt.Errorf("put %s: %w: more than the %d bytes declared", b.key, errBadPutStream, b.size)
			default:
				b.got += int64(len(d))
				b.buf = d
			}
		}
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}

// fromStatus turns a receive error back into a context error where it is
// one, so that the backend reports cancellation as such.
func fromStatus(err error) error {
	switch status.Code(err) {
	case codes.Canceled:
		return fmt.Errorf("%w: %w", context.Canceled, err)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}

// Get sends one empty frame once the object is open, then the range.
func (r *RelayServer) Get(req *v1.RelayServiceGetRequest, stream v1.RelayService_GetServer) error {
	ctx := stream.Context()
	st, err := r.backend(ctx)
	if err != nil {
		return err
	}
	_ = stream.SetHeader(r.header(ctx, st))
	if err := storage.CheckKey(req.GetKey()); err != nil {
		return badRelayArg(err)
	}
	if req.GetOffset() < 0 {
		return badRelayArg(fmt.Errorf("get %s: negative offset %d", req.GetKey(), req.GetOffset()))
	}
	rc, err := st.Get(ctx, req.GetKey(), req.GetOffset(), req.GetLength())
	if err != nil {
		return relayStatus(err)
	}
	defer func() { _ = rc.Close() }()
	if err := stream.Send(&v1.RelayServiceGetResponse{}); err != nil {
		return err
	}
	for {
		// A fresh buffer per frame: gRPC may hold on to a sent message.
		buf := make([]byte, relay.FrameSize)
		n, rerr := relay.Fill(rc, buf)
		if n > 0 {
			if err := stream.Send(&v1.RelayServiceGetResponse{Data: buf[:n]}); err != nil {
				return err
			}
			r.metrics.RelayBytes("out", n)
		}
		if errors.Is(rerr, io.EOF) {
			return nil
		}
		if rerr != nil {
			return relayStatus(rerr)
		}
	}
}

// Stat returns one object's info.
func (r *RelayServer) Stat(ctx context.Context, req *v1.RelayServiceStatRequest) (*v1.RelayServiceStatResponse, error) {
	st, err := r.backend(ctx)
	if err != nil {
		return nil, err
	}
	_ = grpc.SetHeader(ctx, r.header(ctx, st))
	if err := storage.CheckKey(req.GetKey()); err != nil {
		return nil, badRelayArg(err)
	}
	oi, err := st.Stat(ctx, req.GetKey())
	if err != nil {
		return nil, relayStatus(err)
	}
	return &v1.RelayServiceStatResponse{Object: relay.ObjectInfo(oi)}, nil
}

// List streams the objects under the prefix in batches.
func (r *RelayServer) List(req *v1.RelayServiceListRequest, stream v1.RelayService_ListServer) error {
	ctx := stream.Context()
	st, err := r.backend(ctx)
	if err != nil {
		return err
	}
	_ = stream.SetHeader(r.header(ctx, st))
	if err := storage.CheckPrefix(req.GetPrefix()); err != nil {
		return badRelayArg(err)
	}
	batch := &v1.RelayServiceListResponse{}
	flush := func() error {
		if len(batch.Objects) == 0 {
			return nil
		}
		err := stream.Send(batch)
		batch = &v1.RelayServiceListResponse{}
		return err
	}
	err = st.List(ctx, req.GetPrefix(), func(oi storage.ObjectInfo) error {
		batch.Objects = append(batch.Objects, relay.ObjectInfo(oi))
		if len(batch.Objects) >= relay.ListBatch {
			return flush()
		}
		return nil
	})
	if err != nil {
		return relayStatus(err)
	}
	return relayStatus(flush())
}

// Delete removes one object.
func (r *RelayServer) Delete(ctx context.Context, req *v1.RelayServiceDeleteRequest) (*v1.RelayServiceDeleteResponse, error) {
	st, err := r.backend(ctx)
	if err != nil {
		return nil, err
	}
	_ = grpc.SetHeader(ctx, r.header(ctx, st))
	if err := storage.CheckKey(req.GetKey()); err != nil {
		return nil, badRelayArg(err)
	}
	if err := st.Delete(ctx, req.GetKey()); err != nil {
		return nil, relayStatus(err)
	}
	return &v1.RelayServiceDeleteResponse{}, nil
}
