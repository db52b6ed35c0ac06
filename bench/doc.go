// Package bench holds benchmarks of Tidemark against its peers (mariadb-dump,
// mydumper/myloader, mariabackup); they run by hand with `make bench`, never
// in `make test`.
package bench
