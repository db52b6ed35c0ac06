// Package throttle wraps a storage.Storage so that the requests sent through
// it stay under a rate: one token bucket shared by every operation, so a
// background job (garbage collection) leaves the store's capacity to the
// backups and binlog streams that share it.
package throttle
