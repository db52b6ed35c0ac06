package s3

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// Defaults for Config's zero fields.
const (
	DefaultRequestTimeout        = 2 * time.Minute
	DefaultDialTimeout           = 10 * time.Second
	DefaultResponseHeaderTimeout = time.Minute
	// DefaultPartSize bounds the memory of one put of unknown size, and is
	// the largest object sent as a single PUT. Chunks (at most 16 MiB) are
	// always single PUTs.
	DefaultPartSize = 16 << 20
	// MinPartSize is S3's minimum for every part but the last.
	MinPartSize = 5 << 20
	maxParts    = 10000
	maxPartSize = 5 << 30
)

// Config holds what the URI does not: credentials and timeouts.
type Config struct {
	// Credentials, when nil, come from the chain: AWS_ACCESS_KEY_ID /
	// AWS_SECRET_ACCESS_KEY, MINIO_ROOT_USER / MINIO_ROOT_PASSWORD,
	// ~/.aws/credentials, then the EC2/ECS instance role.
	Credentials *Credentials
	// RequestTimeout bounds each request: a single PUT, one part of a
	// multipart upload, a stat, a delete. For reads and listings it bounds
	// the time without progress. Default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// DialTimeout bounds connecting (and the TLS handshake). Default
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the response headers once a
	// request is sent. Default DefaultResponseHeaderTimeout.
	ResponseHeaderTimeout time.Duration
	// PartSize is the largest single PUT and the part size of multipart
	// uploads, at least MinPartSize. Default DefaultPartSize.
	PartSize int64
}

func (c Config) withDefaults() (Config, error) {
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.ResponseHeaderTimeout <= 0 {
		c.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.PartSize < MinPartSize || c.PartSize > maxPartSize {
		return c, fmt.Errorf("s3 part size %d is outside S3's limits of %d to %d bytes", c.PartSize, MinPartSize, maxPartSize)
	}
	return c, nil
}

// Store is a storage.Storage over one bucket and prefix.
type Store struct {
	loc       Location
	cfg       Config
	client    *minio.Client
	core      minio.Core
	transport *http.Transport

	lockMu    sync.Mutex
	lockKnown bool // lockOn is valid: the bucket's Object Lock was asked
	lockOn    bool
}

var _ storage.Storage = (*Store)(nil)

// Open connects to loc's endpoint and checks that the bucket exists and the
// credentials are accepted, so a wrong URI fails here with a clear message
// rather than at the first chunk.
func Open(ctx context.Context, loc Location, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	tr, err := minio.DefaultTransport(loc.TLS)
	if err != nil {
		return nil, fmt.Errorf("s3 transport: %w", err)
	}
	tr.DialContext = (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = cfg.DialTimeout
	tr.ResponseHeaderTimeout = cfg.ResponseHeaderTimeout

	var creds *credentials.Credentials
	if c := cfg.Credentials; c != nil {
		creds = credentials.NewStaticV4(c.AccessKeyID, c.SecretAccessKey.Reveal(), c.SessionToken.Reveal())
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.EnvMinio{},
			&credentials.FileAWSCredentials{},
			&credentials.IAM{Client: &http.Client{Transport: tr}},
		})
	}
	client, err := minio.New(loc.Endpoint, &minio.Options{
		Creds:     creds,
		Secure:    loc.TLS,
		Transport: tr,
		Region:    loc.Region,
		// One attempt per request: the retry wrapper retries whole
		// operations with its own backoff, and minio-go's default of 10
		// attempts would multiply with it.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 endpoint %q: %w", loc.Endpoint, err)
	}
	s := &Store{loc: loc, cfg: cfg, client: client, core: minio.Core{Client: client}, transport: tr}

	if cfg.Credentials == nil {
		v, err := creds.GetWithContext(&credentials.CredContext{Client: &http.Client{Transport: tr}, Context: ctx})
		if err == nil && v.SignerType.IsAnonymous() {
			err = errors.New("no credentials found")
		}
		if err != nil {
			return nil, fmt.Errorf("open %s: %w: %w (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use ~/.aws/credentials or an IAM role)",
				s, storage.ErrPermission, err)
		}
	}

	callCtx, cancel := s.callContext(ctx)
	defer cancel()
	ok, err := client.BucketExists(callCtx, loc.Bucket)
	if err != nil {
		return nil, s.translateError(ctx, callCtx, "open", "", err)
	}
	if !ok {
		return nil, s.translateError(ctx, callCtx, "open", "", minio.ErrorResponse{Code: minio.NoSuchBucket, BucketName: loc.Bucket})
	}
	return s, nil
}

// String names the store by its URI (which never holds credentials).
func (s *Store) String() string { return s.loc.String() }

// Close drops idle connections.
func (s *Store) Close() error {
	s.transport.CloseIdleConnections()
	return nil
}

// Put sends a known size up to PartSize as one PUT; anything else is read a
// part at a time into one PartSize buffer, and goes as one PUT if it fits,
// else as a multipart upload. Either way the object appears only when
// complete, and a failed multipart upload is aborted.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	obj, err := s.object(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", s.objectURL(key), err)
	}
	body := &fencedReader{r: r}
	// Once Put returns, nothing reads r any more: callers reuse their
	// buffers, while net/http may still be sending a canceled request.
	defer body.fence()

	// No payload SHA-256 in the signature: over plain HTTP minio-go would
	// hash every body once more only to sign it, a third of a core at our
	// rates. Integrity is ours: every chunk is named by its hash and checked
	// on read; over TLS the transport protects the body.
	popts := minio.PutObjectOptions{PartSize: uint64(s.cfg.PartSize), DisableContentSha256: true}
	if opts.IfNotExists {
		popts.SetMatchETagExcept("*") // If-None-Match: *
	}
	if err := retentionOptions(&popts, opts); err != nil {
		return fmt.Errorf("put %s: %w", s.objectURL(key), err)
	}

	if size >= 0 && size <= s.cfg.PartSize {
		return s.putSingle(ctx, key, obj, body, size, popts)
	}

	partSize := s.cfg.PartSize
	if size > partSize*maxParts {
		partSize = (size + maxParts - 1) / maxParts
	}
	buf := make([]byte, partSize)
	// The small buffer lets us peek past a full first part: a body of
	// exactly PartSize bytes is still one PUT.
	br := bufio.NewReaderSize(body, 16)
	n, err := io.ReadFull(br, buf)
	if err == nil && size < 0 {
		if _, perr := br.Peek(1); errors.Is(perr, io.EOF) {
			err = io.EOF
		}
	}
	switch {
	case err == nil:
	case (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) && size < 0:
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("put %s: %w", s.objectURL(key), err)
		}
		return s.putSingle(ctx, key, obj, bytes.NewReader(buf[:n]), int64(n), popts)
	default:
		return s.bodyError(ctx, key, size, body, err)
	}
	return s.putMultipart(ctx, key, obj, br, body, size, buf, popts)
}

// putSingle stores r with one PUT request.
func (s *Store) putSingle(ctx context.Context, key, obj string, r io.Reader, size int64, popts minio.PutObjectOptions) error {
	popts.DisableMultipart = true
	callCtx, cancel := s.callContext(ctx)
	defer cancel()
	_, err := s.client.PutObject(callCtx, s.loc.Bucket, obj, r, size, popts)
	if err != nil {
		if body, ok := r.(*fencedReader); ok {
			if berr := body.failure(size); berr != nil && ctx.Err() == nil {
				return fmt.Errorf("put %s: %w", s.objectURL(key), berr)
			}
		}
		return s.translateError(ctx, callCtx, "put", key, err)
	}
	return nil
}

// putMultipart uploads buf (already filled) and the rest of r (which reads
// body) as parts. minio-go's own PutObject is not used for this: it sends
// If-None-Match only when initiating the upload, not with the
// CompleteMultipartUpload that actually creates the object, so two
// create-only puts could both succeed; we send it with the completion.
func (s *Store) putMultipart(ctx context.Context, key, obj string, r io.Reader, body *fencedReader, size int64, buf []byte, popts minio.PutObjectOptions) (err error) {
	var uploadID string
	err = s.call(ctx, "put", key, func(ctx context.Context) error {
		var err error
		uploadID, err = s.core.NewMultipartUpload(ctx, s.loc.Bucket, obj, minio.PutObjectOptions{Mode: popts.Mode, RetainUntilDate: popts.RetainUntilDate})
		return err
	})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = s.abort(ctx, key, obj, uploadID, err)
		}
	}()

	var parts []minio.CompletePart
	var total int64
	n := len(buf)
	for num := 1; ; num++ {
		if num > maxParts {
			return fmt.Errorf("put %s: more than %d parts of %d bytes", s.objectURL(key), maxParts, len(buf))
		}
		err := s.call(ctx, "put", key, func(ctx context.Context) error {
			p, err := s.core.PutObjectPart(ctx, s.loc.Bucket, obj, uploadID, num, bytes.NewReader(buf[:n]), int64(n), minio.PutObjectPartOptions{})
			if err != nil {
				return err
			}
			parts = append(parts, minio.CompletePart{PartNumber: p.PartNumber, ETag: p.ETag})
			return nil
		})
		if err != nil {
			return err
		}
		total += int64(n)
		if n < len(buf) || total == size {
			break
		}
		want := int64(len(buf))
		if size >= 0 {
			want = min(want, size-total)
		}
		var rerr error
		n, rerr = io.ReadFull(r, buf[:want])
		if rerr != nil {
			ended := errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF)
			if size >= 0 || !ended {
				return s.bodyError(ctx, key, size, body, rerr)
			}
			if n == 0 {
				break
			}
		}
	}
	// The reader may have ended only because the caller gave up.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", s.objectURL(key), err)
	}
	return s.call(ctx, "put", key, func(ctx context.Context) error {
		_, err := s.core.CompleteMultipartUpload(ctx, s.loc.Bucket, obj, uploadID, parts, popts)
		return err
	})
}

// abort discards a failed multipart upload so its parts neither linger nor
// cost money. It runs even when ctx was canceled (that is often why the
// upload failed), under its own timeout. If it fails too, the upload is left
// for AbortStaleUploads and cause stays the error that matters.
func (s *Store) abort(ctx context.Context, key, obj, uploadID string, cause error) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout)
	defer cancel()
	var err error
	for attempt := range 3 {
		err = s.core.AbortMultipartUpload(actx, s.loc.Bucket, obj, uploadID)
		if err == nil || minio.ToErrorResponse(err).Code == minio.NoSuchUpload {
			return cause
		}
		select {
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		case <-actx.Done():
		}
	}
	// The abort's failure is only a note (err.Error(), not wrapped): cause
	// stays the error callers match.
	return fmt.Errorf("%w (aborting multipart upload %s of %s also failed, it stays until garbage collection: %s)",
		cause, uploadID, s.objectURL(key), err.Error())
}

// AbortStaleUploads aborts the multipart uploads under the store's prefix
// initiated more than olderThan ago: those of puts that died with their
// process. It returns how many it aborted. Garbage collection calls it.
func (s *Store) AbortStaleUploads(ctx context.Context, olderThan time.Duration) (aborted int, err error) {
	cutoff := time.Now().Add(-olderThan)
	var keyMarker, idMarker string
	for {
		var res minio.ListMultipartUploadsResult
		// The whole bucket is listed and filtered here: MinIO treats a
		// non-empty prefix as one exact object name.
		err := s.call(ctx, "list multipart uploads", "", func(ctx context.Context) error {
			var err error
			res, err = s.core.ListMultipartUploads(ctx, s.loc.Bucket, "", keyMarker, idMarker, "", 1000)
			return err
		})
		if err != nil {
			return aborted, err
		}
		for _, u := range res.Uploads {
			if !strings.HasPrefix(u.Key, s.loc.Prefix) || !u.Initiated.Before(cutoff) {
				continue
			}
			err := s.call(ctx, "abort multipart upload of", strings.TrimPrefix(u.Key, s.loc.Prefix), func(ctx context.Context) error {
				return s.core.AbortMultipartUpload(ctx, s.loc.Bucket, u.Key, u.UploadID)
			})
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				return aborted, err
			}
			aborted++
		}
		if !res.IsTruncated {
			return aborted, nil
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
}

// Get returns a reader over [offset, offset+length) of key, clamped to the
// object's end. The request is sent before Get returns, so a missing key is
// reported here; reads then fail if no data arrives for RequestTimeout.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	obj, err := s.object(key)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("get %s: negative offset %d", s.objectURL(key), offset)
	}
	if length == 0 {
		// No byte range can ask for nothing; just check the key exists.
		if _, err := s.Stat(ctx, key); err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	var gopts minio.GetObjectOptions
	switch {
	case length > 0:
		err = gopts.SetRange(offset, offset+length-1)
	case offset > 0:
		err = gopts.SetRange(offset, 0) // bytes=offset-
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", s.objectURL(key), err)
	}

	wctx, w := s.watchdog(ctx)
	body, _, _, err := s.core.GetObject(wctx, s.loc.Bucket, obj, gopts)
	w.pause()
	if err != nil {
		defer w.stop()
		if resp := minio.ToErrorResponse(err); resp.Code == minio.InvalidRange || resp.StatusCode == http.StatusRequestedRangeNotSatisfiable {
			// The object exists and the range starts at or past its end.
			return io.NopCloser(bytes.NewReader(nil)), nil
		}
		return nil, s.translateError(ctx, wctx, "get", key, err)
	}
	return &objectReader{s: s, key: key, ctx: ctx, wctx: wctx, w: w, body: body}, nil
}

// objectReader streams an object's body under the watchdog and translates
// read failures, so a connection lost mid-object is ErrUnavailable.
type objectReader struct {
	s         *Store
	key       string
	ctx, wctx context.Context
	w         *watchdog
	body      io.ReadCloser
}

func (r *objectReader) Read(p []byte) (int, error) {
	r.w.resume()
	n, err := r.body.Read(p)
	r.w.pause()
	if err != nil && !errors.Is(err, io.EOF) {
		err = r.s.translateError(r.ctx, r.wctx, "get", r.key, err)
	}
	return n, err
}

func (r *objectReader) Close() error {
	r.w.stop()
	return r.body.Close()
}

// Stat returns key's size and modification time.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	obj, err := s.object(key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	var oi minio.ObjectInfo
	err = s.call(ctx, "stat", key, func(ctx context.Context) error {
		var err error
		oi, err = s.client.StatObject(ctx, s.loc.Bucket, obj, minio.StatObjectOptions{})
		return err
	})
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	return storage.ObjectInfo{Key: key, Size: oi.Size, ModTime: oi.LastModified}, nil
}

// List lists the keys under prefix page by page, calling fn from this
// goroutine. A listing fails if a page takes longer than RequestTimeout; time
// spent in fn does not count.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := storage.CheckPrefix(prefix); err != nil {
		return err
	}
	wctx, w := s.watchdog(ctx)
	defer w.stop()
	for oi := range s.client.ListObjectsIter(wctx, s.loc.Bucket, minio.ListObjectsOptions{Prefix: s.loc.Prefix + prefix, Recursive: true}) {
		w.pause()
		if oi.Err != nil {
			return s.translateError(ctx, wctx, "list", prefix+"*", oi.Err)
		}
		key := strings.TrimPrefix(oi.Key, s.loc.Prefix)
		if key == "" || strings.HasSuffix(key, "/") {
			continue // a "directory" marker some tools create, not an object
		}
		if err := fn(storage.ObjectInfo{Key: key, Size: oi.Size, ModTime: oi.LastModified}); err != nil {
			return err
		}
		w.resume()
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %s: %w", s.objectURL(prefix+"*"), err)
	}
	return nil
}

// Delete removes key; S3 does not report a missing key, nor do we. On a
// bucket with Object Lock it removes every version of key, and a version
// under retention stops it with storage.ErrRetained (objectlock.go).
func (s *Store) Delete(ctx context.Context, key string) error {
	obj, err := s.object(key)
	if err != nil {
		return err
	}
	if locked, err := s.locked(ctx); err != nil {
		return err
	} else if locked {
		return s.deleteVersions(ctx, key, obj)
	}
	return s.call(ctx, "delete", key, func(ctx context.Context) error {
		err := s.client.RemoveObject(ctx, s.loc.Bucket, obj, minio.RemoveObjectOptions{})
		if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
			return nil
		}
		return err
	})
}

// object maps a key to its object name in the bucket.
func (s *Store) object(key string) (string, error) {
	if err := storage.CheckKey(key); err != nil {
		return "", err
	}
	return s.loc.Prefix + key, nil
}

// objectURL names an object (or with key "", the store) in messages.
func (s *Store) objectURL(key string) string {
	return "s3://" + s.loc.Bucket + "/" + s.loc.Prefix + key
}

// callContext bounds one request by RequestTimeout, with a cause that
// translateError recognizes.
func (s *Store) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, s.cfg.RequestTimeout,
		fmt.Errorf("no answer within %v: %w", s.cfg.RequestTimeout, errTimedOut))
}

// call runs one request under callContext and translates its error.
func (s *Store) call(ctx context.Context, op, key string, fn func(context.Context) error) error {
	callCtx, cancel := s.callContext(ctx)
	defer cancel()
	return s.translateError(ctx, callCtx, op, key, fn(callCtx))
}

// bodyError reports a failure to read the caller's body, which is the
// caller's problem, not the store's, unless the caller gave up.
func (s *Store) bodyError(ctx context.Context, key string, size int64, body *fencedReader, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("put %s: %w", s.objectURL(key), ctxErr)
	}
	if berr := body.failure(size); berr != nil {
		return fmt.Errorf("put %s: %w", s.objectURL(key), berr)
	}
	return fmt.Errorf("put %s: reading body: %w", s.objectURL(key), err)
}

// fencedReader hands the caller's body to minio-go, records how it ended, and
// after fence refuses to read: net/http may keep reading the body of a
// canceled request after the call returned.
type fencedReader struct {
	mu     sync.Mutex
	r      io.Reader
	n      int64
	eof    bool
	err    error
	fenced bool
}

var errFenced = errors.New("put already returned")

func (f *fencedReader) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fenced {
		return 0, errFenced
	}
	n, err := f.r.Read(p)
	f.n += int64(n)
	switch {
	case errors.Is(err, io.EOF):
		f.eof = true
	case err != nil && f.err == nil:
		f.err = err
	}
	return n, err
}

// fence waits for a Read in progress and stops all later ones.
func (f *fencedReader) fence() {
	f.mu.Lock()
	f.fenced = true
	f.mu.Unlock()
}

// failure returns why the body could not supply size bytes (size < 0:
// whether it failed at all), or nil.
func (f *fencedReader) failure(size int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.err != nil:
		return fmt.Errorf("reading body: %w", f.err)
	case size >= 0 && f.eof && f.n < size:
		return fmt.Errorf("body ended after %d of %d bytes: %w", f.n, size, io.ErrUnexpectedEOF)
	}
	return nil
}

// watchdog cancels its context, with cause errTimedOut, once RequestTimeout
// passes while it runs; pause and resume bracket time that does not count
// (the caller's own work between reads or list entries).
type watchdog struct {
	t *time.Timer
	d time.Duration
	c context.CancelCauseFunc
}

func (s *Store) watchdog(ctx context.Context) (context.Context, *watchdog) {
	wctx, cancel := context.WithCancelCause(ctx)
	d := s.cfg.RequestTimeout
	cause := fmt.Errorf("no progress for %v: %w", d, errTimedOut)
	return wctx, &watchdog{t: time.AfterFunc(d, func() { cancel(cause) }), d: d, c: cancel}
}

func (w *watchdog) pause()  { w.t.Stop() }
func (w *watchdog) resume() { w.t.Reset(w.d) }
func (w *watchdog) stop()   { w.t.Stop(); w.c(nil) }
