// Package physicaltest writes physical backups of test servers the way the
// physical engines do, for restore tests on branches (and packages) that do
// not have the engines: a crash-consistent image of a killed server's
// datadir (what the snapshot engine stores) and mariabackup's prepared-later
// output (what the mariabackup engine stores).
package physicaltest
