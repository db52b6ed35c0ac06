// Package runner runs one job an agent was assigned (a backup or a restore
// through an engine, fenced by the job's lease; an expire, copy or
// reconcile job on a repository) and says how it ended.
package runner
