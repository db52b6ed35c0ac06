// Package retry wraps a storage.Storage so that operations failing with
// storage.ErrUnavailable are retried with exponential backoff and jitter.
package retry
