// Package gtid is MariaDB's global transaction ids and GTID positions (one
// GTID per replication domain, as @@gtid_binlog_pos prints them), shared by
// the streamer, the roll-forward and point-in-time restore so that all
// three parse and compare positions the same way.
package gtid
