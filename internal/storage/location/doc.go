// Package location opens a storage.Storage from a URI through an explicit
// registry of schemes, and redacts URIs for logging.
package location
