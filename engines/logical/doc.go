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
package logical
