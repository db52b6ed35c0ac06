// Package fsm is the controller's Raft state machine: it applies v1.Command
// log entries to the catalog deterministically and snapshots and restores
// the whole catalog as protobuf.
package fsm
