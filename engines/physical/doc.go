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
// Restore. Extract writes every stream into the directory of its root.
// The target must be empty or absent and have room for the data (checked
// before the first byte is written); a marker file (InProgressMarker) is
// created first and removed only when every file is written and synced, so
// a half-written directory is recognisable and never started as a server.
package physical
