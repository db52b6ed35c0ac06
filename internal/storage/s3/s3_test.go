package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/tidemark-backup/tidemark/internal/secret"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/storagetest"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

var prefixes atomic.Int64

// env is one MinIO shared by the subtests of TestS3.
type env struct {
	m *testenv.MinIO
}

func (e env) creds() *Credentials {
	return &Credentials{AccessKeyID: e.m.AccessKey, SecretAccessKey: secret.NewString(e.m.SecretKey)}
}

func (e env) location(endpoint string) Location {
	return Location{
		Bucket:   e.m.Bucket,
		Prefix:   fmt.Sprintf("t%d/", prefixes.Add(1)),
		Endpoint: endpoint,
		TLS:      false,
	}
}

// open opens a fresh, empty store (a prefix of its own) at endpoint.
func (e env) open(t *testing.T, endpoint string, cfg Config) *Store {
	t.Helper()
	if cfg.Credentials == nil {
		cfg.Credentials = e.creds()
	}
	st, err := Open(context.Background(), e.location(endpoint), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// client is a plain minio-go client, to look behind the store's back.
func (e env) client(t *testing.T) minio.Core {
	t.Helper()
	c, err := minio.New(e.m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(e.m.AccessKey, e.m.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	return minio.Core{Client: c}
}

// pendingUploads returns the keys of the incomplete multipart uploads in the
// bucket. MinIO lists all of them only for an empty prefix.
func (e env) pendingUploads(t *testing.T) []string {
	t.Helper()
	res, err := e.client(t).ListMultipartUploads(context.Background(), e.m.Bucket, "", "", "", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, u := range res.Uploads {
		keys = append(keys, u.Key)
	}
	return keys
}

func (e env) pendingUploadsOf(t *testing.T, st *Store, key string) int {
	t.Helper()
	// MinIO treats a non-empty prefix as the exact object name.
	res, err := e.client(t).ListMultipartUploads(context.Background(), e.m.Bucket, st.loc.Prefix+key, "", "", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	return len(res.Uploads)
}

func TestS3(t *testing.T) {
	e := env{m: testenv.StartMinIO(t)}

	t.Run("Conformance", func(t *testing.T) {
		storagetest.Run(t, func(t *testing.T) storage.Storage {
			// Small parts, so that multipart uploads get exercised.
			return e.open(t, e.m.Endpoint, Config{PartSize: MinPartSize})
		})
	})
	// On a bucket with Object Lock (so versioned) the contract holds too:
	// a delete removes the object, every version of it.
	e.m.NewLockedBucket(t, "locked")
	t.Run("ConformanceLockedBucket", func(t *testing.T) {
		storagetest.Run(t, func(t *testing.T) storage.Storage {
			loc := e.location(e.m.Endpoint)
			loc.Bucket = "locked"
			st, err := Open(context.Background(), loc, Config{Credentials: e.creds(), PartSize: MinPartSize})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			if err := st.CheckRetention(context.Background()); err != nil {
				t.Fatalf("locked bucket: %v", err)
			}
			return st
		})
	})
	t.Run("SinglePut", func(t *testing.T) { t.Parallel(); testSinglePut(t, e) })
	t.Run("CreateOnlyMultipartRace", func(t *testing.T) { t.Parallel(); testCreateOnlyMultipartRace(t, e) })
	t.Run("MissingBucket", func(t *testing.T) { t.Parallel(); testMissingBucket(t, e) })
	t.Run("WrongCredentials", func(t *testing.T) { t.Parallel(); testWrongCredentials(t, e) })
	t.Run("CutMidUpload", func(t *testing.T) { t.Parallel(); testCutMidUpload(t, e) })
	t.Run("ProxyDiesMidUpload", func(t *testing.T) { t.Parallel(); testProxyDies(t, e) })
	t.Run("StalledRead", func(t *testing.T) { t.Parallel(); testStalledRead(t, e) })

	// After every subtest: no upload was left behind by the failed,
	// canceled and refused puts of the conformance suite and the others.
	t.Cleanup(func() {
		if pending := e.pendingUploads(t); len(pending) != 0 {
			t.Errorf("incomplete multipart uploads left in the bucket: %q", pending)
		}
	})
}

// testSinglePut: objects up to PartSize, known size or not, go as one PUT;
// MinIO marks multipart objects with an ETag ending in -PARTS.
func testSinglePut(t *testing.T, e env) {
	st := e.open(t, e.m.Endpoint, Config{})
	c := e.client(t)
	for _, tc := range []struct {
		n         int
		known     bool
		multipart bool
	}{
		{16 << 20, true, false},
		{16 << 20, false, false},
		{16<<20 + 1, true, true},
		{16<<20 + 1, false, true},
		{3 << 20, false, false},
	} {
		key := fmt.Sprintf("single/%d-%v", tc.n, tc.known)
		data := storagetest.Data(1, tc.n)
		size := int64(tc.n)
		var r io.Reader = bytes.NewReader(data)
		if !tc.known {
			size, r = -1, io.MultiReader(r) // hides Seeker and ReaderAt
		}
		if err := st.Put(context.Background(), key, r, size, storage.PutOptions{IfNotExists: true}); err != nil {
			t.Fatal(err)
		}
		oi, err := c.StatObject(context.Background(), e.m.Bucket, st.loc.Prefix+key, minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(oi.ETag, "-"); got != tc.multipart || oi.Size != int64(tc.n) {
			t.Errorf("%s: ETag %q size %d: multipart %v, want %v", key, oi.ETag, oi.Size, got, tc.multipart)
		}
	}
}

// testCreateOnlyMultipartRace: If-None-Match must reach the completion of a
// multipart upload, or two racing create-only puts of a large object both
// succeed (minio-go's PutObject sends it only when initiating).
func testCreateOnlyMultipartRace(t *testing.T, e env) {
	st := e.open(t, e.m.Endpoint, Config{PartSize: MinPartSize})
	const racers = 4
	for round := range 2 {
		key := fmt.Sprintf("mprace/%d", round)
		errs := make([]error, racers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range racers {
			wg.Go(func() {
				data := storagetest.Data(uint64(i), 11<<20)
				<-start
				errs[i] = st.Put(context.Background(), key, bytes.NewReader(data), int64(len(data)), storage.PutOptions{IfNotExists: true})
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("%s: racers %d and %d both won", key, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, storage.ErrExists):
				t.Fatalf("%s: racer %d: %v", key, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("%s: nobody won", key)
		}
		if !bytes.Equal(storagetest.Get(t, st, key), storagetest.Data(uint64(winner), 11<<20)) {
			t.Errorf("%s does not hold the winner's data", key)
		}
		if n := e.pendingUploadsOf(t, st, key); n != 0 {
			t.Errorf("%s: %d losing uploads not aborted", key, n)
		}
	}
}

func testMissingBucket(t *testing.T, e env) {
	loc := e.location(e.m.Endpoint)
	loc.Bucket = "no-such-bucket"
	_, err := Open(context.Background(), loc, Config{Credentials: e.creds()})
	if !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), "bucket no-such-bucket does not exist: create it first") {
		t.Errorf("open of a missing bucket: got %v", err)
	}

	// Created later, it opens.
	e.m.NewBucket(t, "later-bucket")
	loc.Bucket = "later-bucket"
	st, err := Open(context.Background(), loc, Config{Credentials: e.creds()})
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
}

func testWrongCredentials(t *testing.T, e env) {
	for _, c := range []*Credentials{
		{AccessKeyID: e.m.AccessKey, SecretAccessKey: secret.NewString("wrong-secret-key")},
		{AccessKeyID: "nobody", SecretAccessKey: secret.NewString(e.m.SecretKey)},
	} {
		_, err := Open(context.Background(), e.location(e.m.Endpoint), Config{Credentials: c})
		if !errors.Is(err, storage.ErrPermission) || !strings.Contains(err.Error(), credentialsHint) {
			t.Errorf("open with %s: got %v, want ErrPermission with the hint", c.AccessKeyID, err)
		}
		if err != nil && strings.Contains(err.Error(), c.SecretAccessKey.Reveal()) {
			t.Errorf("error reveals the secret: %v", err)
		}
	}

	// A store whose credentials go bad reports it per operation too.
	st := e.open(t, e.m.Endpoint, Config{})
	bad, err := minio.New(e.m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(e.m.AccessKey, "wrong", ""), MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	st.client, st.core = bad, minio.Core{Client: bad}
	ctx := context.Background()
	errs := map[string]error{}
	errs["put"] = st.Put(ctx, "k", bytes.NewReader([]byte("x")), 1, storage.PutOptions{})
	_, errs["get"] = st.Get(ctx, "k", 0, -1)
	_, errs["stat"] = st.Stat(ctx, "k")
	errs["list"] = st.List(ctx, "", func(storage.ObjectInfo) error { return nil })
	errs["delete"] = st.Delete(ctx, "k")
	for op, err := range errs {
		if !errors.Is(err, storage.ErrPermission) {
			t.Errorf("%s with a wrong secret: got %v, want ErrPermission", op, err)
		}
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	// A closed loopback port: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()

	// A port that accepts and never answers.
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hole.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()

	cfg := Config{
		Credentials:           &Credentials{AccessKeyID: "a", SecretAccessKey: secret.NewString("b")},
		DialTimeout:           time.Second,
		ResponseHeaderTimeout: time.Second,
		RequestTimeout:        2 * time.Second,
	}
	for _, endpoint := range []string{closed, hole.Addr().String()} {
		start := time.Now()
		_, err := Open(context.Background(), Location{Bucket: "bucket", Endpoint: endpoint}, cfg)
		if !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), endpoint) {
			t.Errorf("open at %s: got %v, want ErrUnavailable naming the endpoint", endpoint, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("open at %s took %v", endpoint, d)
		}
	}
}

func TestNoCredentials(t *testing.T) {
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY", "AWS_SECRET_KEY",
		"AWS_SESSION_TOKEN", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"} {
		t.Setenv(v, "")
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Open(ctx, Location{Bucket: "bucket", Endpoint: "127.0.0.1:1"}, Config{})
	if !errors.Is(err, storage.ErrPermission) || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
		t.Errorf("open without credentials: got %v", err)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	c := Credentials{AccessKeyID: "AKID", SecretAccessKey: secret.NewString("s3cr3t-value"), SessionToken: secret.NewString("t0ken-value")}
	var out []string
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		out = append(out, fmt.Sprintf(f, c), fmt.Sprintf(f, &c), fmt.Sprintf(f, c.SecretAccessKey))
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("creds", "c", c, "secret", c.SecretAccessKey)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("creds", "c", c, "secret", c.SecretAccessKey)
	out = append(out, buf.String())
	for _, s := range out {
		if strings.Contains(s, "s3cr3t") || strings.Contains(s, "t0ken") || strings.Contains(s, "733363723374") {
			t.Errorf("secret printed: %s", s)
		}
	}
}

// testCutMidUpload: a connection cut in the middle of an upload fails the put
// with ErrUnavailable and leaves neither an object nor a pending upload.
func testCutMidUpload(t *testing.T, e env) {
	p := startProxy(t, e.m.Endpoint)
	st := e.open(t, p.addr(), Config{PartSize: MinPartSize})
	for _, tc := range []struct {
		name  string
		n     int
		known bool
		cut   int64 // upstream bytes before the cut
	}{
		{"single", 3 << 20, true, 1 << 20},
		{"multipart-first-part", 12 << 20, true, 2 << 20},
		{"multipart-second-part", 12 << 20, true, 7 << 20},
		{"multipart-unknown", 12 << 20, false, 7 << 20},
		{"multipart-last-part", 12 << 20, false, 11 << 20},
	} {
		key := "cut/" + tc.name
		data := storagetest.Data(7, tc.n)
		size := int64(tc.n)
		var r io.Reader = bytes.NewReader(data)
		if !tc.known {
			size, r = -1, io.MultiReader(r)
		}
		p.cutAfter(tc.cut)
		err := st.Put(context.Background(), key, r, size, storage.PutOptions{IfNotExists: true})
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("%s: put through a cut connection: got %v, want ErrUnavailable", key, err)
		}
		if !p.wasCut() {
			t.Fatalf("%s: the proxy never cut (%d bytes passed)", key, p.up.Load())
		}
		if _, err := st.Stat(context.Background(), key); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s: after the cut: stat: %v, want ErrNotFound", key, err)
		}
		if n := e.pendingUploadsOf(t, st, key); n != 0 {
			t.Errorf("%s: %d multipart uploads left pending", key, n)
		}
		// The store still works once the network does.
		if err := st.Put(context.Background(), key, bytes.NewReader(data), int64(len(data)), storage.PutOptions{IfNotExists: true}); err != nil {
			t.Fatalf("%s: put after the cut: %v", key, err)
		}
	}
}

// testProxyDies: when the network stays down the abort cannot be sent either;
// the error says so, and AbortStaleUploads removes the upload later.
func testProxyDies(t *testing.T, e env) {
	p := startProxy(t, e.m.Endpoint)
	st := e.open(t, p.addr(), Config{PartSize: MinPartSize, RequestTimeout: 5 * time.Second, DialTimeout: time.Second})
	p.killAfter(7 << 20)
	key := "dies/k"
	err := st.Put(context.Background(), key, bytes.NewReader(storagetest.Data(1, 12<<20)), 12<<20, storage.PutOptions{})
	if !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "aborting multipart upload") {
		t.Errorf("put through a dead proxy: got %v, want ErrUnavailable noting the failed abort", err)
	}
	if n := e.pendingUploadsOf(t, st, key); n != 1 {
		t.Fatalf("pending uploads: %d, want the one that could not be aborted", n)
	}

	direct := e.open(t, e.m.Endpoint, Config{})
	direct.loc.Prefix = st.loc.Prefix
	if n, err := direct.AbortStaleUploads(context.Background(), time.Hour); err != nil || n != 0 {
		t.Errorf("AbortStaleUploads(1h): aborted %d, %v; want 0 (the upload is recent)", n, err)
	}
	if n, err := direct.AbortStaleUploads(context.Background(), 0); err != nil || n != 1 {
		t.Errorf("AbortStaleUploads(0): aborted %d, %v; want 1", n, err)
	}
	if n := e.pendingUploadsOf(t, st, key); n != 0 {
		t.Errorf("pending uploads after AbortStaleUploads: %d", n)
	}
}

// testStalledRead: a body that stops arriving fails the read after
// RequestTimeout instead of hanging.
func testStalledRead(t *testing.T, e env) {
	p := startProxy(t, e.m.Endpoint)
	st := e.open(t, p.addr(), Config{RequestTimeout: time.Second})
	data := storagetest.Data(1, 8<<20)
	storagetest.Put(t, st, "stall", data)
	rc, err := st.Get(context.Background(), "stall", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	if _, err := io.ReadFull(rc, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	// A slow consumer is not a stall: time between reads does not count.
	time.Sleep(1500 * time.Millisecond)
	if _, err := io.ReadFull(rc, make([]byte, 1024)); err != nil {
		t.Fatalf("read after a pause of the reader: %v", err)
	}
	p.freeze()
	start := time.Now()
	_, err = io.Copy(io.Discard, rc)
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("read of a stalled body: got %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("stalled read failed after %v", d)
	}
}

// proxy is a loopback TCP proxy that can cut its connections.
type proxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	up       atomic.Int64 // client-to-server bytes since the last arming
	limit    atomic.Int64 // when > 0: act once up passes it
	kill     atomic.Bool  // act by dying (stop accepting) rather than cutting
	cut      atomic.Bool  // whether the last arming fired
	frozen   atomic.Bool
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	closed   bool
	wg       sync.WaitGroup
	unfreeze chan struct{}
}

func startProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}, unfreeze: make(chan struct{})}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		p.die()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) cutAfter(n int64) {
	p.up.Store(0)
	p.cut.Store(false)
	p.limit.Store(n)
}

func (p *proxy) killAfter(n int64) {
	p.kill.Store(true)
	p.cutAfter(n)
}

func (p *proxy) wasCut() bool { return p.cut.Load() }

// freeze stops forwarding in both directions, keeping the connections open.
func (p *proxy) freeze() { p.frozen.Store(true) }

func (p *proxy) accept() {
	testenv.ProxyAccept(p.ln, p.target, func(c, s net.Conn) bool {
		if !p.track(c, s) {
			return false
		}
		p.wg.Go(func() { p.pipe(s, c, true) })
		p.wg.Go(func() { p.pipe(c, s, false) })
		return true
	})
}

func (p *proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range cs {
			_ = c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

// pipe copies src to dst, counting upstream bytes and acting at the limit.
func (p *proxy) pipe(dst, src net.Conn, upstream bool) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			for p.frozen.Load() {
				select {
				case <-p.unfreeze:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
			if upstream {
				if lim := p.limit.Load(); lim > 0 && p.up.Add(int64(n)) > lim {
					p.limit.Store(0)
					p.cut.Store(true)
					if p.kill.Load() {
						p.die()
					} else {
						p.cutAll()
					}
					return
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) cutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

func (p *proxy) die() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		_ = p.ln.Close()
		close(p.unfreeze)
	}
	p.mu.Unlock()
	p.cutAll()
}
