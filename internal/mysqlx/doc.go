// Package mysqlx holds the MySQL and MariaDB helpers every engine shares:
// DSN parsing with a password that never prints, server flavor and version
// detection, and translation of driver errors into messages that say what to do.
package mysqlx
