// Package catalog is the controller's in-memory catalog: go-memdb tables of
// agents, instances, active jobs, binlog streams and controller members,
// read through snapshot transactions and written only by the FSM.
//
// Finished jobs, the bulk of a catalog that keeps a year of history, and
// backups are not in go-memdb: they are kept as their marshalled records
// in copy-on-write B-trees (finished.go, backupstore.go), about 560 bytes
// a finished job against 4.7 KB in go-memdb, versioned with go-memdb's
// root so that a Read or a Snapshot sees one consistent catalog. Their
// reads decode the records they return: a backup read is a fresh message
// the caller owns.
//
// Jobs and backups are listed newest first through ordered indexes
// (order.go) and keyset cursors, so a page costs the same whatever the
// table's size; the history they hold is bounded by the FSM's
// PruneCatalog, which walks the finished-jobs and deleted-backups indexes
// oldest first (prune.go).
package catalog
