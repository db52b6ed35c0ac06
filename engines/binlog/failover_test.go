package binlog

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// archivedGTIDs lists the GTIDs of the archived transactions in stream order.
func archivedGTIDs(t *testing.T, a *Archive) []string {
	t.Helper()
	var out []string
	for _, s := range a.Segments() {
		rc, err := a.Open(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		evs := binlogEvents(t, b, s.Name)
		crc := fdeChecksum(mustHeader(evs[0].raw)) == checksumCRC32
		for _, e := range evs {
			if e.typ == evMariaGTID {
				ev, _ := parseHeader(e.raw)
				g, _, err := mariaGTID(ev, crc)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, g.String())
			}
		}
	}
	return out
}

// serverGTIDs lists the GTIDs in a server's binlog files, in order.
func serverGTIDs(t *testing.T, m *testenv.MariaDB) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(m.DataDir, "binlog.[0-9]*"))
	sort.Strings(files)
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		evs := binlogEvents(t, b, f)
		crc := fdeChecksum(mustHeader(evs[0].raw)) == checksumCRC32
		for _, e := range evs {
			if e.typ == evMariaGTID {
				ev, _ := parseHeader(e.raw)
				g, _, _ := mariaGTID(ev, crc)
				out = append(out, g.String())
			}
		}
	}
	return out
}

func gtidPos(t *testing.T, db *sql.DB) string {
	t.Helper()
	var p string
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFailover streams a primary/replica pair given as two DSNs, stops the
// primary under writes, promotes the replica and writes on: the archive holds
// every transaction once, in the order of the new primary's binlog, and its
// segments move from the old primary's server id to the new one's.
func TestFailover(t *testing.T) {
	a := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "primary", ExtraArgs: []string{"--gtid-strict-mode=1", "--log-slave-updates"}})
	b := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "replica", ExtraArgs: []string{"--gtid-strict-mode=1", "--log-slave-updates"}})
	adb, bdb := a.DB(t), b.DB(t)
	b.Exec(t, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='tidemark', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1", a.Port),
		"START SLAVE")
	a.Exec(t, "CREATE DATABASE test")
	repo, _ := fileRepo(t)
	var marks []Watermark
	stop := runStream(t, StreamParams{DSNs: []string{a.DSN, b.DSN}, Repo: repo, Instance: "grp", Flush: 200 * time.Millisecond,
		Logger: testLogger(t), OnWatermark: func(w Watermark) { marks = append(marks, w) }})
	w := startWriter(t, adb, "test.t")
	time.Sleep(testenv.Wait(1500 * time.Millisecond))
	// The replica catches up while the primary is still writing; the
	// primary dies mid-stream.
	w.Stop()
	want := gtidPos(t, adb)
	testenv.WaitFor(t, "replica at "+want, 30*time.Second, func() error {
		if got := gtidPos(t, bdb); got != want {
			return fmt.Errorf("replica at %s", got)
		}
		return nil
	})
	a.Kill()
	b.Exec(t, "STOP SLAVE", "RESET SLAVE ALL")
	w = startWriter(t, bdb, "test.t")
	time.Sleep(testenv.Wait(1500 * time.Millisecond))
	w.Stop()
	if w.commits.Load() == 0 {
		t.Fatalf("writer on the new primary committed nothing: %v", w.lastErr.Load())
	}
	waitCaughtUp(t, repo, "grp", bdb)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	arch, err := OpenArchive(context.Background(), repo, "grp")
	if err != nil {
		t.Fatal(err)
	}
	got, wantList := archivedGTIDs(t, arch), serverGTIDs(t, b)
	seen := map[string]bool{}
	for _, g := range got {
		if seen[g] {
			t.Fatalf("GTID %s archived twice", g)
		}
		seen[g] = true
	}
	if strings.Join(got, ",") != strings.Join(wantList, ",") {
		t.Fatalf("archived %d transactions, the new primary's binlog has %d; first difference at %d", len(got), len(wantList), firstDiff(got, wantList))
	}
	servers := map[uint32]bool{}
	for _, s := range arch.Segments() {
		servers[s.ServerID] = true
	}
	if !servers[a.ServerID] || !servers[b.ServerID] {
		t.Errorf("segments come from servers %v, want both %d and %d", servers, a.ServerID, b.ServerID)
	}
	if g := arch.Gaps(); len(g) != 0 {
		t.Errorf("gaps: %+v", g)
	}
	if len(marks) == 0 || marks[len(marks)-1].GTID != gtidPos(t, bdb) {
		t.Errorf("last watermark %+v, want GTID %s", marks[len(marks)-1:], gtidPos(t, bdb))
	}
	t.Logf("%d transactions archived across the failover, %d segments", len(got), len(arch.Segments()))
}

func firstDiff(a, b []string) int {
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

// TestPurgedGap stops the streamer, lets the server purge binlog it had not
// archived, and starts it again: the missing stretch is reported as a gap
// with its range, through OnGap once it is durable (the same gap the
// archive lists, with the time it was detected), and again by the next
// start; streaming continues from the server's oldest binlog.
func TestPurgedGap(t *testing.T) {
	m := testenv.StartMariaDB(t)
	db := m.DB(t)
	m.Exec(t, "CREATE DATABASE test", "CREATE TABLE test.t (id INT PRIMARY KEY)", "INSERT INTO test.t VALUES (1)")
	repo, _ := fileRepo(t)
	var (
		mu       sync.Mutex
		reported []Gap
	)
	onGap := func(g Gap) { mu.Lock(); reported = append(reported, g); mu.Unlock() }
	takeReported := func() []Gap { mu.Lock(); defer mu.Unlock(); r := reported; reported = nil; return r }
	p := StreamParams{DSNs: []string{m.DSN}, Repo: repo, Instance: "db", Flush: 100 * time.Millisecond, Logger: testLogger(t), OnGap: onGap}
	stop := runStream(t, p)
	waitCaughtUp(t, repo, "db", db)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if r := takeReported(); len(r) != 0 {
		t.Fatalf("gaps reported without a purge: %+v", r)
	}
	detectFrom := time.Now()
	before := gtidPos(t, db)
	m.Exec(t, "INSERT INTO test.t VALUES (2)", "FLUSH BINARY LOGS", "INSERT INTO test.t VALUES (3)")
	cur := m.PurgeBinlogs(t)
	m.Exec(t, "INSERT INTO test.t VALUES (4)")

	stop = runStream(t, p)
	waitCaughtUp(t, repo, "db", db)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	arch, err := OpenArchive(context.Background(), repo, "db")
	if err != nil {
		t.Fatal(err)
	}
	gaps := arch.Gaps()
	if len(gaps) != 1 {
		t.Fatalf("gaps %+v, want one", gaps)
	}
	g := gaps[0]
	if !strings.Contains(g.After, before) || !strings.Contains(g.Before, cur+":4") || g.FromTime.IsZero() || g.ToTime.IsZero() || !strings.Contains(g.Reason, "purged") {
		t.Errorf("gap %+v: want after GTID %s, before %s:4, times and a reason naming the purge", g, before, cur)
	}
	st := arch.Status()
	if len(st.Gaps) != 1 || st.GTIDPosition != gtidPos(t, db) {
		t.Errorf("status %+v", st)
	}
	t.Logf("gap: %+v", g)
	if g.DetectedAt.Before(detectFrom) || g.DetectedAt.After(time.Now()) {
		t.Errorf("gap detected at %s, want within the second run (from %s)", g.DetectedAt, detectFrom)
	}
	if r := takeReported(); len(r) != 1 || !reflect.DeepEqual(r[0], g) {
		t.Errorf("OnGap reported %+v, want once the archive's gap %+v", r, g)
	}
	// The next start reports the gap the archive holds again.
	stop = runStream(t, p)
	testenv.WaitFor(t, "the gap reported again at the next start", testenv.Wait(10*time.Second), func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(reported) == 0 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if r := takeReported(); len(r) != 1 || !reflect.DeepEqual(r[0], g) {
		t.Errorf("OnGap at the next start reported %+v, want once %+v", r, g)
	}
}
