package retention

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func bk(id string, at time.Time, st v1.BackupStatus) *v1.Backup {
	return &v1.Backup{Id: id, Instance: "db1", Status: st, FinishedAt: timestamppb.New(at.Add(time.Minute)),
		Consistency: &v1.ConsistencyPoint{Time: timestamppb.New(at)}}
}

func complete(id string, at time.Time) *v1.Backup {
	return bk(id, at, v1.BackupStatus_BACKUP_STATUS_COMPLETE)
}

func verdicts(t *testing.T, r *Result) map[string]Verdict {
	t.Helper()
	m := map[string]Verdict{}
	for _, v := range r.Verdicts {
		m[v.Backup.GetId()] = v
	}
	return m
}

func kept(r *Result) []string {
	var out []string
	for _, v := range r.Verdicts {
		if v.Keep {
			out = append(out, v.Backup.GetId())
		}
	}
	sort.Strings(out)
	return out
}

func TestValidate(t *testing.T) {
	for _, r := range []*v1.RetentionRules{nil, {}, {PitrWindow: durationpb.New(0)}} {
		if err := Validate(r); !errors.Is(err, ErrNoRules) {
			t.Errorf("Validate(%v) = %v, want ErrNoRules", r, err)
		}
	}
	if err := Validate(&v1.RetentionRules{PitrWindow: durationpb.New(-time.Hour)}); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("negative window: %v", err)
	}
	if _, err := Plan(Params{Rules: &v1.RetentionRules{}}); !errors.Is(err, ErrNoRules) {
		t.Errorf("Plan with no rules: %v", err)
	}
}

func TestPlanTable(t *testing.T) {
	day := 24 * time.Hour
	cases := []struct {
		name    string
		backups []*v1.Backup
		rules   *v1.RetentionRules
		now     time.Time
		keep    []string
		reasons map[string]string // id -> a reason it must carry
	}{{
		name: "daily keeps the newest of each day",
		backups: []*v1.Backup{
			complete("d1a", t0.Add(1*time.Hour)), complete("d1b", t0.Add(20*time.Hour)),
			complete("d2a", t0.Add(day+time.Hour)), complete("d2b", t0.Add(day+5*time.Hour)),
			complete("d3a", t0.Add(2*day+time.Hour)),
		},
		rules:   &v1.RetentionRules{KeepDaily: 2},
		now:     t0.Add(3 * day),
		keep:    []string{"d2b", "d3a"},
		reasons: map[string]string{"d3a": "keep: daily 2026-12-03", "d2b": "keep: daily 2026-12-02", "d1b": "expire: outside every rule"},
	}, {
		name:    "the last complete backup is kept when no rule keeps it",
		backups: []*v1.Backup{complete("old", t0), complete("new", t0.Add(time.Hour)), bk("failed", t0.Add(2*time.Hour), v1.BackupStatus_BACKUP_STATUS_FAILED)},
		rules:   &v1.RetentionRules{PitrWindow: durationpb.New(time.Minute)},
		now:     t0.Add(10 * day),
		keep:    []string{"failed", "new"},
		reasons: map[string]string{"new": "keep: last complete backup", "failed": "keep: failed after the last complete backup", "old": "expire: outside every rule"},
	}, {
		name: "pinned is kept with its reason and who",
		backups: []*v1.Backup{
			func() *v1.Backup {
				b := complete("pinned", t0)
				b.Pin = &v1.BackupPin{Reason: "audit", By: "alice"}
				return b
			}(),
			complete("a", t0.Add(day)), complete("b", t0.Add(2*day)),
		},
		rules:   &v1.RetentionRules{KeepLast: 1},
		now:     t0.Add(3 * day),
		keep:    []string{"b", "pinned"},
		reasons: map[string]string{"pinned": "keep: pinned (audit) by alice", "b": "keep: last 1"},
	}, {
		name: "PITR window keeps its base and everything after",
		backups: []*v1.Backup{
			complete("b0", t0), complete("b1", t0.Add(day)), complete("b2", t0.Add(2*day)),
			complete("b3", t0.Add(3*day)), complete("b4", t0.Add(4*day)),
		},
		rules:   &v1.RetentionRules{PitrWindow: durationpb.New(36 * time.Hour)},
		now:     t0.Add(4*day + time.Hour),
		keep:    []string{"b2", "b3", "b4"},
		reasons: map[string]string{"b2": "keep: base of PITR window", "b3": "keep: inside PITR window", "b1": "expire: outside every rule"},
	}, {
		name:    "PITR window older than every backup: the oldest is the base",
		backups: []*v1.Backup{complete("b0", t0), complete("b1", t0.Add(day))},
		rules:   &v1.RetentionRules{PitrWindow: durationpb.New(30 * day)},
		now:     t0.Add(2 * day),
		keep:    []string{"b0", "b1"},
		reasons: map[string]string{"b0": "no backup is that old"},
	}, {
		name: "old failures, running and already-marked backups",
		backups: []*v1.Backup{
			bk("oldfail", t0, v1.BackupStatus_BACKUP_STATUS_FAILED),
			complete("c", t0.Add(time.Hour)),
			bk("running", t0.Add(2*time.Hour), v1.BackupStatus_BACKUP_STATUS_RUNNING),
			func() *v1.Backup {
				b := complete("marked", t0.Add(3*time.Hour))
				b.ExpiredAt, b.ExpireReason = timestamppb.New(t0), "by bob"
				return b
			}(),
			bk("gone", t0.Add(4*time.Hour), v1.BackupStatus_BACKUP_STATUS_DELETED),
		},
		rules:   &v1.RetentionRules{KeepLast: 5},
		now:     t0.Add(day),
		keep:    []string{"c", "running"},
		reasons: map[string]string{"oldfail": "expire: failed, older than the last complete backup", "marked": "expire: already marked (by bob)", "running": "keep: still running"},
	}, {
		name: "weekly, monthly and yearly buckets",
		backups: []*v1.Backup{
			complete("2025-06", time.Date(2025, 6, 10, 0, 0, 0, 0, time.UTC)),
			complete("2025-12", time.Date(2025, 12, 20, 0, 0, 0, 0, time.UTC)),
			complete("2026-10", time.Date(2026, 10, 5, 0, 0, 0, 0, time.UTC)),
			complete("2026-11a", time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)),  // ISO week 45
			complete("2026-11b", time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)), // ISO week 48
			complete("2026-11c", time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)), // ISO week 48, Sunday
		},
		rules: &v1.RetentionRules{KeepWeekly: 2, KeepMonthly: 2, KeepYearly: 2},
		now:   t0,
		keep:  []string{"2025-12", "2026-10", "2026-11a", "2026-11c"},
		reasons: map[string]string{"2026-11c": "keep: weekly 2026-W48", "2026-11a": "keep: weekly 2026-W45",
			"2026-10": "keep: monthly 2026-10", "2025-12": "keep: yearly 2025", "2025-06": "expire: outside every rule"},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Plan(Params{Backups: c.backups, Rules: c.rules, Now: c.now})
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Clone(c.keep)
			sort.Strings(want)
			if got := kept(r); !slices.Equal(got, want) {
				t.Errorf("kept %v, want %v", got, want)
			}
			vs := verdicts(t, r)
			if _, ok := vs["gone"]; ok {
				t.Error("a DELETED backup got a verdict")
			}
			for id, reason := range c.reasons {
				v, ok := vs[id]
				if !ok {
					t.Errorf("%s: no verdict", id)
					continue
				}
				if !slices.ContainsFunc(v.Reasons, func(s string) bool { return strings.Contains(s, reason) }) {
					t.Errorf("%s: reasons %q lack %q", id, v.Reasons, reason)
				}
			}
		})
	}
}

func TestSegmentsToDelete(t *testing.T) {
	segs := []Segment{
		{Name: "s1", LastTime: t0, Closed: true},
		{Name: "s2", LastTime: t0.Add(time.Hour), Closed: true},
		{Name: "s3", LastTime: t0.Add(2 * time.Hour), Closed: true},
		{Name: "s4", LastTime: t0.Add(3 * time.Hour), Closed: false},
	}
	cases := []struct {
		before time.Time
		want   []string
	}{
		{time.Time{}, nil},
		{t0, nil},                           // s1 ends at before: not before it
		{t0.Add(time.Hour), []string{"s1"}}, // strictly before
		{t0.Add(30 * time.Hour), []string{"s1", "s2", "s3"}}, // never the open/newest segment
	}
	for _, c := range cases {
		if got := SegmentsToDelete(segs, c.before); !slices.Equal(got, c.want) {
			t.Errorf("before %v: got %v, want %v", c.before, got, c.want)
		}
	}
	// A segment that must stay stops the walk: no hole in the middle.
	holey := []Segment{{Name: "a", LastTime: t0, Closed: true}, {Name: "b", LastTime: t0.Add(5 * time.Hour), Closed: true},
		{Name: "c", LastTime: t0, Closed: true}, {Name: "d", LastTime: t0.Add(6 * time.Hour), Closed: true}}
	if got := SegmentsToDelete(holey, t0.Add(time.Hour)); !slices.Equal(got, []string{"a"}) {
		t.Errorf("holey: got %v, want [a]", got)
	}
}

// gfsSet computes what the rules keep by a different method than Plan's:
// group every complete backup by bucket, take the newest of each group,
// then the newest count groups; keep_last is the newest N; the PITR base is
// the newest at or before the cutoff, else the oldest, plus all after the
// cutoff; plus the newest backup and the pinned ones.
func gfsSet(backups []*v1.Backup, r *v1.RetentionRules, now time.Time) map[string]bool {
	var cs []*v1.Backup
	for _, b := range backups {
		if b.GetStatus() == v1.BackupStatus_BACKUP_STATUS_COMPLETE && b.GetExpiredAt() == nil {
			cs = append(cs, b)
		}
	}
	sort.Slice(cs, func(i, j int) bool { return BackupTime(cs[i]).After(BackupTime(cs[j])) })
	want := map[string]bool{}
	if len(cs) == 0 {
		return want
	}
	want[cs[0].GetId()] = true
	for i := 0; i < int(r.GetKeepLast()) && i < len(cs); i++ {
		want[cs[i].GetId()] = true
	}
	for _, b := range buckets(r) {
		newest := map[int64]*v1.Backup{}
		for _, c := range cs {
			k := b.key(BackupTime(c))
			if n, ok := newest[k]; !ok || BackupTime(c).After(BackupTime(n)) {
				newest[k] = c
			}
		}
		var groups []*v1.Backup
		for _, n := range newest {
			groups = append(groups, n)
		}
		sort.Slice(groups, func(i, j int) bool { return BackupTime(groups[i]).After(BackupTime(groups[j])) })
		for i := 0; i < int(b.count) && i < len(groups); i++ {
			want[groups[i].GetId()] = true
		}
	}
	if w := r.GetPitrWindow().AsDuration(); w > 0 {
		cutoff := now.Add(-w)
		base := cs[len(cs)-1]
		for _, c := range cs {
			if BackupTime(c).After(cutoff) {
				want[c.GetId()] = true
			} else {
				base = c
				break
			}
		}
		want[base.GetId()] = true
	}
	for _, b := range backups {
		if b.GetPin() != nil && b.GetExpiredAt() == nil {
			want[b.GetId()] = true
		}
	}
	return want
}

// checkInvariants fails the test if the plan breaks a promise.
func checkInvariants(t *testing.T, backups []*v1.Backup, r *v1.RetentionRules, now time.Time, res *Result) {
	t.Helper()
	want := gfsSet(backups, r, now)
	var newest *v1.Backup
	for _, v := range res.Verdicts {
		b := v.Backup
		if b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE {
			continue
		}
		if b.GetExpiredAt() == nil && (newest == nil || v.Time.After(BackupTime(newest))) {
			newest = b
		}
		if b.GetPin() != nil && b.GetExpiredAt() == nil && !v.Keep {
			t.Errorf("at %v: pinned backup %s expires", now, b.GetId())
		}
		if v.Keep != want[b.GetId()] {
			t.Errorf("at %v: backup %s keep=%v (%v), the rules say %v", now, b.GetId(), v.Keep, v.Reasons, want[b.GetId()])
		}
		if len(v.Reasons) == 0 {
			t.Errorf("at %v: backup %s has no reason", now, b.GetId())
		}
	}
	if newest != nil && !verdicts(t, res)[newest.GetId()].Keep {
		t.Errorf("at %v: the last complete backup %s expires", now, newest.GetId())
	}
	if w := r.GetPitrWindow().AsDuration(); w > 0 && newest != nil {
		base := res.PITRBase
		if base == nil {
			t.Fatalf("at %v: no PITR base", now)
		}
		if !verdicts(t, res)[base.GetId()].Keep {
			t.Errorf("at %v: PITR base %s expires", now, base.GetId())
		}
		if res.BinlogBefore.After(BackupTime(base)) {
			t.Errorf("at %v: binlog before %v would delete segments after the PITR base %s at %v", now, res.BinlogBefore, base.GetId(), BackupTime(base))
		}
	}
}

func TestPlanInvariantsRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		n := rng.IntN(60)
		var bs []*v1.Backup
		at := t0
		for k := range n {
			at = at.Add(time.Duration(rng.IntN(36*60)) * time.Minute)
			st := v1.BackupStatus_BACKUP_STATUS_COMPLETE
			if rng.IntN(8) == 0 {
				st = v1.BackupStatus_BACKUP_STATUS_FAILED
			}
			b := bk(fmt.Sprintf("b%03d", k), at, st)
			if rng.IntN(15) == 0 {
				b.Pin = &v1.BackupPin{Reason: "r"}
			}
			bs = append(bs, b)
		}
		rules := &v1.RetentionRules{
			KeepLast: uint32(rng.IntN(3)), KeepHourly: uint32(rng.IntN(4)), KeepDaily: uint32(rng.IntN(8)),
			KeepWeekly: uint32(rng.IntN(5)), KeepMonthly: uint32(rng.IntN(3)), KeepYearly: uint32(rng.IntN(2)),
		}
		if rng.IntN(2) == 0 {
			rules.PitrWindow = durationpb.New(time.Duration(1+rng.IntN(96)) * time.Hour)
		}
		if Validate(rules) != nil {
			rules.KeepDaily = 1
		}
		rng.Shuffle(len(bs), func(a, b int) { bs[a], bs[b] = bs[b], bs[a] })
		now := at.Add(time.Duration(rng.IntN(48)) * time.Hour)
		res, err := Plan(Params{Backups: bs, Rules: rules, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Run(fmt.Sprint(i), func(t *testing.T) { checkInvariants(t, bs, rules, now, res) })
	}
}

// TestSimulatedMonth runs retention the way the leader does, on a test
// clock: a backup every 4 hours for a month, a plan after each, whatever it
// expires marked and then deleted. At every step the promises hold, and at
// the end what is left is exactly what the rules keep out of every backup
// ever taken (expiring step by step loses nothing a one-shot plan keeps).
func TestSimulatedMonth(t *testing.T) {
	rules := &v1.RetentionRules{KeepLast: 3, KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 2, PitrWindow: durationpb.New(48 * time.Hour)}
	var all, live []*v1.Backup
	clock := t0
	step := 4 * time.Hour
	if testing.Short() {
		step = 12 * time.Hour
	}
	for n := 0; clock.Before(t0.Add(31 * 24 * time.Hour)); n++ {
		b := complete(fmt.Sprintf("b%04d", n), clock)
		if n == 17 { // pinned as it was taken, never expires
			b.Pin = &v1.BackupPin{Reason: "legal hold", By: "carol"}
		}
		if n%11 == 5 { // a failure now and then
			b.Status = v1.BackupStatus_BACKUP_STATUS_FAILED
		}
		all = append(all, b)
		live = append(live, b)
		clock = clock.Add(step)
		res, err := Plan(Params{Backups: live, Rules: rules, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		checkInvariants(t, live, rules, clock, res)
		gone := map[string]bool{}
		for _, v := range res.Expired() {
			gone[v.Backup.GetId()] = true
		}
		live = slices.DeleteFunc(live, func(b *v1.Backup) bool { return gone[b.GetId()] })
	}
	want := gfsSet(all, rules, clock)
	var got []string
	for _, b := range live {
		if b.GetStatus() == v1.BackupStatus_BACKUP_STATUS_COMPLETE {
			got = append(got, b.GetId())
		}
	}
	var wantIDs []string
	for id := range want {
		wantIDs = append(wantIDs, id)
	}
	sort.Strings(got)
	sort.Strings(wantIDs)
	if !slices.Equal(got, wantIDs) {
		t.Errorf("after a month: kept %v\nthe rules over every backup keep %v", got, wantIDs)
	}
	if !slices.Contains(got, "b0017") {
		t.Error("the pinned backup is gone")
	}
	// Weekly 4 + monthly 2 + daily 7 + last 3 + a 48h window over a month
	// of 4-hourly backups is a small set, not everything.
	if len(got) > 30 {
		t.Errorf("kept %d backups: retention kept too much", len(got))
	}
	t.Logf("after 31 days: %d of %d backups kept", len(got), len(all))
}

// BenchmarkPlan plans one instance with 200 backups (about two months of
// 8-hourly backups with a year of monthlies): the leader runs this once per
// instance per apply.
func BenchmarkPlan(b *testing.B) {
	var bs []*v1.Backup
	for i := range 200 {
		bs = append(bs, complete(fmt.Sprintf("b%04d", i), t0.Add(time.Duration(i)*8*time.Hour)))
	}
	rules := &v1.RetentionRules{KeepLast: 3, KeepDaily: 14, KeepWeekly: 8, KeepMonthly: 12, PitrWindow: durationpb.New(7 * 24 * time.Hour)}
	now := t0.Add(200 * 8 * time.Hour)
	for b.Loop() {
		if _, err := Plan(Params{Backups: bs, Rules: rules, Now: now}); err != nil {
			b.Fatal(err)
		}
	}
}
