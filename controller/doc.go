// Package controller is the Raft-replicated control plane: the catalog of
// agents, instances, backups and jobs, the gRPC services over it, and the
// leader-only scheduler.
package controller
