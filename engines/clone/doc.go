// Package clone is the "clone" engine: a physical backup of a MySQL ≥
// 8.0.17 server made by its clone plugin (CLONE LOCAL DATA DIRECTORY) on
// the server's host, streamed into the physical layout.
//
// Checks, before anything is written: the server is MySQL (MariaDB has no
// clone plugin: the error names the mariabackup and snapshot engines) of
// at least 8.0.17; the plugin is ACTIVE in information_schema.PLUGINS (it
// is never installed by Tidemark: the error says how, INSTALL PLUGIN clone
// SONAME 'mysql_clone.so' or --plugin-load-add=mysql_clone.so); SHOW
// GRANTS holds BACKUP_ADMIN (or ALL) on *.* — a user whose privileges come
// through roles is not refused here, the server's own refusal names the
// privilege then; and the scratch directory's filesystem has room for a
// copy of the datadir.
//
// Scratch directory. CLONE LOCAL writes a complete, consistent datadir
// into a directory that must not exist, must not lie inside the datadir
// (ER_PATH_IN_DATADIR) and that mysqld must be able to create. The engine
// uses <parent>/.tidemark-clone-<tag>-<time>, where parent is
// Engine.ScratchParent (the CLI sets it from TIDEMARK_CLONE_SCRATCH_DIR)
// or, by default, the datadir's parent directory (the same filesystem in
// the usual layout, outside what other tools read as the datadir; a
// packaged /var/lib/mysql has a root-owned parent mysqld cannot write, so
// such hosts need the setting: a mysql-owned directory on the datadir's
// filesystem); tag is a hash of the datadir path, so two servers sharing
// a parent never touch each other's directories. A lock file next to it
// (<name>.lock, flock) is held for the whole backup. The directory is
// removed after success, failure and cancellation; CleanLeftovers (the
// agent calls it at start) removes those a killed run left: only names
// with this server's tag, only when their lock is free and the server's
// clone_status does not show a clone 'In Progress' into them (a clone
// whose client was killed runs on in the server).
//
// Run. The CLONE statement runs on one connection; a second one polls
// performance_schema.clone_progress into the job's progress (phase
// "clone", then "files" for the copy into the archive). Cancellation
// sends KILL QUERY for the clone's connection (the documented way to stop
// a clone) and waits for the statement to end before the directory is
// removed: closing the client connection would leave the server writing.
// The consistency point is clone_status's BINLOG_FILE, BINLOG_POSITION and
// GTID_EXECUTED, which MySQL records for the cloned data. Commits are
// never blocked (the manifest's lock duration is zero); the clone blocks
// DDL while it copies.
//
// Copy. The cloned files are streamed with physical.CopyTree in fixed
// blocks as the datadir root, the same layout as the snapshot engine's, so
// restore is engines/physical's (PITR included). A clone is consistent and
// needs no recovery, but the backup is marked physical.prepare=
// crash-recovery: the restore starts a server on it once, which checks the
// files and is a no-op recovery on a clean clone. A clone holds no
// binlogs (the restore's temporary server runs without one, and a
// point-in-time restore records the reached GTID position as for
// mariabackup's output). The #clone directory MySQL writes into a clone
// (its clone_status and clone_progress rows, plugin/clone/src/
// clone_status.cc) is kept: a server started on the files reads it.
//
// Verified only against testenv.CloneDouble: no MySQL runs where this was
// written.
package clone
