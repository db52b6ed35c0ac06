// Package binlog archives a server's binary log continuously into the
// repository, as native binlog segments plus an index, and reads the archive
// back without the controller.
//
// # Streaming
//
// Stream connects as a replica (go-mysql's BinlogSyncer in raw mode, its own
// retries off: the stream is driven with GetEvent and reconnects are ours),
// keeps the events exactly as the server sent them (checksums included) and
// drops the ones a dump connection adds: the fake Rotate at the start, a
// re-sent Format_description with log_pos 0, heartbeats. A segment is a
// native binlog file: the magic, the source file's Format_description (a
// copy of it when the segment starts mid-file), then events with their
// original log_pos; it never spans source files and closes at a rotation, a
// Stop event, a size cap (16 MiB) or an age (15 min), always at a transaction
// boundary.
//
// # Durability and RPO
//
// The open segment's new bytes are flushed as one create-only piece (one PUT)
// at most Flush (default 1 s) after the oldest unflushed event arrived; an
// idle server writes nothing. Each piece carries the segment's state as of
// its last complete transaction (the watermark): GTID position, file and
// position, event time. A closed segment is compacted: the whole segment as
// one object, then its index entry, then the pieces are deleted; the
// compaction runs beside the stream so its PUT does not delay the next flush.
//
// # Resume, continuity and gaps
//
// On start the archive's state is read back from the index and the open
// segment's pieces. On the same server the stream resumes by file and
// position at the watermark; the server sends the incomplete transaction
// again and every re-sent event must equal the stored bytes (different bytes
// are ErrConflict). On another server (failover, several DSNs) the open
// segment is cut at its watermark and the stream resumes by GTID. A server
// that no longer holds what the archive needs answers error 1236; that is
// recorded as a Gap on the next segment, logged, and streaming restarts at
// the server's oldest binlog. MariaDB GTID sequence numbers may jump (they
// are per domain and shared by servers), so a jump is not taken as a gap:
// continuity is the binlog chain (same server and file: positions meet; next
// file after a Rotate or Stop; another server: the GTID position carries
// over) and the server's own refusal.
//
// # One streamer per instance
//
// Pieces and segments are create-only. Two streamers on one instance resume
// from the same state and compute the same next piece name; the second PUT
// finds it taken with other bytes and fails with ErrConflict. An object
// already there with the same bytes is our own PUT retried, and is accepted.
package binlog
