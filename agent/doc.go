// Package agent is the daemon on each database host: it probes the server's
// capabilities, keeps one stream to the controller and runs assigned jobs
// through the engines.
package agent
