// Package apply rolls a server forward by replaying native binlog files onto
// it, exactly from a start position to a stop point, through the server's
// own replication applier (the files are served to it as a replication
// source) or, as a slower fallback that needs no replication privilege,
// through mariadb-binlog (MySQL: MySQL's mysqlbinlog) piped into the
// client.
//
// Both flavors: MariaDB files from a GTID position (domain-server-seq per
// domain) onto MariaDB, and MySQL files from a MySQL GTID set
// (uuid:1-100,uuid2:1-7, the base's gtid_executed) onto MySQL, whose
// replica the source serves as MySQL 8.0 does. Plan cuts the files at
// event boundaries after the start, never at a file boundary, so no
// transaction is applied twice. The MySQL path is tested against doubles of
// MySQL only (internal/testenv), not a real MySQL server.
package apply
