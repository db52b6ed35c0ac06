// Package archive is the backup repository: content-addressed, compressed and
// optionally encrypted chunks, manifests written last, and the readers,
// verifier and garbage collector over them.
package archive
