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
// boundary. MariaDB leaves Annotate_rows events out of a dump unless asked
// (BINLOG_SEND_ANNOTATE_ROWS_EVENT), so the streamer asks.
//
// # Durability and RPO
//
// The open segment's new bytes are stored as one create-only, uncompressed
// piece (one PUT; only the compacted segment is compressed)
// so that they are durable about Flush (default 1 s) after the oldest of them
// arrived: the PUT starts a decaying maximum of recent PUT times early (at
// most Flush/2), in the background while events keep being read, one PUT in
// flight at a time; an idle server writes nothing. Each piece carries the
// segment's state as of its last complete transaction (the watermark): GTID
// position, file and position, event time; OnWatermark reports it once the
// PUT returned. A piece whose PUT failed is stored again with the same
// bytes. A segment holding only its file's header events is not stored. A
// closed segment is compacted beside the stream: the whole segment as one
// object, then its index entry (with the segment's SHA-256), then the pieces
// are deleted. `tidemark binlog stream` runs under MemoryLimit.
//
// Events are read in batches on purpose: after an event that found the queue
// empty the streamer pauses 10 ms, so go-mysql's small queue fills and the
// rest waits in the socket buffer; waking per event cost more CPU than the
// events themselves (see bench/README.md).
//
// # Liveness
//
// go-mysql's ReadTimeout would set a read deadline on every packet; instead
// the server sends heartbeats (Heartbeat, default 1 s) and a connection that
// brought neither an event nor a heartbeat for 4 periods is closed and
// dialled again. The dump connection's setup and the connection go-mysql
// opens to KILL it have deadlines of their own.
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
// the server's oldest binlog; OnGap reports it once that segment is
// durable, and every start reports the gaps the archive already holds. MariaDB GTID sequence numbers may jump (they
// are per domain and shared by servers), so a jump is not taken as a gap:
// continuity is the binlog chain (same server and file: positions meet; next
// file after a Rotate or Stop; another server: the GTID position carries
// over) and the server's own refusal.
//
// # Retention
//
// Every RetentionCheck (30 s), off the stream's goroutine, the server's
// binlog list is compared with the file being archived: a warning when that
// file is the server's oldest or next to oldest while newer ones exist (the
// next purge or expiry would cut into what is not archived yet); with
// PurgeArchived, PURGE BINARY LOGS up to the file PurgeKeep files before the
// one being archived, only when every file before it was archived to its end.
//
// # One streamer per instance
//
// Pieces and segments are create-only. Two streamers on one instance resume
// from the same state and compute the same next piece name; the second PUT
// finds it taken with other bytes and fails with ErrConflict. An object
// already there with the same bytes is our own PUT retried, and is accepted.
package binlog
