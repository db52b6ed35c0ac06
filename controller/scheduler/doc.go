// Package scheduler is the leader's policy engine: from the catalog and a
// clock it works out which scheduled runs are due, submits each as a job
// whose id is derived from (policy, schedule, run key, scheduled time),
// records the runs that will not start, keeps one binlog stream per
// selected instance or cluster group, and says which instances meet their
// policies and why not.
package scheduler
