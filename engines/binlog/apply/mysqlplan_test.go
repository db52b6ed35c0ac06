package apply

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines/binlog/gtid"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// Planning over MySQL binlog files: the files are what testenv's
// MySQLSourceDouble writes (MySQL 8.0's format: Previous_gtids, Gtid,
// BEGIN, Table_map, Write_rows, Xid), as the streamer archives them.

// doubleFiles returns the double's binlog files in order, as Files.
func doubleFiles(t *testing.T, d *testenv.MySQLSourceDouble) []File {
	t.Helper()
	m := d.Files()
	var names []string
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	var out []File
	for _, n := range names {
		b := m[n]
		out = append(out, File{Name: n, ServerID: d.ServerID, Open: func(context.Context) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(b)), nil
		}})
	}
	return out
}

// txnsOf lists the transactions of files (every one, in order).
func txnsOf(t *testing.T, files []File) []Point {
	t.Helper()
	var out []Point
	for i, f := range files {
		if _, err := scanFile(context.Background(), f, i, true, 0, 0, func(Position) {}, func(gtid.MySQLSet) {}, func(tx txn) {
			out = append(out, tx.point(files))
		}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func plan(t *testing.T, p Params) *PlanResult {
	t.Helper()
	r, err := Plan(context.Background(), p)
	if err != nil {
		t.Fatalf("plan to %s: %v", p.Stop, err)
	}
	return r
}

// threeFiles: 40, 30 and 20 transactions in binlog.000001..3, a second
// apart per file.
func threeFiles(t *testing.T) (*testenv.MySQLSourceDouble, []File, time.Time) {
	d := testenv.StartMySQLSourceDouble(t, testenv.MySQLSourceOptions{})
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	d.CommitAt(40, t0)
	d.Rotate()
	d.CommitAt(15, t0.Add(10*time.Second))
	d.CommitAt(15, t0.Add(20*time.Second))
	d.Rotate()
	d.CommitAt(20, t0.Add(30*time.Second))
	return d, doubleFiles(t, d), t0
}

func TestPlanMySQLFromAMidFileSet(t *testing.T) {
	d, files, t0 := threeFiles(t)
	u := d.UUID
	all := txnsOf(t, files)
	if len(all) != 90 {
		t.Fatalf("%d transactions in the files, want 90", len(all))
	}
	byGTID := map[string]Point{}
	for _, p := range all {
		byGTID[p.GTID] = p
	}
	start := u + ":1-55" // the base: mid binlog.000002

	for _, tc := range []struct {
		name        string
		stop        Stop
		first, last string
		n           int
		end         string
	}{
		{"to-gtid", Stop{GTID: u + ":80"}, u + ":56", u + ":80", 25, u + ":1-80"},
		{"to-gtid in the next file's first", Stop{GTID: u + ":71"}, u + ":56", u + ":71", 16, u + ":1-71"},
		{"to-time", Stop{Time: t0.Add(20 * time.Second)}, u + ":56", u + ":70", 15, u + ":1-70"},
		{"to-position", Stop{File: "binlog.000003", Pos: byGTID[u+":75"].Pos}, u + ":56", u + ":74", 19, u + ":1-74"},
		{"to the end", Stop{}, u + ":56", u + ":90", 35, u + ":1-90"},
		{"at the start", Stop{GTID: u + ":55"}, "", "", 0, u + ":1-55"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := plan(t, Params{Files: files, StartGTID: start, Stop: tc.stop})
			if !r.MySQL || r.StartGTID != start || r.EndGTID != tc.end || r.Transactions != tc.n || r.First.GTID != tc.first || r.Last.GTID != tc.last {
				t.Fatalf("plan: MySQL %v, start %s, end %s, %d transactions, %s to %s; want start %s, end %s, %d, %s to %s",
					r.MySQL, r.StartGTID, r.EndGTID, r.Transactions, r.First.GTID, r.Last.GTID, start, tc.end, tc.n, tc.first, tc.last)
			}
			if tc.n == 0 {
				return
			}
			// Cut at the event boundary where 56 starts, never from the
			// file's start (which would apply 41..55 twice).
			if want := byGTID[u+":56"]; r.First.File != "binlog.000002" || r.First.Pos != want.Pos || r.files[1].ranges[0][0] != want.Pos {
				t.Fatalf("first transaction at %s:%d (ranges %v), want binlog.000002:%d", r.First.File, r.First.Pos, r.files[1].ranges, want.Pos)
			}
			if r.files[0].ranges != nil {
				t.Fatalf("binlog.000001 is wholly in the base but the plan sends %v of it", r.files[0].ranges)
			}
			if got := r.mysqlApplied.String(); got != strings.Replace(tc.end, ":1-", ":56-", 1) {
				t.Fatalf("applied set %s, want 56 to the end of %s", got, tc.end)
			}
		})
	}

	// No start given: the first file's Previous_gtids (empty) is the base.
	if r := plan(t, Params{Files: files, Stop: Stop{GTID: u + ":3"}}); r.Transactions != 3 || r.EndGTID != u+":1-3" {
		t.Fatalf("from the files' own start: %d transactions to %s", r.Transactions, r.EndGTID)
	}
}

func TestPlanMySQLRefusals(t *testing.T) {
	d, files, t0 := threeFiles(t)
	u := d.UUID
	start := u + ":1-55"
	for _, tc := range []struct {
		name string
		p    Params
		want []string
	}{
		{"not in the files", Params{Files: files, StartGTID: start, Stop: Stop{GTID: u + ":91"}},
			[]string{"GTID " + u + ":91 is not in the files", "from GTID " + u + ":56 at binlog.000002", "to GTID " + u + ":90 at binlog.000003"}},
		{"in the base", Params{Files: files, StartGTID: start, Stop: Stop{GTID: u + ":30"}},
			[]string{"before the start position " + start}},
		{"another server's", Params{Files: files, StartGTID: start, Stop: Stop{GTID: "4e11fa47-71ca-11e1-9e33-c80aa9429562:60"}},
			[]string{"is not in the files"}},
		{"after the last event", Params{Files: files, StartGTID: start, Stop: Stop{Time: t0.Add(3 * time.Hour)}},
			[]string{"after the last event in the files"}},
		{"in a gap", Params{Files: []File{files[0], files[2]}, StartGTID: u + ":1-20", Stop: Stop{GTID: u + ":80"}},
			[]string{"binlog.000003 (file 2) starts after GTIDs " + u + ":41-70", "to GTID " + u + ":90"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Plan(context.Background(), tc.p)
			if !errors.Is(err, ErrUnreachable) {
				t.Fatalf("plan: %v, want ErrUnreachable", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("refusal %q does not say %q", err, w)
				}
			}
		})
	}
	// Before the gap, the same files are fine.
	if r := plan(t, Params{Files: []File{files[0], files[2]}, StartGTID: u + ":1-20", Stop: Stop{GTID: u + ":35"}}); r.Transactions != 15 {
		t.Fatalf("before the gap: %d transactions, want 15", r.Transactions)
	}
	for _, bad := range []Params{
		{Files: files, StartGTID: start, Stop: Stop{GTID: "0-1-5"}},
		{Files: files, StartGTID: "0-1-5", Stop: Stop{GTID: u + ":60"}},
		{Files: files, StartGTID: u + ":x", Stop: Stop{GTID: u + ":60"}},
		{Files: files, StartGTID: start, Stop: Stop{GTID: u + ":1-60:62"}},
	} {
		if _, err := Plan(context.Background(), bad); err == nil || errors.Is(err, ErrUnreachable) {
			t.Errorf("start %q stop %q: %v, want a format error", bad.StartGTID, bad.Stop.GTID, err)
		}
	}
}

// TestPlanMySQLTwoUUIDs: after a failover the new primary's binlog repeats
// the old primary's transactions (its replica's copies) and continues
// under its own UUID; the base's set names both.
func TestPlanMySQLTwoUUIDs(t *testing.T) {
	primary := testenv.StartMySQLSourceDouble(t, testenv.MySQLSourceOptions{})
	primary.Commit(30)
	replica := testenv.StartMySQLSourceDouble(t, testenv.MySQLSourceOptions{ReplicaOf: primary})
	replica.PromoteWithOwnUUID()
	replica.Commit(10)
	replica.Rotate()
	replica.Commit(10)
	a, b := primary.UUID, replica.UUID
	files := append(doubleFiles(t, primary), doubleFiles(t, replica)...)
	if got := replica.Executed(); got != a+":1-30,"+b+":1-20" {
		t.Fatalf("the promoted double is at %s", got)
	}

	// From A only, mid the old primary's file, across the failover.
	r := plan(t, Params{Files: files, StartGTID: a + ":1-25", Stop: Stop{GTID: b + ":15"}})
	if r.Transactions != 5+15 || r.First.GTID != a+":26" || r.First.FileIndex != 1 || r.Last.GTID != b+":15" || r.EndGTID != a+":1-30,"+b+":1-15" {
		t.Fatalf("across the failover: %d transactions %s (file %d) to %s, end %s", r.Transactions, r.First.GTID, r.First.FileIndex, r.Last.GTID, r.EndGTID)
	}
	if got := r.mysqlApplied.String(); got != a+":26-30,"+b+":1-15" {
		t.Fatalf("applied %s: the new primary's copies of A were to be skipped", got)
	}
	// A base of both UUIDs (taken on the new primary).
	r = plan(t, Params{Files: files, StartGTID: a + ":1-30," + b + ":1-5", Stop: Stop{GTID: b + ":12"}})
	if r.Transactions != 7 || r.First.GTID != b+":6" || r.EndGTID != a+":1-30,"+b+":1-12" {
		t.Fatalf("from a two-UUID base: %d transactions from %s, end %s", r.Transactions, r.First.GTID, r.EndGTID)
	}
}
