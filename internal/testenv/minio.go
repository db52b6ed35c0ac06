package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// MinIO is a running single-drive MinIO server started by StartMinIO.
type MinIO struct {
	Endpoint  string // "127.0.0.1:PORT", plain HTTP
	AccessKey string
	SecretKey string
	Bucket    string // created before StartMinIO returns
	DataDir   string

	name    string
	dir     string
	logPath string

	mu   sync.Mutex
	proc *process
}

const minioStartTimeout = 30 * time.Second // scaled by Wait

// StartMinIO starts MinIO on a free loopback port with random credentials and
// waits until it has created the bucket m.Bucket. A cleanup registered on t
// kills the server and removes its data.
func StartMinIO(t testing.TB) *MinIO {
	t.Helper()
	bin := RequireBinary(t, "minio", MinIOInstallHint)
	dir, err := os.MkdirTemp("", "tidemark-minio-"+dirLabel(t.Name())+"-")
	if err != nil {
		t.Fatal(err)
	}
	m := &MinIO{
		AccessKey: "tm" + randomHex(t, 8),
		SecretKey: randomHex(t, 20),
		Bucket:    "tidemark-test",
		DataDir:   filepath.Join(dir, "data"),
		name:      t.Name(),
		dir:       dir,
		logPath:   filepath.Join(dir, "minio.log"),
	}
	t.Cleanup(func() { m.cleanup(t) })
	for attempt := 1; ; attempt++ {
		err := m.start(bin)
		if err == nil {
			return m
		}
		if attempt == 1 && errors.Is(err, errPortInUse) {
			t.Logf("testenv: minio %s: port %s was taken, retrying on another", m.name, m.Endpoint)
			continue
		}
		t.Fatalf("testenv: start minio %s: %v", m.name, err)
	}
}

func (m *MinIO) start(bin string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	console, err := freePort()
	if err != nil {
		return err
	}
	m.Endpoint = "127.0.0.1:" + strconv.Itoa(port)
	var logStart int64
	if fi, err := os.Stat(m.logPath); err == nil {
		logStart = fi.Size()
	}
	cmd := exec.Command(bin, "server", m.DataDir,
		"--address", m.Endpoint,
		"--console-address", "127.0.0.1:"+strconv.Itoa(console),
		// MinIO's default is ~/.minio/certs: keep the test away from $HOME.
		"--certs-dir", filepath.Join(m.dir, "certs"))
	// The developer's own MINIO_* settings (volumes, credentials, KMS) must
	// not reach the test server.
	cmd.Env = childEnv([]string{"MINIO_"},
		"MINIO_ROOT_USER="+m.AccessKey,
		"MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
	)
	p, err := startProcess(cmd, m.logPath)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.proc = p
	m.mu.Unlock()
	if err := m.waitReady(p); err != nil {
		p.kill()
		if logContainsFrom(m.logPath, logStart, "port is already in use", "address already in use") {
			return fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return err
	}
	return nil
}

// waitReady retries creating the first bucket: it succeeds only once the
// object layer is up, which /minio/health/live does not promise.
func (m *MinIO) waitReady(p *process) error {
	c, err := m.client(1)
	if err != nil {
		return err
	}
	timeout := Wait(minioStartTimeout)
	deadline := time.Now().Add(timeout)
	for {
		// Another server on our port would not know our random credentials.
		ctx, cancel := p.attemptContext(2 * time.Second)
		err = c.MakeBucket(ctx, m.Bucket, minio.MakeBucketOptions{})
		cancel()
		// An earlier attempt may have created it before its reply was lost.
		if err == nil || minio.ToErrorResponse(err).Code == "BucketAlreadyOwnedByYou" {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("minio exited during startup (%s)\n%s", p.exitStatus(), p.logTail())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("minio not ready after %v (last error: %w)\n%s", timeout, err, p.logTail())
		}
	}
}

func (m *MinIO) client(maxRetries int) (*minio.Client, error) {
	return minio.New(m.Endpoint, &minio.Options{
		Creds:      credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
		Secure:     false,
		MaxRetries: maxRetries,
	})
}

// NewBucket creates another bucket.
func (m *MinIO) NewBucket(t testing.TB, name string) {
	t.Helper()
	c, err := m.client(0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Wait(30*time.Second))
	defer cancel()
	if err := c.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("testenv: minio %s: create bucket %s: %v", m.name, name, err)
	}
}

// NewLockedBucket creates another bucket with Object Lock enabled (and so
// versioning), as S3 allows only at creation.
func (m *MinIO) NewLockedBucket(t testing.TB, name string) {
	t.Helper()
	c, err := m.client(0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Wait(30*time.Second))
	defer cancel()
	if err := c.MakeBucket(ctx, name, minio.MakeBucketOptions{ObjectLocking: true}); err != nil {
		t.Fatalf("testenv: minio %s: create locked bucket %s: %v", m.name, name, err)
	}
}

// Retention returns the Object Lock mode ("GOVERNANCE", "COMPLIANCE" or "")
// and retain-until date of the current version of bucket/key.
func (m *MinIO) Retention(t testing.TB, bucket, key string) (string, time.Time) {
	t.Helper()
	c, err := m.client(0)
	if err != nil {
		t.Fatal(err)
	}
	mode, until, err := c.GetObjectRetention(context.Background(), bucket, key, "")
	if err != nil {
		t.Fatalf("testenv: minio %s: retention of %s/%s: %v", m.name, bucket, key, err)
	}
	var ms string
	var u time.Time
	if mode != nil {
		ms = string(*mode)
	}
	if until != nil {
		u = *until
	}
	return ms, u
}

// SetRetention puts the current version of bucket/key under governance
// retention until until, behind the back of the code under test.
func (m *MinIO) SetRetention(t testing.TB, bucket, key string, until time.Time) {
	t.Helper()
	c, err := m.client(0)
	if err != nil {
		t.Fatal(err)
	}
	mode := minio.Governance
	if err := c.PutObjectRetention(context.Background(), bucket, key, minio.PutObjectRetentionOptions{Mode: &mode, RetainUntilDate: &until}); err != nil {
		t.Fatalf("testenv: minio %s: set retention of %s/%s: %v", m.name, bucket, key, err)
	}
}

// Versions counts the stored versions (delete markers included) of
// bucket/key.
func (m *MinIO) Versions(t testing.TB, bucket, key string) int {
	t.Helper()
	c, err := m.client(0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for oi := range c.ListObjectsIter(context.Background(), bucket, minio.ListObjectsOptions{Prefix: key, WithVersions: true}) {
		if oi.Err != nil {
			t.Fatalf("testenv: minio %s: versions of %s/%s: %v", m.name, bucket, key, oi.Err)
		}
		if oi.Key == key {
			n++
		}
	}
	return n
}

// Kill sends SIGKILL and waits for the process to exit.
func (m *MinIO) Kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc != nil {
		m.proc.kill()
	}
}

// Pid returns the MinIO server's process id.
func (m *MinIO) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return 0
	}
	return m.proc.pid()
}

func (m *MinIO) cleanup(t testing.TB) {
	// Nothing in a test MinIO needs a clean shutdown.
	m.Kill()
	if t.Failed() {
		t.Logf("testenv: minio %s (%s)\n%s", m.name, m.Endpoint, logTail(m.logPath))
	}
	if err := os.RemoveAll(m.dir); err != nil {
		t.Errorf("testenv: remove %s: %v", m.dir, err)
	}
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// BulkObject is one object for PutMany.
type BulkObject struct {
	Key  string // full key in the bucket, the store's prefix included
	Body []byte
}

// PutMany stores objects in bucket in batches of batch objects, each batch
// one request: a tar that MinIO unpacks into separate objects on arrival
// (its "snowball" auto-extract, minio-go's PutObjectsSnowball), with
// workers batches in flight. One PUT per object costs both processes an
// HTTP round trip and a signature each, which is what limits how large a
// repository a benchmark can build; this is for filling one, never for
// code under test (every object gets the time of its batch's arrival).
// objs is read until it is closed. On an error PutMany returns once every
// worker has stopped, possibly before objs is drained: the sender must also
// give up when ctx ends, and the caller cancels ctx when PutMany fails.
func (m *MinIO) PutMany(ctx context.Context, bucket string, objs <-chan BulkObject, batch, workers int) error {
	c, err := m.client(3)
	if err != nil {
		return err
	}
	batch, workers = max(1, batch), max(1, workers)
	errs := make(chan error, workers)
	for range workers {
		go func() {
			var err error
			for err == nil {
				in := make(chan minio.SnowballObject, batch)
				n := 0
				for o := range objs {
					in <- minio.SnowballObject{Key: o.Key, Size: int64(len(o.Body)), Content: bytes.NewReader(o.Body)}
					if n++; n == batch {
						break
					}
				}
				close(in)
				if n == 0 {
					break
				}
				err = c.PutObjectsSnowball(ctx, bucket, minio.SnowballOptions{InMemory: true}, in)
				if err != nil {
					err = fmt.Errorf("testenv: minio %s: bulk put of %d objects: %w", m.name, n, err)
				}
			}
			errs <- err
		}()
	}
	var first error
	for range workers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
