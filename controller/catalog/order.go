package catalog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/tidwall/btree"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Ordered indexes. Listings page newest first over indexes whose keys are
// a prefix (an instance, a state) followed by a time; memdb appends the
// record's id to every non-unique index key, so equal times are ordered by
// id and every key is distinct. A listing walks such an index from a
// position (a Cursor) instead of loading and sorting a whole table, so a
// page costs O(page) whatever the table's size.

// keyIndex is a memdb indexer whose key is computed from the record by
// key (ok false: the record is not in the index). Lookups pass the raw key
// bytes (built with the same helpers) as their one argument; Get with a
// shorter key returns every record under that prefix.
type keyIndex struct {
	key func(obj any) ([]byte, bool)
}

func (x keyIndex) FromObject(obj any) (bool, []byte, error) {
	k, ok := x.key(obj)
	return ok, k, nil
}

func (x keyIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("key index takes one argument, not %d", len(args))
	}
	b, ok := args[0].([]byte)
	if !ok {
		return nil, fmt.Errorf("key index takes a []byte key, not %T", args[0])
	}
	return b, nil
}

func (x keyIndex) PrefixFromArgs(args ...any) ([]byte, error) { return x.FromArgs(args...) }

// key building: strings end with a NUL (ids and names never hold one),
// times are 8 bytes big-endian with the sign bit flipped so that byte
// order is time order (nil times sort as the epoch), numbers 4 bytes.

func appendStr(b []byte, s string) []byte { return append(append(b, s...), 0) }

func appendTime(b []byte, t *timestamppb.Timestamp) []byte {
	return appendNanos(b, nanos(t))
}

func appendNanos(b []byte, n int64) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(n)^(1<<63))
}

func appendU32(b []byte, n uint32) []byte { return binary.BigEndian.AppendUint32(b, n) }

// nanos is t in Unix nanoseconds; nil is 0. Times beyond year 2262 (the
// range of int64 nanoseconds) are clamped by AsTime's UnixNano.
func nanos(t *timestamppb.Timestamp) int64 {
	if t == nil {
		return 0
	}
	return t.AsTime().UnixNano()
}

// Cursor is a position in a newest-first listing: the time and id of the
// last record of a page. The next page starts strictly after it, so
// records inserted meanwhile (newer, they sort before it) are neither
// repeated nor make the next page skip any.
type Cursor struct {
	// Unix nanoseconds of the record's ordering time (a job's creation, a
	// backup's start).
	At int64
	ID string
}

// CursorOf is the position of a record with ordering time t and id.
func CursorOf(t *timestamppb.Timestamp, id string) Cursor { return Cursor{At: nanos(t), ID: id} }

// Time is the cursor's time, for messages.
func (c Cursor) Time() time.Time { return time.Unix(0, c.At).UTC() }

// OlderThan reports whether c sorts after o in a newest-first listing.
func (c Cursor) OlderThan(o Cursor) bool {
	if c.At != o.At {
		return c.At < o.At
	}
	return c.ID < o.ID
}

// source is one ordered index range a listing merges: the index, the
// prefix all its records' keys share, and in, which tells from the record
// whether it is in the range (the walk stops at the first that is not;
// nil: the whole index). in reads the record's fields instead of building
// its key again: it runs for every record walked.
type source struct {
	index  string
	prefix []byte
	in     func(any) bool
}

// maxScan bounds the index entries one source walks for one page when a
// filter the index does not cover (a job kind, a backup status) rejects
// most of them: the page then comes back short, or empty, with a cursor
// where the walk stopped, and the caller asks again from there. It keeps
// every call's cost bounded, whatever the filter.
const maxScan = 5000

// lane is one ordered run of records a listing merges: walk calls visit
// for its records strictly older than after (all of them when after is
// nil), newest first, until visit returns false. visit gets the record's
// position, and the record when it matches the listing's filter (ok);
// a lane may leave a record that does not match undecoded.
type lane[T any] func(after *Cursor, visit func(p Cursor, rec T, ok bool) bool)

// treeEntry is an entry of the B-trees that hold finished jobs and
// backups: its position in the listings' order and its record, decoded
// on demand.
type treeEntry[T any] interface {
	pos() Cursor
	record() T
}

// treeLane walks one B-tree newest first for a listing, from the
// listing's cursor, while in (nil: always) holds; only the entries that
// match are decoded. pivot returns the tree's key at a cursor (nil: above
// the newest entry of the range).
func treeLane[E treeEntry[T], T any](t *btree.BTreeG[E], pivot func(after *Cursor) E, in, match func(E) bool) lane[T] {
	return func(after *Cursor, visit func(Cursor, T, bool) bool) {
		t.Descend(pivot(after), func(e E) bool {
			if in != nil && !in(e) {
				return false
			}
			p := e.pos()
			if after != nil && !p.OlderThan(*after) {
				return true // the cursor's own record
			}
			if match(e) {
				return visit(p, e.record(), true)
			}
			var none T
			return visit(p, none, false)
		})
	}
}

// memLane is the lane of one go-memdb index range.
func memLane[T any](r *Read, table string, s source, pos func(T) Cursor, match func(T) bool) lane[T] {
	return func(after *Cursor, visit func(Cursor, T, bool) bool) {
		start := append(bytes.Clone(s.prefix), bytes.Repeat([]byte{0xff}, 9)...)
		if after != nil {
			start = appendStr(appendNanos(bytes.Clone(s.prefix), after.At), after.ID)
		}
		it, err := r.txn.ReverseLowerBound(table, s.index, start)
		if err != nil {
			panic(fmt.Sprintf("catalog: %s walk by %s: %v", table, s.index, err))
		}
		for obj := it.Next(); obj != nil; obj = it.Next() {
			if s.in != nil && !s.in(obj) {
				return
			}
			t := obj.(T)
			p := pos(t)
			if after != nil && !p.OlderThan(*after) {
				continue // the cursor's own record
			}
			if !visit(p, t, match(t)) {
				return
			}
		}
	}
}

func memLanes[T any](r *Read, table string, sources []source, pos func(T) Cursor, match func(T) bool) []lane[T] {
	lanes := make([]lane[T], len(sources))
	for i, s := range sources {
		lanes[i] = memLane(r, table, s, pos, match)
	}
	return lanes
}

// pageScan returns up to limit records that match, newest first, strictly
// after `after` (nil: from the newest), merged from lanes, and the cursor
// of the next page (nil when there is none).
//
// Each lane is walked backwards from the cursor until it yielded limit+1
// matches, ran out, or walked maxScan entries. Everything at or above the
// newest of the stops of the lanes that did not run out has then been
// seen in every lane, so the page is the newest limit matches at or above
// that bound; a page shorter than limit but with more to walk gets the
// bound as its cursor.
func pageScan[T any](lanes []lane[T], pos func(T) Cursor, after *Cursor, limit int) ([]T, *Cursor) {
	if limit <= 0 {
		limit = 1
	}
	var (
		found []T
		bound *Cursor // the newest stop of a lane that did not run out
	)
	for _, walk := range lanes {
		n, scanned := 0, 0
		var last *Cursor
		exhausted := true
		walk(after, func(p Cursor, t T, ok bool) bool {
			if scanned >= maxScan || n > limit {
				exhausted = false
				return false
			}
			scanned++
			last = &p
			if ok {
				found = append(found, t)
				n++
			}
			return true
		})
		if !exhausted && last != nil && (bound == nil || bound.OlderThan(*last)) {
			bound = last
		}
	}
	// Keep what is at or above the bound, newest first.
	kept := found[:0]
	for _, t := range found {
		if bound == nil || !pos(t).OlderThan(*bound) {
			kept = append(kept, t)
		}
	}
	sortNewestFirst(kept, pos)
	if len(kept) > limit {
		c := pos(kept[limit-1])
		return kept[:limit], &c
	}
	return kept, bound
}

func sortNewestFirst[T any](ts []T, pos func(T) Cursor) {
	slices.SortFunc(ts, func(a, b T) int {
		pa, pb := pos(a), pos(b)
		switch {
		case pb.OlderThan(pa):
			return -1
		case pa.OlderThan(pb):
			return 1
		}
		return 0
	})
}
