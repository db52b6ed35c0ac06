// Package logical is the logical backup engine: a consistent, parallel,
// key-range-split dump of a MySQL or MariaDB server into archive streams, and
// a parallel LOAD DATA restore from them.
//
// On the two cores it shares with the server, a dump is CPU-bound on both
// sides, so the workers keep the server's work down as much as their own:
// they read rows in the binary protocol straight off their sockets
// (mysqlx.Wire), so the server formats no numbers or dates, and the rows are
// encoded straight into the archive's chunks. A restore fails rather than
// keep values the server changed while loading them (warnings).
//
// A restore recreates the schema exactly: mariadb-dump --routines --events
// --triggers of the source and of a restored copy print the same, line for
// line, and so do their rows (TestMariaDBDumpSame). That covers
// table options, partitions, keys, comments, checks and invisible columns;
// sequences with their whole state row (definition, next_not_cached_value,
// cycle_count); views, routines, triggers (in their order) and events with
// their definer, sql_mode, time zone and client character set; and, in a
// backup with History, the history of system-versioned tables. A sequence
// continues from next_not_cached_value: what the source had cached lives
// only in its memory, and the backup lock's flush drops it there too, so
// the source continues from the same value (a NEXTVAL that runs into the
// lock may leave the copy one cache block ahead; never at a value the
// source handed out). Restoring mariadb-dump's output loses a sequence's cycle_count and
// a restart below its start value, and drops an event whose schedule has
// passed; mariadb-dump 10.11 leaves Oracle-mode packages out, which this
// engine restores (TestRoundTripEveryType compares them).
//
// Known differences: under RenameDB a trigger written "db.t" is created
// unqualified, and a body that names the old database unquoted still names
// it (the restore warns); an event is created at its last change (SET
// timestamp), routines and triggers at the restore; an event defined under
// time_zone SYSTEM follows the target's system time zone; a
// system-versioned table in a backup without History, or versioned by
// transaction id, keeps only its current rows, its history starting at the
// restore (backup and restore warn); AUTO_INCREMENT counters are those read
// before the lock (the data raises them to the rows dumped).
//
// History: BackupParams.History dumps system-versioned tables with every
// row version (FOR SYSTEM_TIME ALL) and their periods, which restore
// writes back under system_versioning_insert_history: only MariaDB ≥ 10.11
// whose secure_timestamp lets the restoring user set a row's time can take
// them, and a restore onto any other target is refused before it writes
// anything (ErrHistoryRefused), naming the tables and the reason.
package logical
