package pitr

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Point-in-time restore of a MySQL instance, against doubles of MySQL (no
// MySQL here; see testenv's MySQLSourceDouble and MySQLReplicaDouble): the
// source double's binlog is streamed into a real file:// repository, the
// base backup is a manifest whose consistency point is a MySQL GTID set,
// restored by an engine that only records that it ran (the replica double
// starts at the base's set, as a base restored with its GTIDs would), and
// the roll-forward goes to the replica double as the target.

// baseEngine "restores" a base by recording the call.
type baseEngine struct{ restores int }

func (e *baseEngine) Name() string { return "mysql-double-base" }
func (e *baseEngine) Backup(context.Context, engines.BackupParams) (*engines.BackupResult, error) {
	return nil, errors.New("not used")
}
func (e *baseEngine) Restore(context.Context, engines.RestoreParams) (*engines.RestoreResult, error) {
	e.restores++
	return &engines.RestoreResult{}, nil
}

func TestRestoreMySQLDoubles(t *testing.T) {
	src := testenv.StartMySQLSourceDouble(t, testenv.MySQLSourceOptions{})
	u := src.UUID
	repo := newRepo(t)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	stop := startStream(t, repo, src.DSN)
	src.CommitAt(40, t0)
	src.Rotate()
	src.CommitAt(15, t0.Add(10*time.Second))
	src.CommitAt(15, t0.Add(20*time.Second))
	src.Rotate()
	src.CommitAt(20, t0.Add(30*time.Second))
	testenv.WaitFor(t, "the archive at "+src.Executed(), testenv.Wait(30*time.Second), func() error {
		a, err := binlog.OpenArchive(context.Background(), repo, instance)
		if err != nil {
			return err
		}
		if got := a.Status().GTIDPosition; got != src.Executed() {
			return fmt.Errorf("archived to %q", got)
		}
		return nil
	})
	stop()

	eng := &baseEngine{}
	base, err := repo.WithBackup(context.Background(), archive.BackupOptions{Instance: instance, Engine: eng.Name()},
		func(_ context.Context, b *archive.Backup) error {
			b.SetConsistency(&v1.ConsistencyPoint{GtidSet: u + ":1-55", Time: timestamppb.New(t0.Add(10 * time.Second))})
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	restoreTo := func(target Target, executed string) (*testenv.MySQLReplicaDouble, *Result, error) {
		rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDExecuted: executed})
		res, err := Restore(context.Background(), Params{Repo: repo, Instance: instance, DSN: rep.DSN, Target: target,
			Engine: func(name string) (engines.Engine, error) {
				if name != eng.Name() {
					return nil, fmt.Errorf("engine %q", name)
				}
				return eng, nil
			}})
		return rep, res, err
	}

	for _, tc := range []struct {
		target Target
		last   int
	}{
		{Target{GTID: u + ":80"}, 80},
		{Target{GTID: u + ":1-75"}, 75}, // a set as copied from gtid_executed names its last
		{Target{Time: t0.Add(20 * time.Second)}, 70},
		{Target{GTID: u + ":55"}, 55}, // the base's own point
	} {
		t.Run(tc.target.String(), func(t *testing.T) {
			rep, res, err := restoreTo(tc.target, u+":1-55")
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			want := fmt.Sprintf("%s:1-%d", u, tc.last)
			if res.Base.BackupId != base.BackupId || res.Plan.EndGTID != want || rep.Executed() != want {
				t.Fatalf("from %s to %s, the target at %s; want %s", res.Base.BackupId, res.Plan.EndGTID, rep.Executed(), want)
			}
			ch, _ := rep.Channel("tidemark_pitr")
			var wantApplied []string
			for n := 56; n <= tc.last; n++ {
				wantApplied = append(wantApplied, fmt.Sprintf("%s:%d", u, n))
			}
			if !slices.Equal(ch.Applied, wantApplied) || len(ch.Skipped) != 0 {
				t.Fatalf("applied %v, skipped %v; want %v once each", ch.Applied, ch.Skipped, wantApplied)
			}
		})
	}

	before := eng.restores
	for _, tc := range []struct {
		target Target
		want   string
	}{
		{Target{GTID: u + ":95"}, "is not in the files"},
		{Target{GTID: u + ":30"}, "is before the oldest backup"},
		{Target{GTID: u + ":1-30:40"}, "several intervals"},
	} {
		_, _, err := restoreTo(tc.target, u+":1-55")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("restore to %s: %v; want a refusal saying %q", tc.target, err, tc.want)
		}
	}
	if eng.restores != before {
		t.Fatalf("a refused restore restored the base %d times", eng.restores-before)
	}
}

// TestRestoreMySQLGap: files purged before they were archived leave a gap
// (transactions 6..15); a target behind it is refused from a base before
// it, and reached from a base after it.
func TestRestoreMySQLGap(t *testing.T) {
	src := testenv.StartMySQLSourceDouble(t, testenv.MySQLSourceOptions{})
	u := src.UUID
	repo := newRepo(t)
	archived := func(want string) {
		testenv.WaitFor(t, "the archive at "+want, testenv.Wait(30*time.Second), func() error {
			a, err := binlog.OpenArchive(context.Background(), repo, instance)
			if err != nil {
				return err
			}
			if got := a.Status().GTIDPosition; got != want {
				return fmt.Errorf("archived to %q", got)
			}
			return nil
		})
	}
	src.Commit(5)
	stop := startStream(t, repo, src.DSN)
	archived(u + ":1-5")
	stop()
	src.Commit(5)
	src.Rotate()
	src.Commit(5)
	src.Rotate()
	src.Commit(5)
	src.PurgeTo("binlog.000003")
	stop = startStream(t, repo, src.DSN)
	archived(u + ":1-20")
	stop()

	eng := &baseEngine{}
	bases := map[string]string{}
	for i, set := range []string{u + ":1-3", u + ":1-17"} {
		m, err := repo.WithBackup(context.Background(), archive.BackupOptions{Instance: instance, Engine: eng.Name()},
			func(_ context.Context, b *archive.Backup) error {
				b.SetConsistency(&v1.ConsistencyPoint{GtidSet: set, Time: timestamppb.New(time.Now().Add(time.Duration(i-10) * time.Minute))})
				return nil
			})
		if err != nil {
			t.Fatal(err)
		}
		bases[set] = m.BackupId
	}
	restore := func(target string, from, executed string) (*testenv.MySQLReplicaDouble, error) {
		rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDExecuted: executed})
		_, err := Restore(context.Background(), Params{Repo: repo, Instance: instance, DSN: rep.DSN, Target: Target{GTID: target}, FromBackup: from,
			Engine: func(string) (engines.Engine, error) { return eng, nil }})
		return rep, err
	}
	if rep, err := restore(u+":4", "", u+":1-3"); err != nil || rep.Executed() != u+":1-4" {
		t.Fatalf("before the gap: %v, the target at %s", err, rep.Executed())
	}
	before := eng.restores
	_, err := restore(u+":19", bases[u+":1-3"], u+":1-3")
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "gap") || !strings.Contains(err.Error(), ":1-5") {
		t.Fatalf("across the gap: %v; want ErrUnreachable naming the gap after 1-5", err)
	}
	if eng.restores != before {
		t.Fatal("the refused restore restored its base")
	}
	rep, err := restore(u+":19", "", u+":1-17")
	ch, _ := rep.Channel("tidemark_pitr")
	if err != nil || rep.Executed() != u+":1-19" || !slices.Equal(ch.Applied, []string{u + ":18", u + ":19"}) {
		t.Fatalf("from the base after the gap: %v, the target at %s, applied %v", err, rep.Executed(), ch.Applied)
	}
}
