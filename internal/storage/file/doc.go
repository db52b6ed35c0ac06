// Package file stores objects as files under a local directory, making each
// put visible only once it is complete and durable.
//
// Large objects handed over in memory (the archive's chunks) are written with
// O_DIRECT on Linux, so that a backup does not spend the database host's CPU
// on the page cache; a filesystem that refuses direct I/O gets ordinary
// writes. See direct_linux.go.
package file
