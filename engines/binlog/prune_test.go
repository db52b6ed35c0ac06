package binlog

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/archive"
)

// synthArchive stores n closed segments of inst an hour apart, as the
// streamer leaves them (segment, then index entry), the first with a
// leftover piece.
func synthArchive(t *testing.T, repo *archive.Repo, inst string, n int) (time.Time, []string) {
	t.Helper()
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var names []string
	for i := range n {
		name := segKey(uint64(i+1), 1, fmt.Sprintf("bin.%06d", i+1), 4)
		names = append(names, name)
		meta := segmentMeta{Version: layoutVersion, Instance: inst, Seq: uint64(i + 1), SegmentInfo: SegmentInfo{
			Name: name, ServerID: 1, File: fmt.Sprintf("bin.%06d", i+1), StartPos: 4, EndPos: 100, Events: 3,
			FirstTime: t0.Add(time.Duration(i) * time.Hour), LastTime: t0.Add(time.Duration(i)*time.Hour + 30*time.Minute), Closed: true,
		}}
		b, err := json.Marshal(meta)
		if err != nil {
			t.Fatal(err)
		}
		if err := repo.PutObject(ctx, segmentName(inst, name), []byte("segment bytes "+name), objOpts()); err != nil {
			t.Fatal(err)
		}
		if err := repo.PutObject(ctx, indexName(inst, name), b, objOpts()); err != nil {
			t.Fatal(err)
		}
		if i == 0 { // a leftover piece beside the index entry
			if err := repo.PutObject(ctx, pieceName(inst, name, 0), []byte("piece"), objOpts()); err != nil {
				t.Fatal(err)
			}
		}
	}
	return t0, names
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	repo, _ := fileRepo(t)
	const inst = "db1"
	t0, names := synthArchive(t, repo, inst, 4)
	objects := func() []string {
		var out []string
		if err := repo.ListObjects(ctx, instancePrefix(inst), func(oi archive.ObjectInfo) error {
			out = append(out, oi.Name)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		slices.Sort(out)
		return out
	}
	before := len(objects())

	// Dry run: lists, deletes nothing. Segment 2 ends at 1h30: "before
	// 1h30" keeps it (strictly before), "before 1h31" takes it.
	res, err := Prune(ctx, repo, PruneParams{Instance: inst, Before: t0.Add(90 * time.Minute), DryRun: true})
	if err != nil || len(res.Deleted) != 1 || res.Deleted[0].Name != names[0] || len(objects()) != before {
		t.Fatalf("dry run: %+v, %v, %d objects (was %d)", res, err, len(objects()), before)
	}
	res, err = Prune(ctx, repo, PruneParams{Instance: inst, Before: t0.Add(91 * time.Minute)})
	if err != nil || len(res.Deleted) != 2 || res.Kept != 2 {
		t.Fatalf("prune: %+v, %v", res, err)
	}
	for _, o := range objects() {
		for _, gone := range names[:2] {
			if slices.Contains([]string{indexName(inst, gone), segmentName(inst, gone), pieceName(inst, gone, 0)}, o) {
				t.Errorf("%s is still there", o)
			}
		}
	}
	a, err := OpenArchive(ctx, repo, inst)
	if err != nil {
		t.Fatal(err)
	}
	if segs := a.Segments(); len(segs) != 2 || segs[0].Name != names[2] {
		t.Fatalf("after prune: %v", segs)
	}
	// Far in the future: never the newest segment.
	res, err = Prune(ctx, repo, PruneParams{Instance: inst, Before: t0.Add(1000 * time.Hour)})
	if err != nil || len(res.Deleted) != 1 || res.Deleted[0].Name != names[2] || res.Kept != 1 {
		t.Fatalf("prune to the end: %+v, %v", res, err)
	}
	if _, err := Prune(ctx, repo, PruneParams{Instance: "nope", Before: t0}); err == nil {
		t.Fatal("pruning an instance with no archive did not fail")
	}
}

func TestPrunableStopsAtTheFirstKept(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	seg := func(last time.Duration, indexed bool) *segState {
		return &segState{indexed: indexed, meta: segmentMeta{SegmentInfo: SegmentInfo{LastTime: t0.Add(last)}}}
	}
	cases := []struct {
		segs   []*segState
		before time.Time
		want   int
	}{
		{[]*segState{seg(0, true), seg(time.Hour, true)}, time.Time{}, 0},
		{[]*segState{seg(0, true), seg(5*time.Hour, true), seg(0, true), seg(6*time.Hour, true)}, t0.Add(time.Hour), 1},
		{[]*segState{seg(0, true), seg(0, false), seg(0, true)}, t0.Add(time.Hour), 1}, // an open (unindexed) segment stops it
		{[]*segState{seg(0, true)}, t0.Add(time.Hour), 0},                              // the only segment is the newest
	}
	for i, c := range cases {
		if got := prunable(c.segs, c.before); got != c.want {
			t.Errorf("case %d: %d, want %d", i, got, c.want)
		}
	}
}
