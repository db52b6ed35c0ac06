// Package engines defines the interface every backup engine (logical, mariabackup,
// clone, snapshot, binlog) implements and the parameter and result types they share.
package engines
