// Package xbstream reads the xbstream format that `mariabackup --stream=xbstream`
// and `xtrabackup --stream=xbstream` write, from an io.Reader, chunk by chunk,
// with every chunk's CRC-32 verified.
//
// Format (MariaDB extra/mariabackup/xbstream.h, xbstream_write.cc; Percona
// doc/xbstream_format.md). A stream is a sequence of chunks, all integers
// little-endian:
//
//	magic "XBSTCK01" | flags (1) | type (1) | path length (4) | path
//	then by type:
//	  'P' payload: length (8) | file offset (8) | CRC-32 of the payload (4) | payload
//	  'E' end of file: nothing
//	  'S' (MariaDB) seek: file offset (8); the file's next payload goes there
//	  'S' (Percona) sparse: map entries (4) | length (8) | offset (8) | CRC-32
//	      of map and payload (4) | map entries × (skip (4), len (4)) | payload
//	  'D' remove the file; 'R' rename: new path length (4) | new path
//
// 'S' means two different things to the two writers, so a Reader is told
// which one wrote the stream (Options.Dialect). Flag 0x01 marks a chunk of
// unknown type as ignorable; 0x02 (MariaDB) marks a payload that rewrites
// the file from the start of the backup's view of it.
//
// Chunks of several files interleave when the writer copies files in
// parallel (--parallel > 1), but each chunk is contiguous in the stream and
// one file's chunks arrive in the order they were written. The Reader
// reports chunks as they come; it tracks which files are open so that a
// stream that ends with files lacking their end-of-file chunk is an error
// naming them, like one that ends inside a chunk or fails a checksum (both
// named with the file and the stream offset).
package xbstream
