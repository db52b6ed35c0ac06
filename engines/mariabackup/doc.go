// Package mariabackup is the streamed physical engine: it runs
// `mariabackup --backup --stream=xbstream` (MariaDB) or `xtrabackup
// --backup --stream=xbstream` (MySQL, Percona) on the server's host, reads
// the xbstream from the child's stdout in Go (internal/xbstream: no
// mbstream, no staging copy of InnoDB's files) and writes each file as an archive
// stream in the physical layout (engines/physical), cut into fixed,
// file-aligned blocks, so that a second backup stores only the blocks
// that changed. Restore is `tidemark restore ID --to-datadir DIR`, which
// prepares the files with `mariabackup --prepare` (physical.prepare =
// mariabackup).
//
// Before the child runs, the engine checks what the tool would otherwise
// fail on late or obscurely: that it is installed (naming the package),
// that its major.minor version is the server's (a tool reads its own
// series' redo log and data dictionary formats; the engine checks first
// and names both versions rather than leave it to how a tool of another
// series fails, which is not tested: one version is installed here), and
// that the user holds RELOAD,
// PROCESS, LOCK TABLES and BINLOG MONITOR (REPLICATION CLIENT on MySQL,
// plus BACKUP_ADMIN). Credentials reach the child through a
// --defaults-extra-file written 0600 in a private temporary directory and
// removed afterwards, never through argv (which mariabackup also copies
// into xtrabackup_info).
//
// Files interleave in the stream when the tool copies in parallel; the
// engine keeps one open archive stream per file in flight. InnoDB's files
// (nearly all the data) are stored as their chunks arrive; the others
// (Aria, MyISAM, .frm, the tool's own files) are spooled in the backup's
// private directory and stored when the stream ends, because mariabackup
// renames, removes and rewrites them in the stream when their tables see
// DDL during the backup (stream.go). A rename of a file the stream never
// sent is skipped as mbstream does, with a warning: mariabackup 10.11.19
// leaves tables created and renamed during the backup without their data
// files in its own output too (TestDDLDuringBackup). The coordinates come
// from the files the tool writes into the stream under its lock
// (xtrabackup_binlog_info or mariadb_backup_binlog_info: binlog
// file, position, GTID; its arrival is the consistency point's time: the
// tool writes it under its lock, and tool and agent share the server's
// host and clock), the LSNs from xtrabackup_checkpoints, the lock time
// from the tool's stderr lines that begin and end it, timed as they
// arrive (xtrabackup_info's whole-second lock_time if they are missing).
//
// A non-zero exit, a killed child, a damaged stream or a cancelled context
// fail the backup (no manifest) and leave no child process: the child runs
// in its own process group, killed as a whole, and dies with the agent
// (PR_SET_PDEATHSIG).
//
// Limits: a backup is of the whole instance (no --databases), full (no
// incremental); a stream that seeks back in, renames or removes an InnoDB
// file, or sends one twice (not seen from the 10.11 tool), is refused with
// the file named rather than stored wrong.
package mariabackup
