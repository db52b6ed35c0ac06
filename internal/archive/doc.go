// Package archive is the backup repository: content-addressed, compressed and
// optionally encrypted chunks, manifests written last, and the readers,
// verifier and garbage collector over them.
//
// Garbage collection is two-phase (gc.go) and takes no lock a backup
// waits for. A run condemns unreferenced chunks into a record under gc/;
// each running backup's marker under locks/ acknowledges the records it
// has read and lists the condemned chunks it refers to (rescued); a later
// run marks a record as being deleted, reads the rescues, then the
// manifests, and deletes the rest. A backup whose marker goes stale is
// fenced by a tombstone at its manifest's key, so it can never commit over
// chunks it no longer protects; a gc run whose lock goes stale is fenced
// by an object it checks before every delete. Liveness is judged by the
// store's clock, never by a process's clock or pid. Sealed objects under
// objects/ (binlog segments) are outside all of it. A run's requests can
// be bounded (GCOptions.MaxRate): it then works through a view of the Repo
// over a rate-limited store, so neither its lock nor the backups sharing
// the Repo wait behind it.
//
// Keys (keys.go): an encrypted repository's config (format 2) holds key
// slots, each wrapping the same root and chunk-id keys under one passphrase
// or key file, and the data keys wrapped by the root key. Every stored blob
// says which data key sealed it (codec.go), so rotation rewrites nothing.
// Manifests, sealed objects and gc records also carry an authenticator
// under a key derived from the root key, checked before decryption; a
// format-1 repository (one key, no authenticators) is read as it is and
// upgraded by its first key change.
//
// Object Lock (objectlock.go): a repository created with it writes chunks
// and manifests under retention, and a backup extends the retention of the
// chunks it reuses before its manifest is stored; gc leaves unreferenced
// chunks younger than
// the lock period alone and counts deletes the store refuses
// (storage.ErrRetained) as retained rather than failing.
package archive
