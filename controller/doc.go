// Package controller is one node of the Raft-replicated control plane: it
// runs hashicorp/raft over the catalog FSM, serves ControlService,
// AgentService and ClusterService, and, while it leads, holds the agent
// sessions, the lease timers and job assignment.
//
// Reads are consistent by default (reads.go): a follower forwards them to
// the leader, which answers after confirming its leadership with a quorum
// and applying everything committed before the read arrived; a stale read
// is served from the local catalog, and every read answer says how it was
// served (ReadInfo).
//
// Every connection is mutual TLS (tls.go: the cluster CA or an operator's
// certificates; the Raft transport too). One pair of interceptors
// (auth.go) checks every call against the access table and maps errors to
// gRPC statuses; the leader writes an audit record of every mutating call
// (audit.go); join tokens, revocations and certificate renewal are in
// enroll.go. Engine selection (selection.go) resolves a backup's engine
// auto from the instance's probed capabilities at submission, refuses an
// engine the instance cannot run, and re-decides at every registration,
// recording a change of choice on the instance. Retention (retention.go) plans on the leader with
// controller/retention and expires through Raft entries and expire jobs
// the agents run; copies are copy jobs. The reconcile sweep
// (reconciler.go, judged by controller/reconcile) submits reconcile jobs
// that delete the manifests refused or superseded backup attempts left.
//
// metrics.go exports the node's gauges (Raft, and on the leader the
// catalog's and the agent hub's, computed at scrape time), its readiness
// (Ready, also answered as grpc.health.v1) and the --metrics-addr listener.
//
// While it leads, the node also runs the policy scheduler
// (controller/scheduler, wired in schedule.go) and the webhook alerts
// (webhook.go); policies are applied and listed through policies.go. The
// policy loop (policyretention.go) applies the policies' retention and
// their copies' retention, and submits their copy jobs, with ids derived
// from what they act on so that a new leader never doubles one.
//
// Mutating calls that may be retried (submit, restore, cancel, copy,
// expire, pin, unpin, binlog start and stop, policy delete) carry a client's idempotency
// key (idempotency.go): the leader wraps the call's one write in an
// Idempotent command, so the key and the change commit together; a retry
// with the same key and request gets the recorded result (replayed), the
// same key with another request is refused.
package controller
