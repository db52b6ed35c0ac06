// Package catalog is the controller's in-memory catalog: go-memdb tables of
// agents, instances, backups, jobs, binlog streams and controller
// members, read through
// snapshot transactions and written only by the FSM.
//
// Finished jobs, the bulk of a catalog that keeps a year of history, are
// not in go-memdb: they are kept as their marshalled records in
// copy-on-write B-trees (finished.go), about 560 bytes a job against 4.7 KB
// in go-memdb, versioned with go-memdb's root so that a Read or a Snapshot
// sees one consistent catalog.
//
// Jobs and backups are listed newest first through ordered indexes
// (order.go) and keyset cursors, so a page costs the same whatever the
// table's size; the history they hold is bounded by the FSM's
// PruneCatalog, which walks the finished-jobs and deleted-backups indexes
// oldest first (prune.go).
package catalog
