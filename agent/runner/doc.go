// Package runner runs one job an agent was assigned (a backup or a restore
// through an engine, fenced by the job's lease) and says how it ended.
package runner
