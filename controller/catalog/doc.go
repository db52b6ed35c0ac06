// Package catalog is the controller's in-memory catalog: go-memdb tables of
// agents, instances, backups, jobs, binlog streams and controller
// members, read through
// snapshot transactions and written only by the FSM.
package catalog
