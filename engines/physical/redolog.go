package physical

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// InnoDB's redo log in MariaDB's format of 10.8 and later (log_t::FORMAT_10_8,
// storage/innobase/include/log0log.h and log0recv.cc): one file,
// ib_logfile0, a 12 KiB header and a circular data area behind it.
//
//   - Bytes 0–511: the file header. Format (4 bytes, big-endian) "Phys",
//     4 zero bytes, the LSN of the data area's first byte (8 bytes), the
//     creator string, at 48 the encryption key version (non-zero: an
//     encrypted log), and the CRC-32C of bytes 0–507 at 508.
//   - At 4096 and 8192: the two checkpoint blocks, written alternately.
//     Each is the checkpoint LSN and the end LSN (8 bytes each), zeros up
//     to byte 60, and the CRC-32C of bytes 0–59 at 60. Recovery uses the
//     valid one with the larger checkpoint LSN (recv_sys_t::find_checkpoint).
//   - From 12288 (START_OFFSET) to the end: the log, LSN l at offset
//     START_OFFSET + (l - first LSN) mod (file size - START_OFFSET).
//
// Crash recovery reads the log from the checkpoint LSN onwards (from the
// 512- or 4096-byte block holding it) to its end, which it recognises at
// a mini-transaction that starts with a byte 0 or 1, whose termination
// marker has the wrong sequence bit (the bit flips at every wrap), or whose
// CRC-32C does not match (recv_sys_t::parse). Everything outside the
// header and [checkpoint LSN, end] is never read: old log of earlier
// passes or, in a new file, zeros. Restored as zeros it reads as the end
// of the log: a mini-transaction starting with byte 0.
const (
	redoFormat108   = 0x50687973 // "Phys"
	redoStartOffset = 12288      // log_t::START_OFFSET, also log_t::FIRST_LSN
	redoCheckpoint1 = 4096
	redoCheckpoint2 = 8192
	// RedoLogName is the redo log file of MariaDB 10.8 and later.
	RedoLogName = "ib_logfile0"
	// RedoMargin is kept beyond the end LSN RedoLive is given: the end
	// passed is an upper bound already (read after the snapshot), the
	// margin only guards against an off-by-a-record reading of it.
	RedoMargin = 1 << 20
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// RedoWindow is what RedoLive found in a redo log.
type RedoWindow struct {
	FirstLSN, CheckpointLSN, EndLSN uint64
	FileSize                        int64
	Live                            []Extent // the header and the log from the checkpoint to EndLSN + RedoMargin
}

// LiveBytes is the sum of the live extents.
func (w *RedoWindow) LiveBytes() int64 {
	var n int64
	for _, e := range w.Live {
		n += e.Len
	}
	return n
}

// ErrRedoUnknown says a redo log was not parsed with certainty: the whole
// file must be kept.
var ErrRedoUnknown = errors.New("the whole redo log is kept")

// RedoLive reads the header and checkpoints of the redo log at path (a
// frozen copy: a snapshot) and returns the ranges crash recovery can read,
// given endLSN, an LSN at or beyond the end of the log in that copy (the
// server's Innodb_lsn_current read after the snapshot was taken). Anything
// not known with certainty (another format, an encrypted log, a bad
// header or checkpoint checksum, an online log resize in progress, an end
// LSN before the checkpoint, a live part as large as the log) is an error
// wrapping ErrRedoUnknown and saying why: the caller keeps the whole file.
func RedoLive(path string, endLSN uint64) (*RedoWindow, error) {
	fail := func(format string, a ...any) (*RedoWindow, error) {
		return nil, fmt.Errorf("%w: %s: %s", ErrRedoUnknown, path, fmt.Sprintf(format, a...))
	}
	// While the log is being resized online (SET GLOBAL
	// innodb_log_file_size) the new log is ib_logfile101 and checkpoints
	// go to both: not a state to reason about here.
	if _, err := os.Stat(filepath.Join(filepath.Dir(path), "ib_logfile101")); err == nil {
		return fail("ib_logfile101 exists beside it (a log resize in progress)")
	}
	f, err := os.Open(path)
	if err != nil {
		return fail("%v", err)
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return fail("%v", err)
	}
	size := st.Size()
	if size <= redoStartOffset+4096 {
		return fail("%d bytes: too small for a log of format 10.8", size)
	}
	hdr := make([]byte, redoStartOffset)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return fail("reading the header: %v", err)
	}
	be := binary.BigEndian
	if v := be.Uint32(hdr[0:]); v != redoFormat108 {
		return fail("log format %#x, not MariaDB 10.8's %#x", v, redoFormat108)
	}
	if be.Uint32(hdr[4:]) != 0 || crc32.Checksum(hdr[:508], crc32c) != be.Uint32(hdr[508:]) {
		return fail("the header's checksum or reserved bytes do not match")
	}
	if be.Uint32(hdr[48:]) != 0 {
		return fail("an encrypted log")
	}
	w := &RedoWindow{FirstLSN: be.Uint64(hdr[8:]), FileSize: size}
	if w.FirstLSN < redoStartOffset {
		return fail("first LSN %d is below the minimum %d", w.FirstLSN, redoStartOffset)
	}
	var ckEnd uint64
	found := false
	for _, at := range []int{redoCheckpoint1, redoCheckpoint2} {
		b := hdr[at : at+64]
		ck, end := be.Uint64(b), be.Uint64(b[8:])
		if ck < w.FirstLSN || end < ck || !allZero(b[16:60]) || crc32.Checksum(b[:60], crc32c) != be.Uint32(b[60:]) {
			continue // recovery skips it too
		}
		if !found || ck >= w.CheckpointLSN {
			w.CheckpointLSN, ckEnd, found = ck, end, true
		}
	}
	if !found {
		return fail("no valid checkpoint")
	}
	if endLSN < ckEnd {
		return fail("the end LSN given, %d, is before the checkpoint's end LSN %d: not this server's log", endLSN, ckEnd)
	}
	w.EndLSN = endLSN
	capacity := uint64(size - redoStartOffset)
	// From the 4096-byte block of the file holding the checkpoint
	// (recovery reads whole blocks) to the end plus the margin.
	off := int64(redoStartOffset + (w.CheckpointLSN-w.FirstLSN)%capacity)
	lead := off % 4096
	off -= lead
	n := endLSN - w.CheckpointLSN + RedoMargin + uint64(lead)
	if n >= capacity {
		return fail("the log from the checkpoint (LSN %d) to the end (LSN %d) fills all of it", w.CheckpointLSN, endLSN)
	}
	w.Live = []Extent{{0, redoStartOffset}}
	if first := min(int64(n), size-off); first > 0 {
		w.Live = append(w.Live, Extent{off, first})
		if rest := int64(n) - first; rest > 0 {
			w.Live = append(w.Live, Extent{redoStartOffset, rest})
		}
	}
	w.Live = mergeExtents(w.Live)
	return w, nil
}

// mergeExtents sorts nothing: it joins neighbours of an ordered list that
// touch or overlap, and orders the (at most three) redo extents.
func mergeExtents(es []Extent) []Extent {
	// Insertion sort: a handful of extents.
	for i := 1; i < len(es); i++ {
		for j := i; j > 0 && es[j].Off < es[j-1].Off; j-- {
			es[j], es[j-1] = es[j-1], es[j]
		}
	}
	var out []Extent
	for _, e := range es {
		if k := len(out); k > 0 && e.Off <= out[k-1].End() {
			out[k-1].Len = max(out[k-1].End(), e.End()) - out[k-1].Off
			continue
		}
		out = append(out, e)
	}
	return out
}
