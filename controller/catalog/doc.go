// Package catalog is the controller's in-memory catalog: go-memdb tables of
// agents, instances, backups, jobs, binlog streams and controller
// members, read through
// snapshot transactions and written only by the FSM.
//
// Jobs and backups are listed newest first through ordered indexes
// (order.go) and keyset cursors, so a page costs the same whatever the
// table's size; the history they hold is bounded by the FSM's
// PruneCatalog, which walks the finished-jobs and deleted-backups indexes
// oldest first (prune.go).
package catalog
