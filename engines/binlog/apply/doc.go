// Package apply rolls a server forward by replaying native binlog files onto
// it, exactly from a start position to a stop point, through the server's
// own replication applier (the files are served to it as a replication
// source) or, as a slower fallback that needs no replication privilege,
// through mariadb-binlog piped into the mariadb client.
package apply
