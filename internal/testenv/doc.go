// Package testenv starts throwaway real servers for tests on free loopback
// ports and cleans them up: mariadbd (StartMariaDB), MinIO (StartMinIO),
// Btrfs on a loop device (StartBtrfs), a small tmpfs for disk-full
// (Tmpfs), tidemark processes (Child), and proxies for faults this machine
// has no tool for (ProxyAccept).
//
// What this machine cannot run is replaced by DOUBLES, each named so and
// each saying in its comment what it cannot show: MySQL 8 as a SQL server
// in front of a real MariaDB (MySQL8Double), its clone plugin
// (CloneDouble), a MySQL replication source (MySQLSourceDouble) and a
// MySQL replica as a point-in-time restore's target (MySQLReplicaDouble).
// In CI (CI=true) a missing dependency fails the test; elsewhere it skips.
package testenv
