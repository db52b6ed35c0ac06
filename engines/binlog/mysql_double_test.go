package binlog

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// The MySQL path of the streamer runs here against testenv's
// MySQLSourceDouble (no MySQL on this machine): GTID auto-positioning,
// file/position resume, MySQL's event types, failover by GTID set, purged
// files. The double's binlog is MySQL 8.0's format; see its comment for
// what it cannot show.

// doubleBinlog keys the double's events as serverBinlog keys a server's.
func doubleBinlog(t *testing.T, d *testenv.MySQLSourceDouble) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for name, b := range d.Files() {
		for _, e := range binlogEvents(t, b, name) {
			out[fmt.Sprintf("%s:%012d", name, e.pos)] = e.raw
		}
	}
	return out
}

// waitArchived waits until the archive's GTID set is want.
func waitArchived(t *testing.T, repo *archive.Repo, instance, want string) *Archive {
	t.Helper()
	var a *Archive
	testenv.WaitFor(t, "archive at GTID set "+want, 30*time.Second, func() error {
		var err error
		if a, err = OpenArchive(context.Background(), repo, instance); err != nil {
			return err
		}
		if got := a.Status().GTIDPosition; got != want {
			return fmt.Errorf("archive at %q", got)
		}
		return nil
	})
	return a
}

func TestMySQLDoubleStreamResume(t *testing.T) {
	d := testenv.StartMySQLSourceDouble(t, testenv.MySQLSourceOptions{})
	repo, _ := fileRepo(t)
	d.Commit(40)
	d.Rotate()
	d.Commit(25)
	p := StreamParams{DSNs: []string{d.DSN}, Repo: repo, Instance: "my8", Flush: 100 * time.Millisecond,
		Heartbeat: 200 * time.Millisecond, Logger: testLogger(t)}
	stop := runStream(t, p)
	waitArchived(t, repo, "my8", d.Executed())
	if err := stop(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	dumps := d.Dumps()
	if len(dumps) != 1 || dumps[0].GTID || dumps[0].File != "binlog.000001" || dumps[0].Pos != 4 {
		t.Fatalf("first dump %+v: want binlog.000001 from position 4", dumps)
	}

	// Resume on the same server: by file and position, where the archive
	// ends; nothing twice, nothing missing.
	d.Commit(10)
	stop = runStream(t, p)
	waitArchived(t, repo, "my8", d.Executed())
	d.KillConnections() // a network drop mid-stream
	d.Commit(5)
	d.Rotate()
	d.Commit(3)
	a := waitArchived(t, repo, "my8", d.Executed())
	if err := stop(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	dumps = d.Dumps()
	for _, dm := range dumps[1:] {
		if dm.GTID || dm.File != "binlog.000002" || dm.Pos <= 4 {
			t.Errorf("resume dump %+v: want binlog.000002 past its header by file and position", dm)
		}
	}
	archived, _ := archivedBinlog(t, repo, "my8")
	compareBinlog(t, doubleBinlog(t, d), archived)
	if st := a.Status(); len(st.Gaps) != 0 {
		t.Errorf("gaps: %+v", st.Gaps)
	}
}

// TestMySQLDoubleFailover: the primary goes; the streamer moves to the
// replica and asks for exactly what it has not archived, by GTID set.
func TestMySQLDoubleFailover(t *testing.T) {
	primary := testenv.StartMySQLSourceDouble(t, testenv.MySQLSourceOptions{})
	primary.Commit(30)
	replica := testenv.StartMySQLSourceDouble(t, testenv.MySQLSourceOptions{ReplicaOf: primary})
	repo, _ := fileRepo(t)
	stop := runStream(t, StreamParams{DSNs: []string{primary.DSN, replica.DSN}, Repo: repo, Instance: "grp",
		Flush: 100 * time.Millisecond, Heartbeat: 200 * time.Millisecond, Logger: testLogger(t)})
	waitArchived(t, repo, "grp", primary.Executed())
	primary.Close()
	replica.Promote()
	replica.Commit(12) // the promoted replica's own writes continue the sequence
	a := waitArchived(t, repo, "grp", replica.Executed())
	if err := stop(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	var gtidDump bool
	for _, dm := range replica.Dumps() {
		if dm.GTID {
			gtidDump = true
			if !strings.HasSuffix(dm.Set, ":1-30") {
				t.Errorf("failover dump asked from %q, want the archived set ending at 30", dm.Set)
			}
		}
	}
	if !gtidDump {
		t.Fatalf("no GTID dump on the replica: %+v", replica.Dumps())
	}
	if got := archivedMySQLGNOs(t, a); got != "1-42" {
		t.Errorf("archived transactions %s, want 1-42 once each", got)
	}
}

// archivedMySQLGNOs lists the GNOs of the archived Gtid events as ranges,
// failing on a duplicate.
func archivedMySQLGNOs(t *testing.T, a *Archive) string {
	t.Helper()
	seen := map[int64]bool{}
	var lo, hi int64
	for _, s := range a.Segments() {
		rc, err := a.Open(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		var b []byte
		buf := make([]byte, 1<<16)
		for {
			n, err := rc.Read(buf)
			b = append(b, buf[:n]...)
			if err != nil {
				break
			}
		}
		_ = rc.Close()
		for _, e := range binlogEvents(t, b, s.Name) {
			if e.typ != 33 {
				continue
			}
			gno := int64(0)
			for i := 7; i >= 0; i-- {
				gno = gno<<8 | int64(e.raw[headerLen+17+i])
			}
			if seen[gno] {
				t.Fatalf("transaction %d archived twice", gno)
			}
			seen[gno] = true
			if lo == 0 || gno < lo {
				lo = gno
			}
			hi = max(hi, gno)
		}
	}
	if int64(len(seen)) != hi-lo+1 {
		return fmt.Sprintf("%d transactions between %d and %d", len(seen), lo, hi)
	}
	return fmt.Sprintf("%d-%d", lo, hi)
}

// TestMySQLDoublePurgedGap: files purged before they were archived are a
// gap with its range, and streaming continues after it.
func TestMySQLDoublePurgedGap(t *testing.T) {
	d := testenv.StartMySQLSourceDouble(t, testenv.MySQLSourceOptions{})
	repo, _ := fileRepo(t)
	d.Commit(5)
	p := StreamParams{DSNs: []string{d.DSN}, Repo: repo, Instance: "gap", Flush: 100 * time.Millisecond,
		Heartbeat: 200 * time.Millisecond, Logger: testLogger(t)}
	stop := runStream(t, p)
	waitArchived(t, repo, "gap", d.Executed())
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	d.Commit(5)
	d.Rotate()
	d.Commit(5)
	d.Rotate()
	d.Commit(5)
	d.PurgeTo("binlog.000003")
	stop = runStream(t, p)
	defer func() { _ = stop() }()
	var a *Archive
	testenv.WaitFor(t, "a gap recorded", 30*time.Second, func() error {
		var err error
		if a, err = OpenArchive(context.Background(), repo, "gap"); err != nil {
			return err
		}
		if len(a.Status().Gaps) == 0 {
			return fmt.Errorf("no gap yet")
		}
		return nil
	})
	g := a.Status().Gaps[0]
	if !strings.HasSuffix(g.After, ":1-5 (binlog.000001:1412)") || !strings.Contains(g.Before, ":1-15 (binlog.000003:4)") || !strings.Contains(g.Reason, "purged") {
		t.Errorf("gap %+v: want after transaction 5 (binlog.000001) to before 16 (binlog.000003)", g)
	}
	d.Commit(2)
	waitArchived(t, repo, "gap", d.Executed())
}
