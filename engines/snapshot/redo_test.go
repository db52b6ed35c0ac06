package snapshot

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestRedoWindow: on a server whose 8 MiB redo log has wrapped several
// times, backups taken under concurrent transfers store only the log's
// live window (the rest of ib_logfile0 is a hole, restored as zeros), and
// a server started on each restored copy recovers to exactly the recorded
// GTID (the bank invariant) with the filler table equal to the source's.
func TestRedoWindow(t *testing.T) {
	b := testenv.StartBtrfs(t, "1G")
	sub := b.Subvolume(t, "mysql")
	const logSize = 8 << 20
	args := []string{fmt.Sprintf("--innodb-log-file-size=%d", logSize)}
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{DataDir: filepath.Join(sub, "data"), Name: "snap-redo", ExtraArgs: args})
	fillRows := 30000 // ~30 MiB of incompressible rows: the log wraps about four times
	if testing.Short() {
		fillRows = 20000
	}
	bank := testenv.CreateBank(t, src, 5000,
		"CREATE DATABASE fill",
		"CREATE TABLE fill.t (id INT PRIMARY KEY, b VARBINARY(1000) NOT NULL)",
		fmt.Sprintf("INSERT INTO fill.t SELECT seq, RANDOM_BYTES(1000) FROM seq_1_to_%d", fillRows/2),
		fmt.Sprintf("INSERT INTO fill.t SELECT seq, RANDOM_BYTES(1000) FROM seq_%d_to_%d", fillRows/2+1, fillRows),
	)
	db := src.DB(t)
	r, _ := newRepo(t)
	e := New()
	e.StateDir = t.TempDir()
	e.Block = 64 << 10 // finer holes: the window is most of a log this small
	// Pages flushed eagerly, so checkpoints follow the writes closely.
	src.Exec(t, "SET GLOBAL innodb_max_dirty_pages_pct = 0")
	const capacity = logSize - 12288

	// The first backup comes right after the filler, with the checkpoint
	// far behind (a window that is most of the log); the second after the
	// flushing caught up.
	var small, crossed int
	for i := range 2 {
		writers := bank.Transfers(t, db, 2)
		m, _, err := backup(t, r, e, src.DSN)
		writers.Stop()
		if err != nil {
			t.Fatal(err)
		}
		var live, size, ck, end, margin int64
		note := m.EngineMetadata[MetaRedo]
		if _, err := fmt.Sscanf(note, "%d of %d bytes: checkpoint LSN %d to LSN %d + %d", &live, &size, &ck, &end, &margin); err != nil {
			t.Fatalf("backup %d: %s %q: %v; want the live window", i, MetaRedo, note, err)
		}
		crosses := 12288+(ck-12288)%capacity+(end+margin-ck) > logSize
		t.Logf("backup %d: %s (passes over the log: %d; window crosses its end: %v)", i, note, (end-12288)/capacity, crosses)
		if end < 3*capacity {
			t.Errorf("backup %d: the log is at LSN %d, not past its third pass (%d): the test proves less than it says", i, end, 3*capacity)
		}
		if size != logSize || live >= size {
			t.Errorf("backup %d: %d of %d bytes of the redo log kept; want less", i, live, size)
		}
		if live < size/2 {
			small++
		}
		if crosses {
			crossed++
		}
		var holes bool
		for _, s := range m.Streams {
			if s.Name == "files/datadir/"+physical.RedoLogName {
				holes = s.GetMetadata()["holes"] != "" && s.GetSize() < logSize
			}
		}
		if !holes {
			t.Errorf("backup %d: %s stored without holes", i, physical.RedoLogName)
		}

		dir := filepath.Join(t.TempDir(), "restored")
		if _, err := physical.Extract(context.Background(), physical.ExtractParams{Source: engines.ArchiveSource(r, m), Dirs: map[string]string{physical.RootDatadir: dir}}); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(filepath.Join(dir, physical.RedoLogName)); err != nil || st.Size() != logSize {
			t.Fatalf("restored %s: %v, %v; want %d bytes", physical.RedoLogName, st, err, logSize)
		}
		out := testenv.StartMariaDB(t, testenv.MariaDBOptions{DataDir: dir, Name: fmt.Sprintf("snap-redo-restored%d", i), ExtraArgs: args})
		if n := bank.Check(t, out.DB(t), m.Consistency.GetGtidSet()); n == 0 {
			t.Errorf("backup %d: no transfer before the consistency point: the test proves nothing", i)
		}
		testenv.Compare(t, db, out.DB(t), "fill")
		out.Stop()
		if i == 0 {
			waitCheckpoint(t, db, 2<<20)
		}
	}
	t.Logf("%d backups kept under half the log; %d had a window across its end", small, crossed)
	if small == 0 {
		t.Errorf("no backup kept under half of the redo log, even after the checkpoint caught up")
	}
}

// waitCheckpoint waits until the server's checkpoint is within age bytes
// of its current LSN.
func waitCheckpoint(t *testing.T, db *sql.DB, age int64) {
	t.Helper()
	deadline := time.Now().Add(testenv.Wait(time.Minute))
	for {
		var name string
		var cur int64
		if err := db.QueryRow("SHOW GLOBAL STATUS LIKE 'Innodb_checkpoint_age'").Scan(&name, &cur); err != nil {
			t.Fatal(err)
		}
		if cur <= age {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint age still %d after a minute, want ≤ %d", cur, age)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
