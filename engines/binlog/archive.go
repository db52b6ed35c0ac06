package binlog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/internal/archive"
)

// Repository layout, all sealed objects (internal/archive PutObject: compressed,
// encrypted when the repository is, verified on read, create-only):
//
//	binlog/<instance>/index/<segment>     JSON segmentMeta of a closed segment, with the SHA-256 of its bytes
//	binlog/<instance>/segments/<segment>  the closed segment: a native binlog file
//	binlog/<instance>/pieces/<segment>/<n> flush pieces of a segment, each self-describing
//
// <segment> is "<seq>-<server id>-<file>-<start position>": seq (8 digits) is
// the segment's place in the instance's stream, so names sort in stream order,
// and the server id tells two servers' same-named files apart after a failover.
//
// A segment is written in pieces while it is open (one PUT per flush). When it
// closes, the streamer writes the compacted segment, then its index entry, then
// deletes the pieces. A crash between any two steps leaves a state a reader
// handles: pieces with no index entry are the segment (the last such segment
// is the open one); pieces beside an index entry are leftovers. Nothing is
// ever overwritten, so no step can damage what an earlier one stored.
const (
	layoutVersion = 1
	pieceMagic    = "TMBLPC01"
)

func instancePrefix(instance string) string { return "binlog/" + instance + "/" }
func indexName(instance, seg string) string { return instancePrefix(instance) + "index/" + seg }
func segmentName(instance, seg string) string {
	return instancePrefix(instance) + "segments/" + seg
}
func piecePrefix(instance, seg string) string {
	return instancePrefix(instance) + "pieces/" + seg + "/"
}
func pieceName(instance, seg string, n int) string {
	return fmt.Sprintf("%s%08d", piecePrefix(instance, seg), n)
}

func segKey(seq uint64, serverID uint32, file string, start uint64) string {
	return fmt.Sprintf("%08d-%d-%s-%d", seq, serverID, file, start)
}

// ErrUnknownInstance is returned for an instance the repository holds no
// binlog of.
var ErrUnknownInstance = errors.New("the repository holds no binlog archive for this instance")

// ErrConflict marks a stored object that differs from what the streamer
// would write: another streamer writes the same instance, or the server's
// binlog changed under a stored position.
var ErrConflict = errors.New("archived binlog conflicts with the stream")

// SegmentInfo describes one archived segment.
type SegmentInfo struct {
	Name       string    `json:"name"`
	ServerID   uint32    `json:"server_id"`
	ServerUUID string    `json:"server_uuid,omitempty"` // MySQL's @@server_uuid; MariaDB has none
	File       string    `json:"file"`
	StartPos   uint64    `json:"start_pos"` // first event's start (4: the file's own Format_description)
	EndPos     uint64    `json:"end_pos"`   // last event's end
	FirstGTID  string    `json:"first_gtid,omitempty"`
	LastGTID   string    `json:"last_gtid,omitempty"`
	FirstTime  time.Time `json:"first_time"`
	LastTime   time.Time `json:"last_time"`
	GTIDStart  string    `json:"gtid_start"` // GTID position just before the first event
	Events     int       `json:"events"`
	Bytes      int64     `json:"bytes"` // of the native binlog file Open returns
	// GTIDEnd is the GTID position after the segment's last transaction.
	GTIDEnd string `json:"gtid_end"`
	// Closed is false for the open segment (served from its flush pieces).
	Closed bool `json:"closed"`
	// EndsFile: the segment holds its source file to the end (Rotate or Stop).
	EndsFile bool   `json:"ends_file,omitempty"`
	NextFile string `json:"next_file,omitempty"`
}

// Gap is a stretch of the source's binlog the archive does not hold: the
// transactions after the GTID position After up to and including the GTID
// position Before (each also names its file:pos).
type Gap struct {
	After    string    `json:"after"`  // where the archive stops before the gap
	Before   string    `json:"before"` // where it starts again: the position just before the next archived segment
	FromTime time.Time `json:"from_time"`
	ToTime   time.Time `json:"to_time"`
	Reason   string    `json:"reason"`
	// AfterGTID and BeforeGTID are After and Before as bare GTID
	// positions ("" when the source has no GTIDs), for code that compares.
	AfterGTID  string `json:"after_gtid,omitempty"`
	BeforeGTID string `json:"before_gtid,omitempty"`
	// DetectedAt is when the streamer recorded the gap (its clock); zero
	// for a break in the chain found on reading, and in archives written
	// before it was recorded.
	DetectedAt time.Time `json:"detected_at,omitzero"`
}

// completeGap is g as the archive reports it once the segment after it
// (meta) is known: where the archive starts again.
func completeGap(g Gap, meta SegmentInfo) Gap {
	if g.Before == "" {
		g.Before = pointOf(meta, true)
		g.ToTime = meta.FirstTime
	}
	if g.BeforeGTID == "" {
		g.BeforeGTID = meta.GTIDStart
	}
	return g
}

// segmentMeta is what the index entry and each piece header record about a
// segment: SegmentInfo as of its durable watermark (the end of its last
// complete transaction) plus what a resume needs.
type segmentMeta struct {
	Version  int    `json:"version"`
	Instance string `json:"instance"`
	Seq      uint64 `json:"seq"`
	Flavor   string `json:"flavor"`
	Host     string `json:"host"` // the server's address as the streamer dialled it
	SegmentInfo
	// Base maps a source position to an offset in the segment's bytes
	// (offset = pos - Base): events of a segment are contiguous.
	Base uint64 `json:"base"`
	// Durable is the length of the segment's bytes up to the watermark.
	Durable int64 `json:"durable"`
	// GapBefore is set when a gap precedes this segment.
	GapBefore *Gap `json:"gap_before,omitempty"`
	// FDE is the source file's Format_description event, so a later
	// segment of the same file can start with it without reading the file
	// from its beginning again.
	FDE []byte `json:"fde"`
	// SHA256 of the compacted segment's bytes (index entries only).
	SHA256 string `json:"sha256,omitempty"`
}

// pieceHeader heads a flush piece: the segment's state after the piece, and
// where the piece's data sits in the segment's bytes.
type pieceHeader struct {
	segmentMeta
	Piece  int   `json:"piece"`
	Offset int64 `json:"offset"` // of the piece's data in the segment's bytes
	// Raw is the segment's byte length after this piece, watermark or not
	// (the tail after Durable is an incomplete transaction).
	Raw    int64  `json:"raw"`
	RawEnd uint64 `json:"raw_end"` // source position at Raw
}

func encodePiece(h pieceHeader, data []byte) ([]byte, error) {
	hj, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(pieceMagic)+4+len(hj)+len(data))
	out = append(out, pieceMagic...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(hj)))
	out = append(out, hj...)
	return append(out, data...), nil
}

func decodePiece(name string, b []byte) (pieceHeader, []byte, error) {
	var h pieceHeader
	if len(b) < len(pieceMagic)+4 || string(b[:len(pieceMagic)]) != pieceMagic {
		return h, nil, fmt.Errorf("binlog piece %s: not a piece (bad magic)", name)
	}
	n := int(binary.BigEndian.Uint32(b[len(pieceMagic):]))
	rest := b[len(pieceMagic)+4:]
	if n > len(rest) {
		return h, nil, fmt.Errorf("binlog piece %s: header of %d bytes in %d", name, n, len(rest))
	}
	if err := json.Unmarshal(rest[:n], &h); err != nil {
		return h, nil, fmt.Errorf("binlog piece %s: header: %w", name, err)
	}
	if h.Version != layoutVersion {
		return h, nil, fmt.Errorf("binlog piece %s: layout version %d, this tidemark reads %d", name, h.Version, layoutVersion)
	}
	return h, rest[n:], nil
}

// Archive is an instance's archived binlog as the repository holds it; it
// needs no controller. It is a snapshot taken by OpenArchive.
type Archive struct {
	repo     *archive.Repo
	instance string
	segs     []*segState
	gaps     []Gap
	// durableAt is the newest object's modification time.
	durableAt time.Time
}

// segState is one segment as OpenArchive found it.
type segState struct {
	meta    segmentMeta
	indexed bool     // has an index entry (and so a compacted object)
	pieces  []string // piece object names in order
	last    pieceHeader
}

// Instances lists the instances the repository holds binlog archives of.
func Instances(ctx context.Context, repo *archive.Repo) ([]string, error) {
	seen := map[string]bool{}
	err := repo.ListObjects(ctx, "binlog/", func(oi archive.ObjectInfo) error {
		rest := strings.TrimPrefix(oi.Name, "binlog/")
		if i := strings.IndexByte(rest, '/'); i > 0 {
			seen[rest[:i]] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing binlog archives: %w", err)
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

// OpenArchive reads an instance's segment index and open pieces.
func OpenArchive(ctx context.Context, repo *archive.Repo, instance string) (*Archive, error) {
	if err := validInstance(instance); err != nil {
		return nil, err
	}
	a := &Archive{repo: repo, instance: instance}
	prefix := instancePrefix(instance)
	index := map[string]bool{}
	pieces := map[string][]string{}
	any := false
	err := repo.ListObjects(ctx, prefix, func(oi archive.ObjectInfo) error {
		any = true
		if oi.ModTime.After(a.durableAt) {
			a.durableAt = oi.ModTime
		}
		rest := strings.TrimPrefix(oi.Name, prefix)
		switch {
		case strings.HasPrefix(rest, "index/"):
			index[strings.TrimPrefix(rest, "index/")] = true
		case strings.HasPrefix(rest, "pieces/"):
			p := strings.SplitN(strings.TrimPrefix(rest, "pieces/"), "/", 2)
			if len(p) == 2 {
				pieces[p[0]] = append(pieces[p[0]], oi.Name)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("binlog archive %s: listing: %w", instance, err)
	}
	if !any {
		return nil, fmt.Errorf("binlog archive %q: %w (instances with an archive: tidemark binlog status --repo URI)", instance, ErrUnknownInstance)
	}
	names := map[string]bool{}
	for n := range index {
		names[n] = true
	}
	for n := range pieces {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		s := &segState{indexed: index[n]}
		if s.indexed {
			b, err := repo.GetObject(ctx, indexName(instance, n))
			if err != nil {
				return nil, fmt.Errorf("binlog archive %s: index entry %s: %w", instance, n, err)
			}
			if err := json.Unmarshal(b, &s.meta); err != nil {
				return nil, fmt.Errorf("binlog archive %s: index entry %s: %w", instance, n, err)
			}
			if s.meta.Version != layoutVersion {
				return nil, fmt.Errorf("binlog archive %s: index entry %s has layout version %d, this tidemark reads %d", instance, n, s.meta.Version, layoutVersion)
			}
			s.pieces = pieces[n] // leftovers to delete
		} else {
			ps := pieces[n]
			sort.Strings(ps)
			s.pieces = ps
			// The last piece carries the segment's state.
			b, err := repo.GetObject(ctx, ps[len(ps)-1])
			if err != nil {
				return nil, fmt.Errorf("binlog archive %s: piece %s: %w", instance, ps[len(ps)-1], err)
			}
			h, _, err := decodePiece(ps[len(ps)-1], b)
			if err != nil {
				return nil, err
			}
			if h.Piece != len(ps)-1 {
				return nil, fmt.Errorf("binlog archive %s: segment %s: %w: its last piece is number %d but %d pieces are stored (a piece is missing)", instance, n, archive.ErrDamaged, h.Piece, len(ps))
			}
			s.meta, s.last = h.segmentMeta, h
		}
		a.segs = append(a.segs, s)
	}
	a.checkChain()
	return a, nil
}

// checkChain collects the recorded gaps and adds any break in the stored
// chain (which only a bug or a hand-edited repository would make).
func (a *Archive) checkChain() {
	for i, s := range a.segs {
		if g := s.meta.GapBefore; g != nil {
			a.gaps = append(a.gaps, completeGap(*g, s.meta.SegmentInfo))
			continue
		}
		if i == 0 {
			continue
		}
		p := a.segs[i-1].meta
		if reason := chainBreak(p, s.meta); reason != "" {
			a.gaps = append(a.gaps, Gap{After: pointOf(p.SegmentInfo, false), Before: pointOf(s.meta.SegmentInfo, true),
				FromTime: p.LastTime, ToTime: s.meta.FirstTime, Reason: reason,
				AfterGTID: p.GTIDEnd, BeforeGTID: s.meta.GTIDStart})
		}
	}
}

// chainBreak says why b does not continue a, or "" when it does: the same
// file on the same server continues at a's end; the next file starts at 4
// after a Rotate or Stop; on another server (failover) the GTID position
// continues.
func chainBreak(a, b segmentMeta) string {
	if b.ServerID == a.ServerID && b.File == a.File {
		if b.StartPos != a.EndPos {
			return fmt.Sprintf("%s on server %d: archived to %d, next archived from %d", a.File, a.ServerID, a.EndPos, b.StartPos)
		}
		return ""
	}
	if b.ServerID == a.ServerID && a.EndsFile && b.StartPos == 4 && (a.NextFile == "" || a.NextFile == b.File) {
		return ""
	}
	if b.GTIDStart != "" && b.GTIDStart == a.GTIDEnd {
		return ""
	}
	return fmt.Sprintf("%s:%d on server %d is not followed by %s:%d on server %d (GTID %s then %s)",
		a.File, a.EndPos, a.ServerID, b.File, b.StartPos, b.ServerID, a.GTIDEnd, b.GTIDStart)
}

func pointOf(s SegmentInfo, start bool) string {
	if start {
		if s.GTIDStart != "" {
			return fmt.Sprintf("GTID %s (%s:%d)", s.GTIDStart, s.File, s.StartPos)
		}
		return fmt.Sprintf("%s:%d", s.File, s.StartPos)
	}
	if s.GTIDEnd != "" {
		return fmt.Sprintf("GTID %s (%s:%d)", s.GTIDEnd, s.File, s.EndPos)
	}
	return fmt.Sprintf("%s:%d", s.File, s.EndPos)
}

// Segments lists the archived segments in stream order. The open segment is
// last, described up to its last complete transaction.
func (a *Archive) Segments() []SegmentInfo {
	out := make([]SegmentInfo, 0, len(a.segs))
	for _, s := range a.segs {
		if s.meta.Events == 0 {
			continue // an open segment with nothing complete yet
		}
		out = append(out, s.meta.SegmentInfo)
	}
	return out
}

// Gaps lists the stretches of binlog the archive lacks, in stream order.
func (a *Archive) Gaps() []Gap { return append([]Gap(nil), a.gaps...) }

// Status summarises an instance's archive.
type Status struct {
	Instance      string    `json:"instance"`
	Segments      int       `json:"segments"`
	Bytes         int64     `json:"bytes"`
	FirstGTID     string    `json:"first_gtid,omitempty"`
	FirstTime     time.Time `json:"first_event_time"`
	LastEventTime time.Time `json:"last_event_time"`
	GTIDPosition  string    `json:"gtid_position"`
	File          string    `json:"file"`
	Position      uint64    `json:"position"`
	ServerID      uint32    `json:"server_id"`
	// DurableAt is when the newest durable state was written (the store's
	// modification time of its object).
	DurableAt time.Time `json:"durable_at"`
	// RPO is how much of the server's history a restore from the archive
	// alone would lose right now if the server were gone: the time since the
	// last archived event, measured at Status time. On an idle server it
	// grows although nothing is missing; compare GTIDPosition with the
	// server's @@gtid_binlog_pos to tell.
	RPO  time.Duration `json:"-"` // the CLI prints it as rpo_seconds
	Gaps []Gap         `json:"gaps"`
}

// Status reports the archived range and its end.
func (a *Archive) Status() Status {
	st := Status{Instance: a.instance, Gaps: a.Gaps(), DurableAt: a.durableAt}
	if st.Gaps == nil {
		st.Gaps = []Gap{}
	}
	segs := a.Segments()
	st.Segments = len(segs)
	for _, s := range segs {
		st.Bytes += s.Bytes
	}
	if len(segs) > 0 {
		f, l := segs[0], segs[len(segs)-1]
		st.FirstGTID, st.FirstTime = f.FirstGTID, f.FirstTime
		st.LastEventTime, st.GTIDPosition, st.File, st.Position, st.ServerID = l.LastTime, l.GTIDEnd, l.File, l.EndPos, l.ServerID
		st.RPO = time.Since(l.LastTime).Truncate(time.Second)
	}
	return st
}

// Open returns a segment's bytes: a native binlog file (magic, the source's
// Format_description, the events as the server sent them). For the open
// segment they end at its last complete transaction.
func (a *Archive) Open(ctx context.Context, s SegmentInfo) (io.ReadCloser, error) {
	for _, st := range a.segs {
		if st.meta.Name == s.Name {
			b, err := a.segmentBytes(ctx, st)
			if err != nil {
				return nil, err
			}
			return io.NopCloser(bytes.NewReader(b[:st.meta.Durable])), nil
		}
	}
	return nil, fmt.Errorf("binlog archive %s: no segment %s", a.instance, s.Name)
}

// segmentBytes reads a segment: the compacted object when indexed, else its
// pieces concatenated (every byte they hold, the incomplete tail included).
func (a *Archive) segmentBytes(ctx context.Context, s *segState) ([]byte, error) {
	if s.indexed {
		name := segmentName(a.instance, s.meta.Name)
		b, err := a.repo.GetObject(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("binlog segment %s: %w", name, err)
		}
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != s.meta.SHA256 || int64(len(b)) != s.meta.Durable {
			return nil, fmt.Errorf("binlog segment %s: %w: %d bytes with SHA-256 %x, its index entry says %d bytes, %s",
				name, archive.ErrDamaged, len(b), sum, s.meta.Durable, s.meta.SHA256)
		}
		return b, nil
	}
	return readPieces(ctx, a.repo, s.pieces)
}

func readPieces(ctx context.Context, repo *archive.Repo, names []string) ([]byte, error) {
	var out []byte
	for i, n := range names {
		b, err := repo.GetObject(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("binlog piece %s: %w", n, err)
		}
		h, data, err := decodePiece(n, b)
		if err != nil {
			return nil, err
		}
		if h.Piece != i || h.Offset != int64(len(out)) {
			return nil, fmt.Errorf("binlog piece %s: %w: piece %d at offset %d, expected piece %d at %d", n, archive.ErrDamaged, h.Piece, h.Offset, i, len(out))
		}
		out = append(out, data...)
	}
	return out, nil
}

func validInstance(name string) error {
	if name == "" || strings.ContainsAny(name, "/\\ \t\n") || strings.Contains(name, "..") || len(name) > 128 {
		return fmt.Errorf("instance name %q: use 1 to 128 characters without '/', spaces or '..'", name)
	}
	return nil
}
