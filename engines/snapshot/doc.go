// Package snapshot is the "snapshot" engine: a physical backup read from a
// filesystem snapshot of the server's volume, on the server's host.
//
// Discovery. The server names its directories (@@datadir,
// @@innodb_log_group_home_dir, @@innodb_undo_directory,
// @@innodb_data_home_dir, @@log_bin_basename); the engine finds the volume
// under each (statfs magic; Btrfs: the subvolume top, found by walking up
// while the device number stays the same; LVM: the device-mapper uuid in
// /sys and lvs; ZFS: zfs list). Every directory must be on one volume: files
// on two volumes cannot be snapshotted at one instant, and the engine
// refuses them (it does not hold one lock across several snapshots). A
// datadir on a filesystem without snapshots (ext4/xfs without LVM, tmpfs,
// overlayfs) is refused, naming the mariabackup and logical engines.
//
// Lock. On one pinned connection: MariaDB BACKUP STAGE START, FLUSH,
// BLOCK_DDL, BLOCK_COMMIT; MySQL LOCK INSTANCE FOR BACKUP and FLUSH TABLES
// WITH READ LOCK after a bounded wait for long-running statements to end
// (FLUSH TABLES WITH READ LOCK would queue every new statement behind
// them). The binlog coordinates and GTID state are read under the lock, the
// snapshot taken, the lock released. The manifest's lock duration is the
// time commits were blocked (from BLOCK_COMMIT / FLUSH TABLES WITH READ
// LOCK to the release), as for the logical engine; DDL and writes to
// non-transactional tables are blocked from the FLUSH stage / LOCK
// INSTANCE on, which the engine metadata snapshot.ddl_blocked records. The
// filesystem is synced before the lock and again once DDL is blocked, so
// that the snapshot finds little to write while commits wait.
//
// Snapshots. Btrfs: read-only subvolume snapshots in
// <subvolume>/.tidemark-snapshots/tidemark-<tag>-<time>; LVM: lvcreate
// --snapshot, mounted read-only under the state directory; ZFS: zfs
// snapshot, read through .zfs/snapshot. The tag (Engine.Owner, default a
// hash of the datadir path) marks a snapshot as this instance's; a
// per-instance lock file (flock, dropped by the kernel when a process dies)
// keeps two runs apart, so a snapshot of ours that exists while we hold
// the lock is a leftover of a killed run and is removed — at the next
// backup or by Cleanup (the agent calls it for every instance when it
// starts: engines.Cleaner), never one without our prefix and tag.
//
// Space. A snapshot pins the blocks it shares with the live files, so every
// page the server writes while it is held takes new space; on a volume
// that runs out, the server's own writes fail (Btrfs creates the snapshot
// itself almost for free). On Btrfs the engine therefore refuses, before it
// locks the server, a volume with less free space (statfs f_bavail) than
// engine selection asks for: selection.SnapshotFreeNeeded of the files to
// copy, a tenth of them and at least 64 MiB. The refusal ("snapshot space
// exhausted") and a volume manager's own out-of-space error (Btrfs ENOSPC,
// LVM "insufficient free space", ZFS "out of space") are capability
// failures (engines.ErrCapability): engine auto falls back to the next
// engine. LVM reserves the space at lvcreate (LVMSnapshotSize); ZFS free
// space is not checked before the snapshot.
//
// Copy. Every file of the snapshot is streamed with physical.CopyTree in
// fixed blocks (DefaultBlock) into the physical layout, read with O_DIRECT
// (the snapshot's files are read once; the page cache would only cost a
// copy); the backup is crash-consistent (physical.prepare=crash-recovery):
// a server started on the restored files finishes it with its own crash
// recovery. All-zero blocks are holes (physical layout version 2). Of the
// redo log only the header and the window from the latest checkpoint to
// the server's Innodb_lsn_current, read after the snapshot was taken (so
// at or past the end of the log in it), are stored (physical.RedoLive):
// recovery reads nothing else, and zeros elsewhere read as the log's end.
// A log RedoLive cannot read with certainty is stored whole; the engine
// metadata snapshot.redo says what was kept, or why all of it.
//
// LVM and ZFS run through Runner; their tests use a command-level double
// (commandDouble in the tests), not real volumes.
package snapshot
