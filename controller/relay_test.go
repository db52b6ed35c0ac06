package controller_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/metrics"
	"github.com/tidemark-backup/tidemark/internal/secret"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/storage/relay"
	"github.com/tidemark-backup/tidemark/internal/storage/s3"
	"github.com/tidemark-backup/tidemark/internal/storage/storagetest"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// serveRelay serves backend through a RelayService on a loopback listener
// and returns its address.
func serveRelay(t testing.TB, backend storage.Storage) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(testCA(t).Source(t, testenv.Controller("relay")).ServerConfig())))
	v1.RegisterRelayServiceServer(gs, controller.NewRelayServer(backend))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(lis)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-done
	})
	return lis.Addr().String()
}

// agentRelay is an agent's relay options.
func agentRelay(t testing.TB) relay.Options {
	return relay.Options{TLS: testCA(t).Source(t, testenv.Agent("db1")).ClientConfig()}
}

// openRelay returns a relay client over addrs.
func openRelay(t testing.TB, addrs ...string) *relay.Store {
	t.Helper()
	st, err := relay.Open(addrs, agentRelay(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func newFileStore(t testing.TB) storage.Storage {
	t.Helper()
	st, err := file.Open(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func TestRelayConformanceFile(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		return openRelay(t, serveRelay(t, newFileStore(t)))
	})
}

func TestRelayConformanceS3(t *testing.T) {
	m := testenv.StartMinIO(t)
	var n atomic.Int64
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		loc := s3.Location{Bucket: m.Bucket, Prefix: fmt.Sprintf("relay%d/", n.Add(1)), Endpoint: m.Endpoint}
		backend, err := s3.Open(context.Background(), loc, s3.Config{
			Credentials: &s3.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: secret.NewString(m.SecretKey)},
			PartSize:    s3.MinPartSize,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = backend.Close() })
		return openRelay(t, serveRelay(t, backend))
	})
}

// TestRelayArchive writes a backup through relay:// (the registry, the retry
// wrapper, the client, the server) and reads it back both through the relay
// and directly from the backend: the same archive either way.
func TestRelayArchive(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	backend, err := file.Open(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = backend.Close() })
	relayed, err := location.Open(ctx, "relay://"+serveRelay(t, backend), location.Options{Relay: agentRelay(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = relayed.Close() })

	repo, err := archive.Init(ctx, relayed, archive.InitOptions{ChunkSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	streams := map[string][]byte{
		"schema":  []byte("CREATE TABLE t (id INT PRIMARY KEY);\n"),
		"db.t.0":  storagetest.Data(7, 5<<20+123),
		"db.t.1":  bytes.Repeat([]byte("same chunk "), 300000), // dedups
		"db.none": nil,
	}
	m, err := repo.WithBackup(ctx, archive.BackupOptions{Engine: "test", Instance: "db1"}, func(ctx context.Context, b *archive.Backup) error {
		for name, data := range streams {
			w, err := b.Stream(name, nil)
			if err != nil {
				return err
			}
			if _, err := w.Write(data); err != nil {
				return err
			}
			if err := w.Close(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("backup through relay: %v", err)
	}

	direct, err := archive.Open(ctx, backend, archive.Secret{})
	if err != nil {
		t.Fatalf("opening the relayed repository directly: %v", err)
	}
	defer direct.Close()
	for _, r := range []struct {
		name string
		repo *archive.Repo
	}{{"relay", repo}, {"direct", direct}} {
		got, err := r.repo.LoadManifest(ctx, m.GetBackupId())
		if err != nil {
			t.Fatalf("%s: load manifest: %v", r.name, err)
		}
		for name, want := range streams {
			rc, err := r.repo.OpenStream(ctx, got, name, archive.ReadOptions{})
			if err != nil {
				t.Fatalf("%s: open stream %s: %v", r.name, name, err)
			}
			h := sha256.New()
			_, err = io.Copy(h, rc)
			_ = rc.Close()
			if err != nil {
				t.Fatalf("%s: read stream %s: %v", r.name, name, err)
			}
			if sha256.Sum256(want) != [32]byte(h.Sum(nil)) {
				t.Errorf("%s: stream %s differs", r.name, name)
			}
		}
	}
}

// watchedStore reports every Put's result.
type watchedStore struct {
	storage.Storage
	puts chan error
}

func (w *watchedStore) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	err := w.Storage.Put(ctx, key, r, size, opts)
	w.puts <- err
	return err
}

// TestRelayCutMidPut cuts the connection while a put streams: the client
// fails, the server's backend put fails, and no object is left.
func TestRelayCutMidPut(t *testing.T) {
	for _, size := range []int64{-1, 8 << 20} {
		t.Run(fmt.Sprintf("size=%d", size), func(t *testing.T) {
			backend := &watchedStore{Storage: newFileStore(t), puts: make(chan error, 1)}
			p := startCutProxy(t, serveRelay(t, backend))
			st := openRelay(t, p.addr())

			all := storagetest.Data(1, 8<<20)
			body := &stallingBody{data: all[:3<<20], rest: all[3<<20:], stalled: make(chan struct{}), release: make(chan struct{})}
			errc := make(chan error, 1)
			go func() {
				errc <- st.Put(context.Background(), "cut/obj", body, size, storage.PutOptions{})
			}()
			<-body.stalled
			time.Sleep(100 * time.Millisecond) // let the frames reach the server
			p.cut()

			// The server sees the stream break and its backend put fails,
			// while the client still waits for its body.
			select {
			case err := <-backend.puts:
				if err == nil {
					t.Fatal("the server committed a put whose stream was cut")
				}
				t.Logf("server-side put: %v", err)
			case <-time.After(testenv.Wait(10 * time.Second)):
				t.Fatal("the server-side put did not end")
			}
			// The body goes on; the client finds the stream gone.
			close(body.release)
			select {
			case err := <-errc:
				if err == nil {
					t.Fatal("put across a cut connection: no error")
				}
				if !errors.Is(err, storage.ErrUnavailable) {
					t.Errorf("put across a cut connection: got %v, want ErrUnavailable", err)
				}
			case <-time.After(testenv.Wait(10 * time.Second)):
				t.Fatal("put across a cut connection did not return")
			}
			if _, err := backend.Stat(context.Background(), "cut/obj"); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("stat after a cut put: got %v, want ErrNotFound", err)
			}
			var left []string
			_ = backend.List(context.Background(), "", func(oi storage.ObjectInfo) error {
				left = append(left, oi.Key)
				return nil
			})
			if len(left) != 0 {
				t.Errorf("objects left after a cut put: %q", left)
			}
		})
	}
}

// stallingBody returns data, blocks until released, then returns rest.
type stallingBody struct {
	data, rest []byte
	stalled    chan struct{}
	release    chan struct{}
	once       sync.Once
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if len(b.data) == 0 && b.rest != nil {
		b.once.Do(func() { close(b.stalled) })
		<-b.release
		b.data, b.rest = b.rest, nil
	}
	if len(b.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

// cutProxy forwards TCP connections to target until cut, which closes them
// all and refuses new ones.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	isCut  bool
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	go p.accept()
	t.Cleanup(p.cut)
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	testenv.ProxyAccept(p.ln, p.target, func(c, u net.Conn) bool {
		p.mu.Lock()
		if p.isCut {
			p.mu.Unlock()
			return false
		}
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(u, c); _ = u.Close() }()
		go func() { _, _ = io.Copy(c, u); _ = c.Close() }()
		return true
	})
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isCut = true
	_ = p.ln.Close()
	for _, c := range p.conns {
		_ = c.Close()
	}
}

// TestRelayFailover: the first address is dead, the second serves.
func TestRelayFailover(t *testing.T) {
	dead := testenv.FreeAddr(t)
	st := openRelay(t, dead, serveRelay(t, newFileStore(t)))
	storagetest.Put(t, st, "k", []byte("v"))
	if got := storagetest.Get(t, st, "k"); string(got) != "v" {
		t.Errorf("get through the second address: %q", got)
	}
}

// TestRelayNoServer: no address answers: a transient error.
func TestRelayNoServer(t *testing.T) {
	st := openRelay(t, testenv.FreeAddr(t))
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(10*time.Second))
	defer cancel()
	if _, err := st.Stat(ctx, "k"); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("stat with no server: got %v, want ErrUnavailable", err)
	}
}

// TestRelayController: a real controller node serves its --repo over
// relay; without --repo it says how to fix that.
func TestRelayController(t *testing.T) {
	t.Run("NoRepo", func(t *testing.T) {
		srv, _ := startInProcess(t, nil)
		st := openRelay(t, srv.Addr())
		_, err := st.Stat(context.Background(), "config")
		if err == nil || !strings.Contains(err.Error(), "this controller has no --repo; start it with --repo URI") {
			t.Errorf("stat through a controller without --repo: got %v", err)
		}
		if storage.IsTransient(err) || errors.Is(err, storage.ErrNotFound) {
			t.Errorf("no --repo: %v must be neither transient nor not-found", err)
		}
		cc, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(agentCreds(t, "db1")))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cc.Close() }()
		_, err = v1.NewRelayServiceClient(cc).Stat(context.Background(), &v1.RelayServiceStatRequest{Key: "config"})
		wantCode(t, err, codes.FailedPrecondition, "start it with --repo URI")
	})
	t.Run("Repo", func(t *testing.T) {
		dir := t.TempDir() + "/repo" // created by the controller on first use
		reg := metrics.New()
		srv, _ := startInProcess(t, func(c *controller.Config) { c.Repo, c.Metrics = "file://"+dir, reg })
		st, err := location.Open(context.Background(), "relay://"+srv.Addr(), location.Options{Relay: agentRelay(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		data := storagetest.Data(3, 3<<20+1)
		storagetest.Put(t, st, "chunks/ab/x", data)
		if !bytes.Equal(storagetest.Get(t, st, "chunks/ab/x"), data) {
			t.Error("relayed object differs")
		}
		backend, err := file.Open(dir, file.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = backend.Close() }()
		if !bytes.Equal(storagetest.Get(t, backend, "chunks/ab/x"), data) {
			t.Error("the object in the controller's --repo differs")
		}
		// The bytes relayed each way are counted (tidemark_relay_bytes_total).
		for _, direction := range []string{"in", "out"} {
			if n := labeledCounter(t, reg, "tidemark_relay_bytes_total", "direction", direction); n < float64(len(data)) {
				t.Errorf("tidemark_relay_bytes_total{direction=%q} = %v, want at least the %d bytes put and got", direction, n, len(data))
			}
		}
	})
	t.Run("RelayRepoRefused", func(t *testing.T) {
		cfg := controller.DefaultConfig()
		cfg.DataDir, cfg.Repo = t.TempDir(), "relay://127.0.0.1:7000"
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "relay:// is for agents") {
			t.Errorf("--repo relay://: got %v", err)
		}
	})
}

// TestRelayBadStreams: the server refuses broken put framing.
func TestRelayBadStreams(t *testing.T) {
	backend := newFileStore(t)
	cc, err := grpc.NewClient(serveRelay(t, backend), grpc.WithTransportCredentials(agentCreds(t, "db1")))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cc.Close() }()
	c := v1.NewRelayServiceClient(cc)
	header := func(key string, size int64) *v1.RelayServicePutRequest {
		return &v1.RelayServicePutRequest{Frame: &v1.RelayServicePutRequest_Header{Header: &v1.RelayPutHeader{Key: key, Size: size}}}
	}
	data := func(b []byte) *v1.RelayServicePutRequest {
		return &v1.RelayServicePutRequest{Frame: &v1.RelayServicePutRequest_Data{Data: b}}
	}
	end := &v1.RelayServicePutRequest{Frame: &v1.RelayServicePutRequest_End{End: &v1.RelayPutEnd{}}}
	for _, tc := range []struct {
		name string
		msgs []*v1.RelayServicePutRequest
		want string
	}{
		{"no-header", []*v1.RelayServicePutRequest{data([]byte("x")), end}, "the first message must be the header"},
		{"empty", nil, "no header"},
		{"bad-key", []*v1.RelayServicePutRequest{header("../x", 1), data([]byte("x")), end}, "invalid object key"},
		{"no-end-unknown", []*v1.RelayServicePutRequest{header("k", -1), data([]byte("x"))}, "without its end frame"},
		{"short-known", []*v1.RelayServicePutRequest{header("k", 5), data([]byte("x")), end}, "end frame after 1 of 5 bytes"},
		{"long-known", []*v1.RelayServicePutRequest{header("k", 1), data([]byte("xy")), end}, "more than the 1 bytes declared"},
		{"big-frame", []*v1.RelayServicePutRequest{header("k", -1), data(make([]byte, relay.FrameSize+1)), end}, "a frame of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := c.Put(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tc.msgs {
				if err := s.Send(m); err != nil {
					break
				}
			}
			_, err = s.CloseAndRecv()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want InvalidArgument saying %q", err, tc.want)
			}
			if _, err := backend.Stat(context.Background(), "k"); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("a refused put left an object: %v", err)
			}
		})
	}
}

// errStore fails every Stat with err.
type errStore struct {
	storage.Storage
	err error
}

func (e errStore) Stat(context.Context, string) (storage.ObjectInfo, error) {
	return storage.ObjectInfo{}, e.err
}

// TestRelaySentinels: each sentinel a backend returns reaches the relay
// client as the same sentinel (server table, then client translation).
func TestRelaySentinels(t *testing.T) {
	for _, sentinel := range []error{storage.ErrNotFound, storage.ErrExists, storage.ErrPermission, storage.ErrUnavailable, storage.ErrNoSpace} {
		backend := errStore{Storage: newFileStore(t), err: fmt.Errorf("stat s3://b/k: %w", sentinel)}
		st := openRelay(t, serveRelay(t, backend))
		_, err := st.Stat(context.Background(), "k")
		if !errors.Is(err, sentinel) {
			t.Errorf("backend %v: relay client got %v", sentinel, err)
		}
		if got, want := storage.IsTransient(err), errors.Is(sentinel, storage.ErrUnavailable); got != want {
			t.Errorf("backend %v: transient %v, want %v", sentinel, got, want)
		}
	}
	backend := errStore{Storage: newFileStore(t), err: errors.New("disk on fire")}
	_, err := openRelay(t, serveRelay(t, backend)).Stat(context.Background(), "k")
	if err == nil || !strings.Contains(err.Error(), "disk on fire") || storage.IsTransient(err) {
		t.Errorf("backend failure with no sentinel: got %v, want a permanent error with its message", err)
	}
}

// TestRelayUnlikeRepositories: a relay client that fails over from a
// controller serving one repository to one serving another refuses, naming
// both, rather than split a backup between them; between controllers
// sharing a repository it fails over as before.
func TestRelayUnlikeRepositories(t *testing.T) {
	ctx := context.Background()
	initRepo := func(st storage.Storage) {
		r, err := archive.Init(ctx, st, archive.InitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
	}
	// serve starts a relay over st that the test can stop.
	serve := func(st storage.Storage) (string, func()) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(testCA(t).Source(t, testenv.Controller("relay")).ServerConfig())))
		v1.RegisterRelayServiceServer(gs, controller.NewRelayServer(st))
		go func() { _ = gs.Serve(lis) }()
		t.Cleanup(gs.Stop)
		return lis.Addr().String(), gs.Stop
	}
	// afterFailover retries while the client is still reconnecting.
	afterFailover := func(op func() error) error {
		var err error
		deadline := time.Now().Add(testenv.Wait(10 * time.Second))
		for time.Now().Before(deadline) {
			if err = op(); err == nil || !storage.IsTransient(err) {
				return err
			}
			time.Sleep(50 * time.Millisecond)
		}
		return err
	}

	a, b := newFileStore(t), newFileStore(t)
	initRepo(a)
	initRepo(b)
	idA, _ := archive.RepositoryID(ctx, a)
	idB, _ := archive.RepositoryID(ctx, b)
	addrA, stopA := serve(a)
	addrB, _ := serve(b)
	st := openRelay(t, addrA, addrB)
	storagetest.Put(t, st, "chunks/aa/one", []byte("1"))
	stopA()
	err := afterFailover(func() error { _, err := st.Stat(ctx, "chunks/aa/one"); return err })
	if err == nil || !strings.Contains(err.Error(), "serves repository "+idB) || !strings.Contains(err.Error(), "served repository "+idA) ||
		!strings.Contains(err.Error(), "same --repo") || storage.IsTransient(err) {
		t.Fatalf("failover to a controller of another repository: %v", err)
	}

	shared := newFileStore(t)
	initRepo(shared)
	addrC, stopC := serve(shared)
	addrD, _ := serve(shared)
	st2 := openRelay(t, addrC, addrD)
	storagetest.Put(t, st2, "chunks/aa/two", []byte("2"))
	stopC()
	if err := afterFailover(func() error { _, err := st2.Stat(ctx, "chunks/aa/two"); return err }); err != nil {
		t.Fatalf("failover between controllers of one repository: %v", err)
	}
}

// labeledCounter is the value of the counter name's series whose label
// key is value in reg, or -1 when there is none.
func labeledCounter(t *testing.T, reg *metrics.Registry, name, key, value string) float64 {
	t.Helper()
	fams, err := reg.Prometheus().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == key && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}
