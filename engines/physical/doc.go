// Package physical is what the physical engines (snapshot, mariabackup)
// share: how a server's files are laid out as archive streams, copying a
// directory tree into a backup in parallel and in fixed blocks, and writing
// a backup's files back into an empty directory.
//
// Layout. Every file, directory and symlink of the backed-up server is one
// stream named "files/<root>/<path>": root names which of the server's
// directories it came from (RootDatadir, RootRedo, RootUndo, RootBinlog;
// InnoDB's redo and undo and the binlogs may live outside the datadir) and
// path is slash-separated below it. A stream's metadata carries its kind,
// permission bits and modification time; only regular files have data.
// Regular files are cut into blocks at fixed file offsets
// (archive.StreamBlocks), so an unchanged region of an InnoDB file is an
// unchanged chunk the repository already holds and a second backup of a
// mostly unchanged instance uploads only what changed.
//
// Holes (layout version 2, FormatSparse). A file may leave blocks out of
// its stream: all-zero blocks, and blocks the engine knows are never read
// (the redo log outside the window crash recovery reads, RedoLive). The
// stream's metadata then holds the file's size and the holes' byte ranges;
// the stream is the other blocks in file order, each still a whole,
// file-aligned block. Extract writes the data between the holes and
// allocates the holes (fallocate), which read as zeros. A backup that may
// hold holes says version 2, which readers of version 1 refuse.
//
// Restore. Extract writes every stream into the directory of its root.
// The target must be empty or absent and have room for the data (checked
// before the first byte is written); a marker file (InProgressMarker) is
// created first and removed only when every file is written and synced, so
// a half-written directory is recognisable and never started as a server.
//
// Restore is the whole datadir restore, engine-agnostic: Check (the layout
// version, the backup's flavor and major version against `mysqld
// --version` and, for mariabackup's output, `mariabackup --version`; no
// running process using a target; Extract's emptiness and space checks),
// all before writing; Extract with the marker kept; the prepare named by
// physical.prepare; an optional roll-forward; and only then the marker's
// removal. A crash-consistent image is prepared by starting it once on a
// TempServer and shutting it down cleanly rather than by leaving recovery
// to the operator's first start: recovery failures surface during the
// restore, with the server's log; recovery runs with the image's binlog
// (the temporary server gets --log-bin with the image's basename when its
// index is in the datadir), which decides the InnoDB transactions that
// were prepared at the snapshot — a first start without it refuses to
// start over them; and the marker's removal then means the directory is
// ready. With a roll-forward on top, the crash image's temporary server
// also has --log-slave-updates, so the restored binlog runs on to the
// target; mariabackup's output has no binlog, and its temporary server runs
// without one (the restored position is then in gtid_slave_pos).
//
// TempServer is a mysqld on a restored datadir: --no-defaults, no TCP
// listener (--skip-networking; its replica's outgoing connection to the
// roll-forward's loopback source still works), a socket in a private 0700
// directory, --skip-slave-start (a restored replica must not reconnect to
// its old primary), and an account created by --init-file for this run
// (outside the binlog) and dropped before the shutdown, so the restore
// needs no credential of the backed-up server. Its errors quote its error
// log's tail. It runs in its own process group (a Ctrl-C for tidemark does
// not kill it mid-recovery: tidemark shuts it down) and, on Linux, gets
// SIGTERM if tidemark dies, so no orphan keeps running on the directory.
//
// physicaltest writes physical backups of test servers as the engines do,
// for tests of the restore side.
package physical
