package retention

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Params are the inputs of Plan.
type Params struct {
	// Backups of one instance, in any order. DELETED ones are ignored.
	Backups []*v1.Backup
	Rules   *v1.RetentionRules
	// Now is the time the plan is made for (the leader's clock, or a test
	// clock); never read from the system by Plan.
	Now time.Time
	// Location is the zone GFS buckets (hour, day, week, month, year) are
	// cut in; nil means UTC. A fleet spread over zones keeps UTC so that a
	// day means the same everywhere.
	Location *time.Location
}

// Verdict is one backup's fate and every reason for it.
type Verdict struct {
	Backup *v1.Backup
	// Time the backup's data corresponds to (see BackupTime).
	Time time.Time
	Keep bool
	// Each "keep: ..." reason that applies, or one "expire: ..." reason.
	Reasons []string
}

// Result is the plan for one instance.
type Result struct {
	// Newest first.
	Verdicts []Verdict
	// PITRBase is the base backup of the PITR window (the newest complete
	// backup at or before Now - pitr_window, or the oldest complete one when
	// the window reaches further back than every backup); nil without a
	// window or without a complete backup.
	PITRBase *v1.Backup
	// BinlogBefore: binlog segments whose last event is before it may be
	// deleted. With a pitr_window it is the PITR base's consistency time;
	// without one, the oldest kept complete backup's (nothing before it can
	// be replayed from a kept backup). Truncated to the second, as a binlog
	// event's time has whole seconds. Zero: no segment may go.
	BinlogBefore time.Time
	BinlogReason string
}

// Expired returns the verdicts that expire a backup.
func (r *Result) Expired() []Verdict {
	var out []Verdict
	for _, v := range r.Verdicts {
		if !v.Keep {
			out = append(out, v)
		}
	}
	return out
}

// ErrNoRules refuses rules that keep nothing: with no rule at all every
// backup but the last would expire, which is never what was meant.
var ErrNoRules = errors.New("no retention rule: set at least one of keep-last, keep-hourly, keep-daily, keep-weekly, keep-monthly, keep-yearly or pitr-window")

// Validate checks rules before they are used.
func Validate(r *v1.RetentionRules) error {
	if r == nil {
		return ErrNoRules
	}
	if w := r.GetPitrWindow(); w != nil {
		if err := w.CheckValid(); err != nil {
			return fmt.Errorf("pitr_window: %w", err)
		}
		if w.AsDuration() < 0 {
			return fmt.Errorf("pitr_window %s is negative", w.AsDuration())
		}
	}
	if r.GetKeepLast() == 0 && r.GetKeepHourly() == 0 && r.GetKeepDaily() == 0 && r.GetKeepWeekly() == 0 &&
		r.GetKeepMonthly() == 0 && r.GetKeepYearly() == 0 && r.GetPitrWindow().AsDuration() == 0 {
		return ErrNoRules
	}
	return nil
}

// BackupTime is the time a backup's data corresponds to: its consistency
// point's server time, else when it finished, else when it started.
func BackupTime(b *v1.Backup) time.Time {
	switch {
	case b.GetConsistency().GetTime().IsValid():
		return b.GetConsistency().GetTime().AsTime()
	case b.GetFinishedAt().IsValid():
		return b.GetFinishedAt().AsTime()
	default:
		return b.GetStartedAt().AsTime()
	}
}

// bucket is one GFS rule: how many buckets it keeps, how a time names its
// bucket (key, cheap: compared for every backup) and how the bucket reads
// in a reason (label: made only for a kept backup).
type bucket struct {
	name  string
	count uint32
	key   func(time.Time) int64
	label func(time.Time) string
}

func dayKey(t time.Time) int64 { y, m, d := t.Date(); return int64(y)*10000 + int64(m)*100 + int64(d) }

func buckets(r *v1.RetentionRules) []bucket {
	return []bucket{
		{"hourly", r.GetKeepHourly(), func(t time.Time) int64 { return dayKey(t)*100 + int64(t.Hour()) },
			func(t time.Time) string { return t.Format("2006-01-02 15h") }},
		{"daily", r.GetKeepDaily(), dayKey, func(t time.Time) string { return t.Format("2006-01-02") }},
		{"weekly", r.GetKeepWeekly(), func(t time.Time) int64 { y, w := t.ISOWeek(); return int64(y)*100 + int64(w) },
			func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%04d-W%02d", y, w) }},
		{"monthly", r.GetKeepMonthly(), func(t time.Time) int64 { return int64(t.Year())*100 + int64(t.Month()) },
			func(t time.Time) string { return t.Format("2006-01") }},
		{"yearly", r.GetKeepYearly(), func(t time.Time) int64 { return int64(t.Year()) },
			func(t time.Time) string { return t.Format("2006") }},
	}
}

// Plan decides every backup's fate. Like restic's `forget --keep-*`, each
// GFS rule walks the complete backups newest first and keeps the newest of
// each bucket (hour, day, ISO week, month, year) until it has kept its
// count; keep_last keeps the newest N. On top of the rules, whatever they
// say:
//   - the newest complete backup is kept ("keep: last complete backup");
//   - a pinned backup is kept;
//   - with a pitr_window, the base of the window is kept: the newest
//     complete backup at or before Now - pitr_window (or the oldest one, when
//     every backup is younger), and every complete backup after it; and
//     BinlogBefore is the base's time, so the base and every binlog segment
//     from it on reach any point of the window. Keeping the backups inside
//     the window is what lets the base move forward as time passes: were
//     they expired, the base would stay the first backup ever taken, and its
//     binlog would never go;
//   - a running backup is kept (it is not done), and a failed one is kept
//     while it is newer than the newest complete backup (status reports it);
//     older failures expire.
//
// Backups already marked expired are reported as expiring and never kept
// again: marking is not undone by a later plan.
func Plan(p Params) (*Result, error) {
	if err := Validate(p.Rules); err != nil {
		return nil, err
	}
	loc := p.Location
	if loc == nil {
		loc = time.UTC
	}
	var vs []Verdict
	for _, b := range p.Backups {
		if b.GetStatus() == v1.BackupStatus_BACKUP_STATUS_DELETED {
			continue
		}
		vs = append(vs, Verdict{Backup: b, Time: BackupTime(b)})
	}
	// Newest first; equal times by id (ids are unique: a total order, so
	// the plan is deterministic).
	slices.SortFunc(vs, func(a, b Verdict) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return strings.Compare(b.Backup.GetId(), a.Backup.GetId())
	})
	complete := func(v *Verdict) bool {
		return v.Backup.GetStatus() == v1.BackupStatus_BACKUP_STATUS_COMPLETE && v.Backup.GetExpiredAt() == nil
	}
	keep := func(v *Verdict, why string) {
		v.Keep = true
		v.Reasons = append(v.Reasons, "keep: "+why)
	}

	// The newest complete backup, whatever the rules say.
	var newest *Verdict
	for i := range vs {
		if complete(&vs[i]) {
			newest = &vs[i]
			keep(newest, "last complete backup")
			break
		}
	}
	// keep_last and the GFS buckets, over complete backups only.
	last := p.Rules.GetKeepLast()
	bs := buckets(p.Rules)
	seen := make([]int64, len(bs))
	lastWhy := fmt.Sprintf("last %d", p.Rules.GetKeepLast())
	for i := range vs {
		v := &vs[i]
		if !complete(v) {
			continue
		}
		if last > 0 {
			keep(v, lastWhy)
			last--
		}
		t := v.Time.In(loc)
		for k := range bs {
			if bs[k].count == 0 {
				continue
			}
			if key := bs[k].key(t); key != seen[k] {
				seen[k] = key
				keep(v, bs[k].name+" "+bs[k].label(t))
				bs[k].count--
			}
		}
	}
	res := &Result{}
	// The PITR window's base.
	if w := p.Rules.GetPitrWindow().AsDuration(); w > 0 {
		cutoff := p.Now.Add(-w)
		var base, oldest *Verdict
		for i := range vs {
			v := &vs[i]
			if !complete(v) {
				continue
			}
			oldest = v
			if base == nil && !v.Time.After(cutoff) {
				base = v
			}
		}
		for i := range vs {
			if v := &vs[i]; complete(v) && v.Time.After(cutoff) {
				keep(v, fmt.Sprintf("inside PITR window (after %s)", cutoff.In(loc).Format(time.RFC3339)))
			}
		}
		switch {
		case base != nil:
			keep(base, fmt.Sprintf("base of PITR window (%s back, at or before %s)", w, cutoff.In(loc).Format(time.RFC3339)))
		case oldest != nil:
			base = oldest
			keep(base, fmt.Sprintf("base of PITR window (%s back; no backup is that old, the oldest is the base)", w))
		}
		if base != nil {
			res.PITRBase = base.Backup
		}
	}
	for i := range vs {
		v := &vs[i]
		b := v.Backup
		switch {
		case b.GetExpiredAt() != nil:
			v.Keep, v.Reasons = false, []string{"expire: already marked (" + b.GetExpireReason() + ")"}
			continue
		case b.GetPin() != nil:
			why := "pinned"
			if r := b.GetPin().GetReason(); r != "" {
				why += " (" + r + ")"
			}
			if by := b.GetPin().GetBy(); by != "" {
				why += " by " + by
			}
			keep(v, why)
		case b.GetStatus() == v1.BackupStatus_BACKUP_STATUS_RUNNING:
			keep(v, "still running")
		case b.GetStatus() == v1.BackupStatus_BACKUP_STATUS_FAILED:
			if newest == nil || v.Time.After(newest.Time) {
				keep(v, "failed after the last complete backup (kept for status)")
			} else {
				v.Reasons = []string{"expire: failed, older than the last complete backup"}
			}
			continue
		}
		if !v.Keep {
			v.Reasons = []string{"expire: outside every rule"}
		}
	}
	// Binlog: with a window, what the window needs (from its base on);
	// without one, nothing before the oldest kept complete backup can be
	// replayed from a kept backup.
	switch {
	case res.PITRBase != nil:
		res.BinlogBefore = BackupTime(res.PITRBase).Truncate(time.Second)
		res.BinlogReason = fmt.Sprintf("segments ending before %s, the consistency point of %s (the PITR window's base), are not needed to reach any point of the window",
			res.BinlogBefore.In(loc).Format(time.RFC3339), res.PITRBase.GetId())
	default:
		var oldestKept *Verdict
		for i := range vs {
			if vs[i].Keep && complete(&vs[i]) {
				oldestKept = &vs[i]
			}
		}
		if oldestKept == nil {
			res.BinlogReason = "no complete backup is kept: every segment is kept"
			break
		}
		res.BinlogBefore = oldestKept.Time.Truncate(time.Second)
		res.BinlogReason = fmt.Sprintf("segments ending before %s, the consistency point of %s (the oldest kept backup), cannot be replayed from any kept backup",
			res.BinlogBefore.In(loc).Format(time.RFC3339), oldestKept.Backup.GetId())
	}
	res.Verdicts = vs
	return res, nil
}

// Segment is one archived binlog segment, as the repository's index
// describes it.
type Segment struct {
	Name     string
	LastTime time.Time
	// Closed is false for the open segment (still being written).
	Closed bool
}

// SegmentsToDelete returns the names of the segments (given in stream
// order) that may go: the longest prefix of closed segments whose last
// event is before before. It stops at the first segment that must stay, so
// the archive never gets a hole in the middle, and it never returns the
// newest segment, whatever its time.
func SegmentsToDelete(segs []Segment, before time.Time) []string {
	if before.IsZero() {
		return nil
	}
	var out []string
	for i, s := range segs {
		if i == len(segs)-1 || !s.Closed || !s.LastTime.Before(before) {
			break
		}
		out = append(out, s.Name)
	}
	return out
}
