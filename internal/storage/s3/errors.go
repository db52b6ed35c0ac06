package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"

	"github.com/minio/minio-go/v7"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// errTimedOut is the cancellation cause of a call that got no answer (or, for
// reads and listings, no progress) within Config.RequestTimeout.
var errTimedOut = errors.New("timed out")

// credentialsHint ends every permission error: the usual cause is wrong or
// missing credentials.
const credentialsHint = "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"

// translateError is the one place where minio-go and net/http errors become
// storage sentinels. op and key name the failed operation for the message
// (key may be ""). ctx is the caller's context and callCtx the one the call
// ran under (derived from ctx with our timeout), so that a caller giving up is
// told apart from a server that stopped answering.
func (s *Store) translateError(ctx, callCtx context.Context, op, key string, err error) error {
	if err == nil {
		return nil
	}
	what := op + " " + s.objectURL(key)
	if ctxErr := ctx.Err(); ctxErr != nil {
		// The caller gave up: not the store's fault, and not worth a retry.
		return fmt.Errorf("%s: %w", what, ctxErr)
	}
	if callCtx != nil {
		if cause := context.Cause(callCtx); errors.Is(cause, errTimedOut) {
			return fmt.Errorf("%s: %w: s3 endpoint %s: %w", what, storage.ErrUnavailable, s.loc.Endpoint, cause)
		}
	}

	var resp minio.ErrorResponse
	if errors.As(err, &resp) && (resp.Code != "" || resp.StatusCode != 0) {
		switch {
		case resp.Code == minio.NoSuchBucket:
			return fmt.Errorf("%s: bucket %s does not exist: create it first: %w", what, s.loc.Bucket, storage.ErrNotFound)
		case resp.Code == minio.NoSuchKey || resp.Code == minio.NoSuchUpload || resp.StatusCode == http.StatusNotFound:
			return fmt.Errorf("%s: %w", what, storage.ErrNotFound)
		case resp.Code == minio.AccessDenied || resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch" ||
			resp.Code == "InvalidToken" || resp.Code == "ExpiredToken" ||
			resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized:
			return fmt.Errorf("%s: %w: %w (%s)", what, storage.ErrPermission, err, credentialsHint)
		case resp.Code == "PreconditionFailed" || resp.StatusCode == http.StatusPreconditionFailed:
			return fmt.Errorf("%s: %w", what, storage.ErrExists)
		case resp.Code == "XMinioStorageFull" || resp.Code == "XMinioAdminBucketQuotaExceeded" || resp.Code == "QuotaExceeded":
			return fmt.Errorf("%s: %w: %w", what, storage.ErrNoSpace, err)
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout ||
			resp.Code == "SlowDown" || resp.Code == "RequestTimeout" || resp.Code == "InternalError" ||
			resp.Code == "ServiceUnavailable" || resp.Code == "XMinioServerNotInitialized" ||
			// AWS answers 409 to concurrent conditional writes of one key;
			// the retry then gets the definitive 412.
			resp.Code == "ConditionalRequestConflict":
			return fmt.Errorf("%s: %w: s3 endpoint %s: %w", what, storage.ErrUnavailable, s.loc.Endpoint, err)
		}
		return fmt.Errorf("%s: %w", what, err)
	}

	// Not an S3 answer: the request never got one.
	var urlErr *url.Error
	var netErr net.Error
	if errors.As(err, &urlErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w: cannot reach s3 endpoint %s: %w", what, storage.ErrUnavailable, s.loc.Endpoint, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
