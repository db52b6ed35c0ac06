// Package mysqlx holds the MySQL and MariaDB helpers every engine shares:
// DSN parsing with a password that never prints, server flavor and version
// detection, translation of driver errors into messages that say what to do,
// and Wire, which reads a big text result set straight off a go-sql-driver
// connection's socket between the driver's own commands (the driver costs
// an allocation per column and a syscall per 4 KiB).
package mysqlx
