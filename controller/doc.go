// Package controller is one node of the Raft-replicated control plane: it
// runs hashicorp/raft over the catalog FSM, serves ControlService,
// AgentService and ClusterService, and, while it leads, holds the agent
// sessions, the lease timers and job assignment.
package controller
