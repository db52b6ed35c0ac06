package apply

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tidemark-backup/tidemark/engines/binlog/gtid"
)

// File is one native binlog file (magic, Format_description event, events
// with their original positions), such as a segment of the binlog archive or
// a file of a server's datadir. Open may be called more than once (Plan
// reads every file, then Apply reads them again) and each reader is closed.
type File struct {
	Name string
	// ServerID wrote the file (0: unknown). It tells same-named files of
	// two servers apart when a stop position names one (a failover).
	ServerID uint32
	Open     func(ctx context.Context) (io.ReadCloser, error)
}

// Methods of Params.Method.
const (
	MethodAuto        = ""            // replication, or sql when the target refuses to replicate
	MethodReplication = "replication" // the server's replication applier, fed by a replication source we serve
	MethodSQL         = "sql"         // mariadb-binlog | mariadb, one session
)

// Params are Plan's and Apply's inputs.
type Params struct {
	DSN   string // the target server (go-sql-driver form)
	Files []File // in stream order; names may repeat (two servers after a failover)
	// StartGTID skips every transaction at or before this position, per
	// domain: the base backup's GTID position. A transaction whose sequence
	// number is at or below the position's in its domain is skipped, which
	// also skips what an overlapping file (a new primary's binlog holding
	// the old primary's transactions) repeats.
	//
	// For MySQL files it is a MySQL GTID set (the base's gtid_executed,
	// "uuid:1-100,uuid2:1-7"): a transaction whose GTID is in the set, or
	// was seen earlier in the files, is skipped.
	StartGTID string
	// StartFile and StartPos start instead at an event boundary of a file
	// (sources without GTIDs); StartFileIndex (1-based) picks the file when
	// its name is not unique in Files.
	StartFile      string
	StartFileIndex int
	StartPos       uint64
	// StartTime is the base's consistency time, when known: a Stop.Time
	// before it is refused.
	StartTime time.Time
	Stop      Stop
	Method    string // MethodAuto, MethodReplication or MethodSQL
	// Parallel > 1 sets the target's slave_parallel_threads for the apply
	// (replication method; the old value is put back).
	Parallel int
	// NoBinlog keeps the applied transactions out of the target's binary
	// log: the replication method is used only where the target does not
	// binlog what it replicates (log_slave_updates off), else the sql
	// method runs with mariadb-binlog --disable-log-bin.
	NoBinlog bool
	// ServeAddr is where the replication source listens; the target
	// connects to it. Default 127.0.0.1:0 (the target is on this host).
	ServeAddr string
	// TLS protects the target's connection to the source (see SourceTLS):
	// by default TLS when the target's DSN uses TLS.
	TLS SourceTLS
	// ThenReplicateFrom is the DSN of a live source: afterwards the target
	// replicates from it (default connection, MASTER_USE_GTID=slave_pos)
	// from the restored GTID position.
	ThenReplicateFrom string
	Progress          func(Progress)
	// Logger receives debug records (the replica's queries); default none.
	Logger *slog.Logger
	// MariaDBBinlog and MariaDB are the client programs of the sql method;
	// default mariadb-binlog (else mysqlbinlog) and mariadb (else mysql).
	MariaDBBinlog, MariaDB string
	// Planned is what Plan returned for these same Params: Apply then does
	// not read every file once more to plan again. nil: Apply plans.
	Planned *PlanResult
}

// Stop is where the roll-forward ends: exactly one field set, or none (to the
// last complete transaction of the files).
type Stop struct {
	GTID string // include this transaction (MariaDB d-s-n, or MySQL uuid:n)
	// File and Pos stop before the event that starts at Pos in File (the
	// source's coordinates). When the name is not unique, ServerID (the
	// server that wrote it) or FileIndex (1-based) picks the file.
	File      string
	ServerID  uint32
	FileIndex int
	Pos       uint64
	// Time includes every transaction whose time (its commit event's
	// timestamp, whole seconds) is at or before it, and stops before the
	// first one after it.
	Time time.Time
}

func (s Stop) String() string {
	switch {
	case s.GTID != "":
		return "GTID " + s.GTID
	case s.File != "" || s.FileIndex > 0:
		if s.ServerID != 0 {
			return fmt.Sprintf("position %s:%d of server %d", s.File, s.Pos, s.ServerID)
		}
		return fmt.Sprintf("position %s:%d", s.File, s.Pos)
	case !s.Time.IsZero():
		return "time " + s.Time.UTC().Format(time.RFC3339)
	}
	return "the end of the files"
}

// Progress is reported while Apply runs, from one goroutine at a time.
type Progress struct {
	Phase        string // "plan", "apply", "done"
	Transactions int    // to apply
	Applied      int    // known applied (replication: by position)
	BytesSent    int64
	Bytes        int64 // of the transactions to apply
}

// Point is one transaction (or stop) in the files.
type Point struct {
	GTID      string
	File      string
	FileIndex int    // 1-based index in Params.Files
	Pos       uint64 // where the transaction starts
	End       uint64 // where it ends (the next event starts)
	Time      time.Time
}

func (p Point) String() string {
	if p.FileIndex == 0 {
		return "none"
	}
	s := fmt.Sprintf("%s:%d", p.File, p.Pos)
	if p.GTID != "" {
		s = "GTID " + p.GTID + " at " + s
	}
	return s + " (" + p.Time.UTC().Format(time.RFC3339) + ")"
}

// Range is what the files can reach from the start position.
type Range struct {
	First, Last Point    // first and last transaction after the start position (First.FileIndex 0: none)
	Gaps        []string // transactions missing from the files, where
}

func (r Range) String() string {
	s := "nothing after the start position"
	if r.First.FileIndex != 0 {
		s = "from " + r.First.String() + " to " + r.Last.String()
	}
	if len(r.Gaps) > 0 {
		s += "; gaps: " + strings.Join(r.Gaps, "; ")
	}
	return s
}

// ErrUnreachable: the stop point is not within the files' reach from the
// start position. The error is an *UnreachableError with the available range.
var ErrUnreachable = errors.New("point-in-time target not reachable from these binlog files")

// UnreachableError says why the stop cannot be reached and what can be.
type UnreachableError struct {
	Stop      Stop
	Reason    string
	Available Range
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("roll forward to %s: %s; the binlog files reach %s", e.Stop, e.Reason, e.Available)
}

func (e *UnreachableError) Unwrap() error { return ErrUnreachable }

// PlanResult is what Apply would apply.
type PlanResult struct {
	First, Last  Point // first and last transaction to apply (FileIndex 0: none)
	Transactions int
	Bytes        int64
	StartGTID    string // the start position (given, or read from the files)
	EndGTID      string // the GTID position once applied: start merged with what is applied (MySQL: their union)
	// MySQL is true when the files' transactions carry MySQL GTIDs;
	// StartGTID and EndGTID are then MySQL GTID sets.
	MySQL     bool
	Available Range
	ServerIDs []uint32 // origins of the applied transactions
	Warnings  []string

	checkpoints []checkpoint // every checkpointEvery-th transaction to apply
	files       []filePlan
	checksum    bool // the first file's checksum algorithm is CRC32
	lastFile    int  // 0-based index of the file holding Last
	lastEnd     uint64
	firstFile   int
	// mysqlApplied is the set of the MySQL GTIDs to apply; mysqlGTIDs is
	// true when a planned transaction has a MySQL GTID, anonymous when one
	// has none (MySQL with gtid_mode OFF).
	mysqlApplied gtid.MySQLSet
	mysqlGTIDs   bool
	anonymous    bool
}

// filePlan is, for one file, the byte ranges to send.
type filePlan struct {
	ranges [][2]uint64 // [start, end) of the applied transactions, merged, in order
}

// txn is one complete transaction (event group) of the files.
type txn struct {
	file       int
	start, end uint64
	gtid       GTID
	hasGTID    bool
	time       uint32
	serverID   uint32
	// A MySQL GTID (hasMySQL), or a MySQL anonymous transaction (anon).
	sid      uuid.UUID
	gno      int64
	hasMySQL bool
	anon     bool
}

func (t txn) point(files []File) Point {
	p := Point{File: files[t.file].Name, FileIndex: t.file + 1, Pos: t.start, End: t.end, Time: time.Unix(int64(t.time), 0).UTC()}
	switch {
	case t.hasGTID:
		p.GTID = t.gtid.String()
	case t.hasMySQL:
		p.GTID = mysqlGTIDString(t.sid, t.gno)
	}
	return p
}

func mysqlGTIDString(u uuid.UUID, n int64) string { return u.String() + ":" + strconv.FormatInt(n, 10) }

// scanned is one file's content as Plan needs it.
type scanned struct {
	end        uint64 // end of the last whole event
	maxTime    uint32
	incidents  []uint64
	boundary   bool // Stop.Pos (in this file) is an event boundary
	startBound bool // StartPos (in this file) is an event boundary
	checksum   bool
}

// Plan reads the files, touching no server, and says what Apply would
// apply: the first and last transaction, or ErrUnreachable (an
// *UnreachableError naming the available range) when the stop point is
// before the start, after the last complete transaction, not in the files,
// or beyond a gap.
func Plan(ctx context.Context, p Params) (*PlanResult, error) {
	if len(p.Files) == 0 {
		return nil, errors.New("roll forward: no binlog files given")
	}
	// Refused here too, so that a caller that plans before writing a base
	// (pitr) refuses bad TLS settings before anything is written.
	if err := validateTLS(p); err != nil {
		return nil, err
	}
	var (
		start  Position
		mstart gtid.MySQLSet // the start as a MySQL GTID set
		err    error
	)
	if gtid.IsMySQLSet(p.StartGTID) {
		if mstart, err = gtid.ParseMySQLSet(p.StartGTID); err != nil {
			return nil, fmt.Errorf("roll forward: start position: %w", err)
		}
	} else if start, err = ParsePosition(p.StartGTID); err != nil {
		return nil, fmt.Errorf("roll forward: start position: %w", err)
	}
	nstop := 0
	var (
		stopGTID  GTID
		stopMySQL bool // the stop is a MySQL GTID, stopSID:stopGNO
		stopSID   uuid.UUID
		stopGNO   int64
	)
	if p.Stop.GTID != "" {
		nstop++
		if gtid.IsMySQLSet(p.Stop.GTID) {
			stopMySQL = true
			if stopSID, stopGNO, err = gtid.ParseMySQLTarget(p.Stop.GTID); err != nil {
				return nil, fmt.Errorf("roll forward: stop: %w", err)
			}
		} else if stopGTID, err = ParseGTID(p.Stop.GTID); err != nil {
			return nil, fmt.Errorf("roll forward: stop: %w", err)
		}
		if mstart != nil && !stopMySQL {
			return nil, fmt.Errorf("roll forward: the start is a MySQL GTID set (%s) but the stop GTID %s is MariaDB's domain-server-seq: give the stop as UUID:N", p.StartGTID, p.Stop.GTID)
		}
		if len(start) > 0 && stopMySQL {
			return nil, fmt.Errorf("roll forward: the start is a MariaDB GTID position (%s) but the stop GTID %s is MySQL's UUID:N: give the stop as domain-server-seq", p.StartGTID, p.Stop.GTID)
		}
	}
	isStop := func(t txn) bool {
		if stopMySQL {
			return t.hasMySQL && t.sid == stopSID && t.gno == stopGNO
		}
		return p.Stop.GTID != "" && t.hasGTID && t.gtid == stopGTID
	}
	stopFile := -1
	if p.Stop.File != "" || p.Stop.FileIndex > 0 {
		nstop++
		if stopFile, err = fileIndex(p.Files, p.Stop.File, p.Stop.FileIndex, p.Stop.ServerID, "stop"); err != nil {
			return nil, err
		}
		if p.Stop.Pos < 4 {
			return nil, fmt.Errorf("roll forward: stop position %d in %s: a binlog position is at least 4", p.Stop.Pos, p.Stop.File)
		}
	}
	if !p.Stop.Time.IsZero() {
		nstop++
	}
	if nstop > 1 {
		return nil, fmt.Errorf("roll forward: the stop names %d kinds of target (GTID %q, file %q, time %v): give exactly one", nstop, p.Stop.GTID, p.Stop.File, p.Stop.Time)
	}
	startFile := -1
	if p.StartFile != "" || p.StartFileIndex > 0 {
		if len(start) > 0 || mstart != nil {
			return nil, errors.New("roll forward: give a start GTID position or a start file and position, not both")
		}
		if startFile, err = fileIndex(p.Files, p.StartFile, p.StartFileIndex, 0, "start"); err != nil {
			return nil, err
		}
		if p.StartPos < 4 {
			return nil, fmt.Errorf("roll forward: start position %d: a binlog position is at least 4", p.StartPos)
		}
	}

	res := &PlanResult{files: make([]filePlan, len(p.Files)), firstFile: -1, mysqlApplied: gtid.MySQLSet{}}
	type loc struct {
		file int
		pos  uint64
	}
	before := func(a, b loc) bool { return a.file < b.file || (a.file == b.file && a.pos < b.pos) }
	type gapAt struct {
		at  loc
		msg string
	}
	var (
		gaps     []gapAt
		state    Position // per domain, the last transaction applied or in the base
		end      Position // the position once applied
		started  = startFile < 0
		stopped  bool                   // the stop is reached: nothing more is applied
		stopLoc  = loc{len(p.Files), 0} // where the applied stream ends
		baseLast *txn                   // the last transaction skipped before the first one included
		anyIn    bool
		seenStop *txn // the stop GTID, seen but skipped (at or before the start)
		maxTime  uint32
		sids     = map[uint32]bool{}
		checksum []bool
		// The MySQL counterparts of state and end: every MySQL GTID in
		// the base or seen in the files, and the set once applied.
		mstate = gtid.MySQLSet{}
		mend   = gtid.MySQLSet{}
	)
	if mstart != nil {
		mstate.AddSet(mstart)
		mend.AddSet(mstart)
		res.StartGTID = mstart.String()
	}
	switch {
	case stopMySQL:
		if mstart.Contains(stopSID, stopGNO) && mstart.Last(stopSID) == stopGNO {
			stopped = true // the start's last of that UUID: nothing to apply
			stopLoc = loc{}
		}
	case p.Stop.GTID != "":
		if st, ok := start.Get(stopGTID.Domain); ok && st == stopGTID {
			stopped = true // the start itself: nothing to apply
			stopLoc = loc{}
		}
	}
	mysqlBase := mstart == nil && len(start) == 0 // the first file's Previous_gtids is the base
	onPrev := func(i int, set gtid.MySQLSet) {
		if i == 0 && mysqlBase {
			mstate.AddSet(set)
			mend.AddSet(set)
			if startFile < 0 {
				res.StartGTID = set.String()
			}
			return
		}
		if !started {
			return
		}
		if missing := set.Sub(mstate); !missing.IsEmpty() {
			have := "nothing before it"
			if !mstate.IsEmpty() {
				have = "only " + mstate.String()
			}
			gaps = append(gaps, gapAt{loc{i, 4}, fmt.Sprintf("%s (file %d) starts after GTIDs %s, which are neither in the start position nor in the files before it (they hold %s)", p.Files[i].Name, i+1, missing, have)})
		}
	}
	stopTime := p.Stop.Time
	onList := func(i int, list Position) {
		if i == 0 && len(start) == 0 {
			// No GTID base given: what came before the first file is in the base.
			state = append(state, list...)
			end = append(end, list...)
			if startFile < 0 {
				res.StartGTID = list.String()
			}
			return
		}
		if !started {
			return
		}
		for _, g := range list {
			if st, ok := state.Get(g.Domain); !ok || st.Seq < g.Seq {
				have := "nothing"
				if ok {
					have = st.String()
				}
				gaps = append(gaps, gapAt{loc{i, 4}, fmt.Sprintf("%s (file %d) starts after GTID %s but the transactions before it reach only %s in domain %d", p.Files[i].Name, i+1, g, have, g.Domain)})
			}
		}
	}
	var startErr error
	onTxn := func(t txn) {
		i := t.file
		if !started && i == startFile {
			if t.start < p.StartPos && t.end > p.StartPos && startErr == nil {
				startErr = fmt.Errorf("roll forward: start position %s:%d is inside the transaction at %s:%d", p.Files[i].Name, p.StartPos, p.Files[i].Name, t.start)
			}
			if started = t.start >= p.StartPos; started {
				res.StartGTID = startString(end, mend)
			}
		}
		in := false
		switch {
		case !started:
			if t.hasGTID { // in the base
				state.Set(t.gtid)
				end.Set(t.gtid)
			}
			if t.hasMySQL {
				mstate.Add(t.sid, t.gno)
				mend.Add(t.sid, t.gno)
			}
		case t.hasMySQL:
			if mstate.Contains(t.sid, t.gno) {
				break // in the start set, or repeated by an overlapping file
			}
			in = true
			mstate.Add(t.sid, t.gno)
		case t.hasGTID:
			if g, ok := state.Get(t.gtid.Domain); ok && t.gtid.Seq <= g.Seq {
				break // at or before the start, or repeated by an overlapping file
			}
			in = true
			state.Set(t.gtid)
		default:
			in = true
		}
		if !in {
			if !anyIn {
				c := t
				baseLast = &c
			}
			if isStop(t) {
				c := t
				seenStop = &c
			}
			return
		}
		if res.Available.First.FileIndex == 0 {
			res.Available.First = t.point(p.Files)
		}
		res.Available.Last = t.point(p.Files)
		anyIn = true
		if !stopped {
			switch {
			case stopFile >= 0 && (i > stopFile || (i == stopFile && t.end > p.Stop.Pos)):
				stopped = true
				if i == stopFile && t.start < p.Stop.Pos {
					res.Warnings = append(res.Warnings, fmt.Sprintf("stop position %s:%d is inside the transaction starting at %d; stopping before that transaction", p.Files[stopFile].Name, p.Stop.Pos, t.start))
				}
			case !stopTime.IsZero() && time.Unix(int64(t.time), 0).After(stopTime):
				stopped = true
				stopLoc = loc{i, t.start}
			}
		}
		if stopped {
			return
		}
		if res.Transactions == 0 {
			res.First = t.point(p.Files)
			res.firstFile = i
		}
		res.Last = t.point(p.Files)
		res.lastFile, res.lastEnd = i, t.end
		res.Transactions++
		res.Bytes += int64(t.end - t.start)
		if t.hasGTID {
			end.Set(t.gtid)
		}
		if t.hasMySQL {
			mend.Add(t.sid, t.gno)
			res.mysqlApplied.Add(t.sid, t.gno)
			res.mysqlGTIDs = true
		}
		res.anonymous = res.anonymous || t.anon
		if !sids[t.serverID] {
			sids[t.serverID] = true
			res.ServerIDs = append(res.ServerIDs, t.serverID)
		}
		fp := &res.files[i]
		if n := len(fp.ranges); n > 0 && fp.ranges[n-1][1] == t.start {
			fp.ranges[n-1][1] = t.end
		} else {
			fp.ranges = append(fp.ranges, [2]uint64{t.start, t.end})
		}
		if res.Transactions%checkpointEvery == 0 {
			res.checkpoints = append(res.checkpoints, checkpoint{file: i, end: t.end, n: res.Transactions})
		}
		if isStop(t) {
			stopped = true
			stopLoc = loc{i, t.end}
		}
	}
	if len(start) > 0 {
		state = append(state, start...)
		end = append(end, start...)
		res.StartGTID = start.String()
	}

	var fileEnds []uint64
	for i, f := range p.Files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		sc, err := scanFile(ctx, f, i, i == len(p.Files)-1, boundaryProbe(i == stopFile, p.Stop.Pos), boundaryProbe(i == startFile, p.StartPos),
			func(l Position) { onList(i, l) }, func(s gtid.MySQLSet) { onPrev(i, s) }, onTxn)
		if err != nil {
			return nil, fmt.Errorf("roll forward: %w", err)
		}
		if startErr != nil {
			return nil, startErr
		}
		if i == startFile {
			if !sc.startBound && p.StartPos != sc.end {
				return nil, fmt.Errorf("roll forward: start position %s:%d is not the start of an event (the file ends at %d)", p.Files[i].Name, p.StartPos, sc.end)
			}
			if !started {
				res.StartGTID = startString(end, mend)
			}
			started = true // the start is after the file's last transaction
		}
		if i == stopFile && !sc.boundary && p.Stop.Pos != sc.end && p.Stop.Pos <= sc.end {
			return nil, fmt.Errorf("roll forward: stop position %s:%d is not the start of an event; use a position from SHOW BINLOG EVENTS or mariadb-binlog", p.Files[stopFile].Name, p.Stop.Pos)
		}
		if started {
			for _, pos := range sc.incidents {
				if i != startFile || pos >= p.StartPos {
					gaps = append(gaps, gapAt{loc{i, pos}, fmt.Sprintf("incident event at %s:%d (file %d): the source recorded that events were lost", p.Files[i].Name, pos, i+1)})
				}
			}
		}
		maxTime = max(maxTime, sc.maxTime)
		fileEnds = append(fileEnds, sc.end)
		checksum = append(checksum, sc.checksum)
	}
	res.checksum = checksum[0]
	for _, g := range gaps {
		res.Available.Gaps = append(res.Available.Gaps, g.msg)
	}
	unreachable := func(format string, a ...any) error {
		return &UnreachableError{Stop: p.Stop, Reason: fmt.Sprintf(format, a...), Available: res.Available}
	}

	// Refusals that need the whole files.
	switch {
	case stopMySQL && !stopped:
		if seenStop != nil || mstart.Contains(stopSID, stopGNO) {
			return nil, unreachable("GTID %s is before the start position %s", p.Stop.GTID, res.StartGTID)
		}
		return nil, unreachable("GTID %s is not in the files", p.Stop.GTID)
	case p.Stop.GTID != "" && !stopped:
		st, inStart := start.Get(stopGTID.Domain)
		switch {
		case seenStop != nil || (inStart && stopGTID.Seq < st.Seq):
			return nil, unreachable("GTID %s is before the start position %s", stopGTID, res.StartGTID)
		default:
			return nil, unreachable("GTID %s is not in the files", stopGTID)
		}
	case stopFile >= 0:
		if p.Stop.Pos > fileEnds[stopFile] {
			return nil, unreachable("position %d is after the end of %s (file %d ends at %d)", p.Stop.Pos, p.Files[stopFile].Name, stopFile+1, fileEnds[stopFile])
		}
		stopLoc = loc{stopFile, p.Stop.Pos}
		if (baseLast != nil && before(stopLoc, loc{baseLast.file, baseLast.end})) || (startFile >= 0 && before(stopLoc, loc{startFile, p.StartPos})) {
			return nil, unreachable("position %s:%d is before the start position", p.Files[stopFile].Name, p.Stop.Pos)
		}
	case !stopTime.IsZero():
		last := time.Unix(int64(maxTime), 0).UTC()
		if stopTime.After(last) {
			return nil, unreachable("time %s is after the last event in the files (%s)", stopTime.UTC().Format(time.RFC3339), last.Format(time.RFC3339))
		}
		if !p.StartTime.IsZero() && stopTime.Before(p.StartTime) {
			return nil, unreachable("time %s is before the start (the base's time, %s)", stopTime.UTC().Format(time.RFC3339), p.StartTime.UTC().Format(time.RFC3339))
		}
		if baseLast != nil && stopTime.Before(time.Unix(int64(baseLast.time), 0)) {
			return nil, unreachable("time %s is before the start position (whose last transaction in the files is from %s)", stopTime.UTC().Format(time.RFC3339), time.Unix(int64(baseLast.time), 0).UTC().Format(time.RFC3339))
		}
	}
	for _, g := range gaps {
		if before(g.at, stopLoc) {
			return nil, unreachable("%s", g.msg)
		}
	}
	res.EndGTID = end.String()
	if mstart != nil || !mend.IsEmpty() {
		res.MySQL = true
		res.EndGTID = mend.String()
	}
	for i := range checksum {
		if checksum[i] != res.checksum {
			res.Warnings = append(res.Warnings, fmt.Sprintf("%s (file %d) has a different binlog checksum setting than the first file", p.Files[i].Name, i+1))
		}
	}
	return res, nil
}

// fileIndex finds a file by 1-based index or by a name that must be unique.
func fileIndex(files []File, name string, idx int, server uint32, what string) (int, error) {
	if idx > 0 {
		if idx > len(files) {
			return 0, fmt.Errorf("roll forward: %s file index %d: only %d files are given", what, idx, len(files))
		}
		if name != "" && files[idx-1].Name != name {
			return 0, fmt.Errorf("roll forward: %s file index %d is %s, not %s", what, idx, files[idx-1].Name, name)
		}
		return idx - 1, nil
	}
	var found []int
	var all []string
	for i, f := range files {
		if f.Name == name && (server == 0 || f.ServerID == server) {
			found = append(found, i)
		}
		if len(all) < 5 {
			all = append(all, f.Name)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) == 0 && server != 0:
		return 0, fmt.Errorf("roll forward: %s file %s: no file of that name was written by server %d", what, name, server)
	case len(found) == 0:
		return 0, fmt.Errorf("roll forward: %s file %s is not among the %d files given (%s...)", what, name, len(files), strings.Join(all, ", "))
	}
	var servers []string
	for _, i := range found {
		if files[i].ServerID == 0 {
			servers = nil
			break
		}
		servers = append(servers, strconv.FormatUint(uint64(files[i].ServerID), 10))
	}
	uniq := slices.Clone(servers)
	slices.Sort(uniq)
	if len(servers) == len(found) && len(slices.Compact(uniq)) == len(servers) {
		return 0, fmt.Errorf("roll forward: %s file %s: servers %s each wrote a file of that name (a failover); name the server too, as FILE:POS@SERVER_ID",
			what, name, strings.Join(servers, " and "))
	}
	return 0, fmt.Errorf("roll forward: %s file %s: several files have that name (files %d and %d, e.g. from two servers after a failover); give the file index too", what, name, found[0]+1, found[1]+1)
}

func boundaryProbe(on bool, pos uint64) uint64 {
	if on {
		return pos
	}
	return 0
}

// scanFile reads one file and groups its events into transactions.
// stopPos and startPos (0: none) are checked for being event boundaries.
func scanFile(ctx context.Context, f File, idx int, last bool, stopPos, startPos uint64, onList func(Position), onPrev func(gtid.MySQLSet), onTxn func(txn)) (*scanned, error) {
	rc, err := f.Open(ctx)
	if err != nil {
		return nil, fmt.Errorf("open binlog file %s: %w", f.Name, err)
	}
	defer func() { _ = rc.Close() }()
	rd, err := newReader(rc, f.Name)
	if err != nil {
		return nil, err
	}
	s := &scanned{}
	hasList := false
	var cur *txn
	pendingStart := uint64(0) // Intvar/Rand/User_var before a statement outside a transaction
	standalone := false
	mysqlFirst := false // the next Query is a MySQL transaction's first event
	for {
		h, ev, pos, err := rd.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, errTruncated) && last {
			break // the newest file may end in an event being written; what is whole counts
		}
		if err != nil {
			return nil, err
		}
		s.end = rd.pos
		s.maxTime = max(s.maxTime, h.Timestamp)
		if pos == stopPos {
			s.boundary = true
		}
		if pos == startPos {
			s.startBound = true
		}
		if h.Type == evFormatDesc {
			s.checksum = rd.fde.checksum
			continue
		}
		end := func() {
			cur.end = rd.pos
			cur.time = h.Timestamp
			onTxn(*cur)
			cur = nil
		}
		if cur == nil {
			switch h.Type {
			case evGTID:
				g, err := parseGTIDEvent(rd.body(ev))
				if err != nil {
					return nil, fmt.Errorf("binlog file %s at %d: %w", f.Name, pos, err)
				}
				cur = &txn{file: idx, start: pos, gtid: GTID{Domain: g.Domain, Server: h.ServerID, Seq: g.Seq}, hasGTID: true, serverID: h.ServerID}
				standalone = g.Flags&(gtidStandalone|gtidCompletedXA) != 0
				pendingStart = 0
				mysqlFirst = false
			case evMySQLGTID, evMySQLAnonGTID:
				cur = &txn{file: idx, start: pos, serverID: h.ServerID, anon: h.Type == evMySQLAnonGTID}
				if h.Type == evMySQLGTID {
					b := rd.body(ev)
					if len(b) < 25 {
						return nil, fmt.Errorf("binlog file %s at %d: MySQL GTID event too short", f.Name, pos)
					}
					copy(cur.sid[:], b[1:17])
					cur.gno = int64(binary.LittleEndian.Uint64(b[17:]))
					cur.hasMySQL = true
				}
				standalone = false
				mysqlFirst = true
			case evMySQLPrevGTIDs:
				if !hasList {
					set, err := gtid.DecodeMySQLSet(rd.body(ev))
					if err != nil {
						return nil, fmt.Errorf("binlog file %s at %d: Previous_gtids: %w", f.Name, pos, err)
					}
					hasList = true
					onPrev(set)
				}
			case evQuery:
				q, err := rd.queryText(ev)
				if err != nil {
					return nil, fmt.Errorf("binlog file %s at %d: %w", f.Name, pos, err)
				}
				st := pos
				if pendingStart != 0 {
					st = pendingStart
				}
				cur = &txn{file: idx, start: st, serverID: h.ServerID}
				pendingStart = 0
				if !isStmt(q, "BEGIN") {
					end() // a statement on its own (DDL without GTIDs)
				}
				standalone = false
			case evIntvar, evRand, evUserVar:
				if pendingStart == 0 {
					pendingStart = pos
				}
			case evGTIDList:
				if !hasList {
					l, err := parseGTIDList(rd.body(ev))
					if err != nil {
						return nil, fmt.Errorf("binlog file %s at %d: %w", f.Name, pos, err)
					}
					var top Position // the highest sequence number per domain
					for _, g := range l {
						if o, ok := top.Get(g.Domain); !ok || g.Seq > o.Seq {
							top.Set(g)
						}
					}
					hasList = true
					onList(top)
				}
			case evIncident:
				s.incidents = append(s.incidents, pos)
			case evStartEncryption:
				return nil, fmt.Errorf("binlog file %s is encrypted (encrypt_binlog): archive it decrypted (the streamer receives events decrypted) or replay it with the server that wrote it", f.Name)
			case evMySQLPayload:
				return nil, fmt.Errorf("binlog file %s at %d: MySQL transaction payload events (binlog_transaction_compression) are not supported", f.Name, pos)
			}
			continue
		}
		switch h.Type {
		case evXID, evXAPrepare:
			end()
		case evQuery:
			if standalone {
				end()
				break
			}
			q, err := rd.queryText(ev)
			if err != nil {
				return nil, fmt.Errorf("binlog file %s at %d: %w", f.Name, pos, err)
			}
			first := mysqlFirst
			mysqlFirst = false
			// A MySQL transaction whose first statement is not BEGIN is
			// that one statement (DDL, XA COMMIT).
			if isStmt(q, "COMMIT") || isStmt(q, "ROLLBACK") || (first && !isStmt(q, "BEGIN") && !isStmt(q, "XA START")) {
				end()
			}
		case evGTID, evFormatDesc, evRotate, evStop, evGTIDList, evBinlogCheckpt, evMySQLGTID, evMySQLAnonGTID:
			if !last || h.Type != evGTID {
				return nil, fmt.Errorf("binlog file %s at %d: event type %d inside the transaction that starts at %d: the file is damaged", f.Name, pos, h.Type, cur.start)
			}
			return nil, fmt.Errorf("binlog file %s at %d: a transaction starts inside the one that starts at %d: the file is damaged", f.Name, pos, cur.start)
		}
	}
	// A transaction cut off at the end is not applied; the newest file's
	// last one may still be being written.
	return s, nil
}

func isStmt(q []byte, word string) bool {
	q = bytes.TrimSpace(q)
	if len(q) < len(word) || !bytes.EqualFold(q[:len(word)], []byte(word)) {
		return false
	}
	rest := bytes.TrimSpace(q[len(word):])
	// "ROLLBACK TO SAVEPOINT s" does not end the transaction; "COMMIT /* c */" does.
	return len(rest) == 0 || rest[0] == ';' || rest[0] == '/'

}

// ParseTime parses a --to-time value: RFC 3339 ("2026-12-03T13:00:00Z",
// with an offset or Z) or "2006-01-02 15:04:05" in loc (the server's time
// zone is not known here: the caller says which).
func ParseTime(s string, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02T15:04:05"} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("time %q: expected RFC 3339 (2026-12-03T13:00:00Z or with an offset, +01:00) or \"2026-12-03 13:00:00\" in %s", s, loc)
}

// checkpoint: the n-th transaction to apply ends at end in file (0-based).
type checkpoint struct {
	file int
	end  uint64
	n    int
}

// checkpointEvery spaces the checkpoints that progress counts by; the plan
// keeps no per-transaction list, so its memory does not grow with the files.
const checkpointEvery = 256

// startString is the start position as a string: the MySQL set when the
// files are MySQL's.
func startString(end Position, mend gtid.MySQLSet) string {
	if !mend.IsEmpty() {
		return mend.String()
	}
	return end.String()
}
