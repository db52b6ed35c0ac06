// Package selection decides which backup engine suits an instance: a pure
// function from the capabilities an agent probed (v1.Capabilities) and the
// policy's preferences to a ranked list of engines, each with ok and a
// reason a person understands. It does no I/O; the controller, the agent and
// the standalone CLI call it with what they have.
//
// Ranking, best first, among the engines that can run:
//
//	snapshot     lock held only for the snapshot (milliseconds), cost of a
//	             copy of the files; needs Btrfs, LVM or ZFS under every
//	             directory of the server
//	clone        MySQL >= 8.0.17 copies its own pages with no lock on DML;
//	             needs the clone plugin ACTIVE and BACKUP_ADMIN
//	mariabackup  mariabackup / xtrabackup copy the files with redo applied;
//	             needs the tool of the server's series on the host
//	logical      runs everywhere and restores onto any version or flavor,
//	             but dumps and reloads row by row: slowest for large data
//
// Physical engines come first because their time grows with bytes copied,
// the logical engine's with rows parsed and indexes rebuilt on restore.
// Two preferences reorder: portable (a backup that must restore onto another
// version or flavor) refuses every physical engine, and SmallBytes (when set)
// puts logical first for instances smaller than it, where a dump takes
// seconds and its portability costs nothing.
package selection
