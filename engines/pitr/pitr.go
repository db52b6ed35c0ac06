package pitr

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/engines/binlog/apply"
	"github.com/tidemark-backup/tidemark/engines/binlog/gtid"
	"github.com/tidemark-backup/tidemark/engines/logical"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/internal/archive"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// ErrUnreachable means the repository cannot bring the instance to the
// point asked for; nothing was written to the target.
var ErrUnreachable = errors.New("point in time not reachable")

// Target is the point to restore to; exactly one kind is set.
type Target struct {
	// Time includes every transaction with a timestamp at or before it.
	Time time.Time
	// GTID includes that transaction (MariaDB domain-server-seq, or
	// MySQL uuid:n).
	GTID string
	// File and Pos stop before the event that starts at Pos in File;
	// ServerID names the server that wrote File when two servers wrote
	// files of that name (a failover), else 0.
	File     string
	Pos      uint64
	ServerID uint32
}

func (t Target) kinds() int {
	n := 0
	if !t.Time.IsZero() {
		n++
	}
	if t.GTID != "" {
		n++
	}
	if t.File != "" {
		n++
	}
	return n
}

func (t Target) String() string {
	switch {
	case !t.Time.IsZero():
		return "time " + t.Time.UTC().Format(time.DateTime) + " UTC"
	case t.GTID != "":
		return "GTID " + t.GTID
	default:
		return fmt.Sprintf("position %s:%d", t.File, t.Pos)
	}
}

// Params are one point-in-time restore's inputs.
type Params struct {
	Repo     *archive.Repo
	Instance string // the instance's name in the repository
	DSN      string // the server to restore into
	Target   Target
	// FromBackup names the base backup; "" picks the newest complete one
	// at or before the target.
	FromBackup   string
	Parallel     int // the base restore's connections; 0: the engine's choice
	DropExisting bool
	// NoBinlog keeps the base load and the roll-forward out of the
	// target's binary log (see engines.RestoreParams and apply.Params).
	NoBinlog bool
	// ApplyParallel > 1 runs the target's replication applier with that
	// many threads during the roll-forward; 0 keeps the server's setting.
	ApplyParallel int
	// Apply method ("replication" or "sql"), listen address and the live
	// source to replicate from afterwards: see apply.Params.
	Method            string
	ServeAddr         string
	ThenReplicateFrom string
	// ServeTLS protects the target's connection to the roll-forward's
	// source (see apply.SourceTLS): by default TLS when DSN uses TLS.
	ServeTLS apply.SourceTLS
	// Engine returns the engine that restores a base backup.
	Engine   func(name string) (engines.Engine, error)
	Progress func(phase string, p engines.Progress)
	Logger   *slog.Logger
}

// Result reports a restore and the time of its parts.
type Result struct {
	Base            *v1.Manifest
	BaseRestore     time.Duration
	RollForward     time.Duration
	Plan            *apply.PlanResult
	Applied         *apply.Result
	RestoreWarnings []string
}

// Restore brings the server at p.DSN to p.Target: the newest base backup at
// or before the target, then the archived binlog from exactly the base's
// consistency point. Every check that can refuse (target format, base,
// archive coverage, gaps, the stop point) runs before anything is written.
func Restore(ctx context.Context, p Params) (*Result, error) {
	if p.Target.kinds() != 1 {
		return nil, fmt.Errorf("give exactly one of a time, a GTID or a FILE:POS position to restore to")
	}
	if p.Instance == "" {
		return nil, fmt.Errorf("the instance whose archive to roll forward is required (its name in the repository: `tidemark binlog status --repo URI` lists them)")
	}
	if p.Target.GTID != "" {
		if gtid.IsMySQLSet(p.Target.GTID) {
			if _, _, err := gtid.ParseMySQLTarget(p.Target.GTID); err != nil {
				return nil, fmt.Errorf("target %w", err)
			}
		} else if _, err := binlog.ParsePosition(p.Target.GTID); err != nil {
			return nil, fmt.Errorf("target %w (a MariaDB GTID such as 0-1-100, one per domain, or MySQL's UUID:N)", err)
		}
	}
	arch, err := binlog.OpenArchive(ctx, p.Repo, p.Instance)
	if err != nil {
		return nil, err
	}
	// A physical backup restores into a datadir (RestoreDatadir), never
	// onto a running server: it is no base here.
	base, err := pickBaseWhere(ctx, p, func(m *v1.Manifest) bool { return !physical.IsPhysical(m) })
	if err != nil {
		return nil, err
	}
	if physical.IsPhysical(base) {
		return nil, fmt.Errorf("backup %s is a physical (%s) backup: it restores into an empty datadir, not onto a running server; restore it with --to-datadir DIR", base.BackupId, base.Engine)
	}
	files, err := filesFrom(arch, base, p.Target)
	if err != nil {
		return nil, err
	}
	ap := apply.Params{
		DSN: p.DSN, Files: files, StartGTID: base.Consistency.GtidSet, StartTime: base.Consistency.Time.AsTime().Truncate(time.Second),
		Stop:   apply.Stop{GTID: p.Target.GTID, File: p.Target.File, ServerID: p.Target.ServerID, Pos: p.Target.Pos, Time: p.Target.Time},
		Method: p.Method, Parallel: p.ApplyParallel, ServeAddr: p.ServeAddr, ThenReplicateFrom: p.ThenReplicateFrom, TLS: p.ServeTLS,
		NoBinlog: p.NoBinlog, Logger: p.Logger,
		Progress: func(pr apply.Progress) {
			if p.Progress != nil {
				p.Progress("roll-forward", engines.Progress{Phase: pr.Phase, BytesDone: pr.BytesSent, BytesTotal: pr.Bytes})
			}
		},
	}
	plan, err := apply.Plan(ctx, ap)
	if errors.Is(err, apply.ErrUnreachable) {
		return nil, fmt.Errorf("%w: instance %s to %s from backup %s: %w", ErrUnreachable, p.Instance, p.Target, base.BackupId, err)
	}
	if err != nil {
		return nil, fmt.Errorf("instance %s to %s from backup %s: %w", p.Instance, p.Target, base.BackupId, err)
	}
	res := &Result{Base: base, Plan: plan}

	eng, err := p.Engine(base.Engine)
	if err != nil {
		return nil, fmt.Errorf("backup %s was written by engine %q, which this tidemark cannot restore", base.BackupId, base.Engine)
	}
	t0 := time.Now()
	rr, err := eng.Restore(ctx, engines.RestoreParams{
		DSN: p.DSN, Parallel: p.Parallel, Source: engines.ArchiveSource(p.Repo, base),
		DropExisting: p.DropExisting, NoBinlog: p.NoBinlog,
		Progress: func(pr engines.Progress) {
			if p.Progress != nil {
				p.Progress("base "+pr.Phase, pr)
			}
		},
	})
	if err != nil {
		return res, fmt.Errorf("restoring base backup %s: %w", base.BackupId, err)
	}
	res.BaseRestore = time.Since(t0)
	res.RestoreWarnings = rr.Warnings

	t1 := time.Now()
	ap.Planned = plan
	applied, err := apply.Apply(ctx, ap)
	res.RollForward = time.Since(t1)
	res.Applied = applied
	if err != nil {
		return res, fmt.Errorf("rolling forward from backup %s to %s: %w (the base is restored; the server holds the data as of the last transaction applied)", base.BackupId, p.Target, err)
	}
	return res, nil
}

// pickBaseWhere returns the base backup: the one named, or the newest complete
// backup of the instance whose consistency point is at or before the target.
// Only backups ok accepts are candidates; a named backup is returned as it
// is, for the caller to refuse with its reason.
func pickBaseWhere(ctx context.Context, p Params, ok func(*v1.Manifest) bool) (*v1.Manifest, error) {
	if p.FromBackup != "" {
		m, err := p.Repo.LoadManifest(ctx, p.FromBackup)
		if err != nil {
			return nil, err
		}
		if m.Instance != p.Instance {
			return nil, fmt.Errorf("backup %s is of instance %q, not %q", m.BackupId, m.Instance, p.Instance)
		}
		if m.Consistency == nil {
			return nil, fmt.Errorf("backup %s records no binlog position, so no binlog can be rolled forward from it", m.BackupId)
		}
		if dbs := partial(m); dbs != "" {
			return nil, fmt.Errorf("%w: backup %s holds only the databases %s, and the binlog replays every database; use a backup of the whole server", ErrUnreachable, m.BackupId, dbs)
		}
		if !atOrBefore(m.Consistency, p.Target) {
			return nil, fmt.Errorf("%w: backup %s is at %s, after the target %s", ErrUnreachable, m.BackupId, describe(m.Consistency), p.Target)
		}
		return m, nil
	}
	ms, err := p.Repo.Manifests(ctx)
	if err != nil {
		return nil, err
	}
	var mine []*v1.Manifest
	for _, m := range ms {
		if m.Instance == p.Instance && m.Consistency != nil && (m.Consistency.GtidSet != "" || m.Consistency.BinlogFile != "") && partial(m) == "" && ok(m) {
			mine = append(mine, m)
		}
	}
	if len(mine) == 0 {
		return nil, fmt.Errorf("%w: the repository holds no complete backup of the whole instance %q with a binlog position to start from (backups limited to some databases cannot be rolled forward); take one with `tidemark backup`", ErrUnreachable, p.Instance)
	}
	slices.SortFunc(mine, func(a, b *v1.Manifest) int {
		return a.Consistency.Time.AsTime().Compare(b.Consistency.Time.AsTime())
	})
	for i := len(mine) - 1; i >= 0; i-- {
		if atOrBefore(mine[i].Consistency, p.Target) {
			return mine[i], nil
		}
	}
	return nil, fmt.Errorf("%w: %s is before the oldest backup of instance %q (%s at %s)", ErrUnreachable,
		p.Target, p.Instance, mine[0].BackupId, describe(mine[0].Consistency))
}

// partial returns the databases a backup was limited to, "" for a backup of
// the whole server.
func partial(m *v1.Manifest) string { return m.EngineMetadata[logical.MetaDatabases] }

func describe(c *v1.ConsistencyPoint) string {
	var parts []string
	if c.Time != nil {
		parts = append(parts, c.Time.AsTime().UTC().Format(time.DateTime)+" UTC")
	}
	if c.GtidSet != "" {
		parts = append(parts, "GTID "+c.GtidSet)
	}
	if c.BinlogFile != "" {
		parts = append(parts, fmt.Sprintf("%s:%d", c.BinlogFile, c.BinlogPosition))
	}
	return strings.Join(parts, ", ")
}

// atOrBefore reports whether a backup at c can be rolled forward to t.
func atOrBefore(c *v1.ConsistencyPoint, t Target) bool {
	switch {
	case !t.Time.IsZero():
		// Binlog times are whole seconds: a base taken at 10:00:00.6
		// holds only transactions stamped 10:00:00 or earlier, so it is
		// a base for a target of 10:00:00.
		return c.Time != nil && !c.Time.AsTime().Truncate(time.Second).After(t.Time)
	case t.GTID != "" && (gtid.IsMySQLSet(t.GTID) || gtid.IsMySQLSet(c.GtidSet)):
		// A MySQL base is at or before uuid:n unless its set holds n and
		// more of that UUID after it.
		u, n, err := gtid.ParseMySQLTarget(t.GTID)
		if err != nil || (c.GtidSet != "" && !gtid.IsMySQLSet(c.GtidSet)) {
			return false
		}
		set, err := gtid.ParseMySQLSet(c.GtidSet)
		return err == nil && (!set.Contains(u, n) || set.Last(u) == n)
	case t.GTID != "":
		g, err := binlog.ParsePosition(t.GTID)
		if err != nil {
			return false
		}
		// An empty position is a base taken before any transaction.
		pos, err := binlog.ParsePosition(c.GtidSet)
		if err != nil {
			return false
		}
		for _, gt := range g {
			if pos.Seq(gt.Domain) > gt.Seq {
				return false
			}
		}
		return true
	default:
		return c.BinlogFile != "" && compareFilePos(c.BinlogFile, c.BinlogPosition, t.File, t.Pos) <= 0
	}
}

func compareFilePos(f1 string, p1 uint64, f2 string, p2 uint64) int {
	if c := strings.Compare(f1, f2); c != 0 {
		return c
	}
	switch {
	case p1 < p2:
		return -1
	case p1 > p2:
		return 1
	}
	return 0
}

// filesFrom returns the archived segments to replay from the base's
// consistency point, after checking that the archive holds every
// transaction from that point on, and that no gap lies between it and the
// target.
func filesFrom(arch *binlog.Archive, base *v1.Manifest, t Target) ([]apply.File, error) {
	segs := arch.Segments()
	if len(segs) == 0 {
		return nil, fmt.Errorf("%w: no binlog is archived for this instance; start `tidemark binlog stream` (or `tidemark binlog start` through the controller)", ErrUnreachable)
	}
	c := base.Consistency
	pos, err := positionsOf(c.GtidSet, segs)
	if err != nil {
		return nil, fmt.Errorf("backup %s: consistency GTID %q: %w", base.BackupId, c.GtidSet, err)
	}
	// The first segment that holds a transaction past the base; the
	// segments before it are wholly inside the base. Apply skips, per
	// domain (MySQL: per GTID), what the base already holds of the
	// segments it is given.
	first := -1
	for i, s := range segs {
		beyond, err := pos.beyond(s.GTIDEnd)
		if err != nil {
			return nil, fmt.Errorf("binlog segment %s: %w", s.Name, err)
		}
		if beyond {
			first = i
			break
		}
	}
	if first < 0 {
		// Nothing archived after the base: the plan refuses any target
		// past it, naming the range; give it the last segment to read.
		first = len(segs) - 1
	}
	// One segment earlier too: it holds the base's own last transaction,
	// which a target naming exactly the base's point must find.
	first = max(first-1, 0)
	startsAfter, err := pos.beyond(segs[first].GTIDStart)
	if err != nil {
		return nil, fmt.Errorf("binlog segment %s: %w", segs[first].Name, err)
	}
	if startsAfter {
		return nil, fmt.Errorf("%w: the archived binlog of this instance starts at GTID %s (%s), after backup %s's point (%s): the transactions between them were never archived; restore to the backup's own point, or choose a backup taken after streaming started",
			ErrUnreachable, dash(segs[first].GTIDStart), segs[first].FirstTime.UTC().Format(time.DateTime), base.BackupId, describe(c))
	}
	for _, g := range arch.Gaps() {
		if after, err := pos.beyond(g.BeforeGTID); err == nil && g.BeforeGTID != "" && !after {
			continue // a gap wholly before the base does not matter
		}
		if gapBefore(g, t) {
			return nil, fmt.Errorf("%w: the archive has a gap after backup %s's point: %s (after %s, before %s, %s to %s); restore to a point before %s, or from a backup taken after the gap",
				ErrUnreachable, base.BackupId, g.Reason, g.After, g.Before,
				g.FromTime.UTC().Format(time.DateTime), g.ToTime.UTC().Format(time.DateTime), g.FromTime.UTC().Format(time.DateTime))
		}
	}
	// Consecutive segments of one source file (the size cap cuts a file
	// into several) are served as that one file, so a file name names one
	// file in the roll-forward unless two servers wrote it (a failover).
	var files []apply.File
	var runs [][]binlog.SegmentInfo
	for _, s := range segs[first:] {
		if n := len(runs); n > 0 {
			last := runs[n-1][len(runs[n-1])-1]
			if last.File == s.File && last.ServerID == s.ServerID && last.ServerUUID == s.ServerUUID && last.EndPos == s.StartPos {
				runs[n-1] = append(runs[n-1], s)
				continue
			}
		}
		runs = append(runs, []binlog.SegmentInfo{s})
	}
	for _, run := range runs {
		files = append(files, apply.File{Name: run[0].File, ServerID: run[0].ServerID, Open: func(ctx context.Context) (io.ReadCloser, error) {
			return joinSegments(ctx, arch, run), nil
		}})
	}
	return files, nil
}

// joinSegments reads consecutive segments of one source file as one native
// binlog file: the first whole, each later one without its magic number and
// Format_description (the same file's). Segments are opened one at a time.
func joinSegments(ctx context.Context, arch *binlog.Archive, run []binlog.SegmentInfo) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		var err error
		for i, s := range run {
			var rc io.ReadCloser
			if rc, err = arch.Open(ctx, s); err != nil {
				break
			}
			if i > 0 {
				err = skipFileHead(rc)
			}
			if err == nil {
				_, err = io.Copy(pw, rc)
			}
			_ = rc.Close()
			if err != nil {
				err = fmt.Errorf("binlog segment %s: %w", s.Name, err)
				break
			}
		}
		pw.CloseWithError(err)
	}()
	return pr
}

// skipFileHead reads past a native binlog file's magic number and its first
// event, the Format_description.
func skipFileHead(r io.Reader) error {
	var head [4 + 19]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return fmt.Errorf("reading its head: %w", err)
	}
	if string(head[:4]) != "\xfebin" || head[4+4] != 15 {
		return fmt.Errorf("does not start with a binlog magic number and a Format_description event")
	}
	size := binary.LittleEndian.Uint32(head[4+9:])
	if size < 19 {
		return fmt.Errorf("its format description event has %d bytes", size)
	}
	_, err := io.CopyN(io.Discard, r, int64(size-19))
	return err
}

// gapBefore reports whether reaching t needs a transaction the gap lacks.
func gapBefore(g binlog.Gap, t Target) bool {
	switch {
	case !t.Time.IsZero():
		return !g.FromTime.After(t.Time)
	case t.GTID != "" && gtid.IsMySQLSet(t.GTID):
		// Past the gap unless the archive held it before the gap.
		u, n, err1 := gtid.ParseMySQLTarget(t.GTID)
		after, err2 := gtid.ParseMySQLSet(g.AfterGTID)
		return err1 != nil || err2 != nil || !after.Contains(u, n)
	case t.GTID != "":
		tp, err1 := binlog.ParsePosition(t.GTID)
		after, err2 := binlog.ParsePosition(g.AfterGTID)
		return err1 != nil || err2 != nil || tp.Beyond(after)
	default:
		// A position target is checked by the plan, which reads the
		// files' own coordinates; a gap between segments breaks the
		// chain it follows.
		return false
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// basePosition is a base's GTID position, MariaDB's or MySQL's, as the
// archive's positions are compared with it.
type basePosition struct {
	maria binlog.Position
	mysql gtid.MySQLSet // non-nil: the instance is MySQL's
}

// positionsOf reads the base's GTID position; the archive's segments say
// which kind it is when the base's is empty.
func positionsOf(set string, segs []binlog.SegmentInfo) (*basePosition, error) {
	isMySQL := gtid.IsMySQLSet(set)
	for _, s := range segs {
		isMySQL = isMySQL || gtid.IsMySQLSet(s.GTIDEnd)
	}
	if !isMySQL {
		p, err := binlog.ParsePosition(set)
		return &basePosition{maria: p}, err
	}
	if set != "" && !gtid.IsMySQLSet(set) {
		return nil, fmt.Errorf("a MariaDB position, but the archive holds MySQL's binlog")
	}
	m, err := gtid.ParseMySQLSet(set)
	return &basePosition{mysql: m}, err
}

// beyond reports whether an archive position holds a transaction the base
// does not.
func (b *basePosition) beyond(s string) (bool, error) {
	if b.mysql != nil {
		if s != "" && !gtid.IsMySQLSet(s) {
			return false, fmt.Errorf("GTID position %q is MariaDB's, in an archive of MySQL's binlog", s)
		}
		set, err := gtid.ParseMySQLSet(s)
		if err != nil {
			return false, err
		}
		return !b.mysql.ContainsSet(set), nil
	}
	p, err := binlog.ParsePosition(s)
	if err != nil {
		return false, err
	}
	return p.Beyond(b.maria), nil
}
