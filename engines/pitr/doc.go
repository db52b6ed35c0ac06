// Package pitr restores an instance to a point in time: the newest complete
// base backup at or before the target, then its archived binlog rolled
// forward from exactly the base's consistency point. Every refusal (no
// base, an archive that starts late, a gap, a target past the archive)
// comes before anything is written to the target.
//
// Two targets. Restore loads a logical base into a running server (DSN)
// and rolls that server forward; it never picks a physical base.
// RestoreDatadir writes a physical base into a new datadir
// (physical.Restore: checks, files, prepare), starts a temporary server on
// it and rolls that forward through the server's own replica, which
// connects out to the roll-forward's loopback source (the temporary server
// itself listens on no TCP port), then shuts it down; it picks only
// physical bases. The datadir's in-progress marker stays until the
// roll-forward is done and the server is down.
//
// MySQL instances (an archive of MySQL's binlog, bases whose consistency
// point is a MySQL GTID set) restore with Restore onto a running MySQL
// server, to a time, a position or a GTID (uuid:N, or uuid:1-N naming N);
// base and archive coverage are compared as GTID sets. RestoreDatadir
// refuses a MySQL GTID: its temporary server is MariaDB's. The MySQL path
// is tested against doubles of MySQL, not a real server.
package pitr
