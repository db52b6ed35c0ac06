// Package logical is the logical backup engine: a consistent, parallel,
// key-range-split dump of a MySQL or MariaDB server into archive streams, and
// a parallel LOAD DATA restore from them.
package logical
