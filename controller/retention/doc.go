// Package retention decides, as a pure function of an instance's backups,
// its retention rules and the time, which backups to keep and which to
// expire, each with its reasons, and which binlog segments no kept backup
// needs any more.
package retention
