// Package mysqlx holds the MySQL and MariaDB helpers every engine shares:
// DSN parsing with a password that never prints and the MySQL client's
// TLS options (ssl-mode, ssl-ca, ssl-cert, ssl-key) as DSN parameters, server flavor and version
// detection, translation of driver errors into messages that say what to do,
// and Wire, which reads a big result set straight off a go-sql-driver
// connection's socket between the driver's own commands (the driver costs
// an allocation per column and a syscall per 4 KiB), as text or, cheaper
// for the server, in the binary protocol of a prepared statement with the
// numbers and dates formatted on our side.
package mysqlx
