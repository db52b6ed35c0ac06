// Package agent is the daemon on each database host: it probes the server's
// capabilities, keeps one stream to the controller and runs assigned jobs
// through the engines. It presents a certificate naming it (mutual TLS),
// gets one with a join token when it has none (enroll.go), and renews it two
// thirds into its life (renew.go). metrics.go records its jobs in the
// process's metrics and serves --metrics-addr with its readiness
// (registered, repository reachable). It runs one backup or restore per
// instance at a time, the next waiting until the last has stopped, and
// stops a job by itself once its lease has certainly run out on the
// controller (lease.go).
package agent
