// Package faulty wraps a storage.Storage to inject failures, corruption and
// delays in tests.
package faulty
