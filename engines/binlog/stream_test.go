package binlog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

// TestStreamResume streams a server under a writer with small segments,
// stops and restarts the streamer several times (in process), rotates the
// binlog, restarts the server cleanly and after a kill, and checks the archive against the server's binlog files event for
// event; mariadb-binlog reads every segment.
func TestStreamResume(t *testing.T) {
	m := testenv.StartMariaDB(t)
	db := m.DB(t)
	repo, _ := fileRepo(t)
	p := StreamParams{DSNs: []string{m.DSN}, Repo: repo, Instance: "db1", Flush: 200 * time.Millisecond,
		SegmentSize: 16 << 10, Logger: testLogger(t)}
	m.Exec(t, "CREATE DATABASE test")
	w := startWriter(t, db, "test.t")
	rounds := 4
	if testing.Short() {
		rounds = 3
	}
	for i := 0; i < rounds; i++ {
		stop := runStream(t, p)
		time.Sleep(time.Duration(700+300*i) * time.Millisecond)
		switch i {
		case 1:
			m.Exec(t, "FLUSH BINARY LOGS")
			// A clean restart (the file ends with a Stop event) under
			// the running streamer.
			m.Restart(t)
			time.Sleep(500 * time.Millisecond)
		case 2:
			// A crash: the file just ends.
			m.Kill()
			m.Restart(t)
			time.Sleep(500 * time.Millisecond)
		}
		if err := stop(); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	w.Stop()
	if w.commits.Load() == 0 {
		t.Fatalf("writer committed nothing: %v", w.lastErr.Load())
	}
	stop := runStream(t, p)
	waitCaughtUp(t, repo, "db1", db)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	archived, a := archivedBinlog(t, repo, "db1")
	compareBinlog(t, serverBinlog(t, m), archived)
	if g := a.Gaps(); len(g) != 0 {
		t.Errorf("gaps: %+v", g)
	}
	dir := t.TempDir()
	var files []string
	for _, s := range a.Segments() {
		rc, err := a.Open(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		f := filepath.Join(dir, s.Name)
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	t.Logf("%d segments", len(files))
	mariadbBinlogReads(t, files...)
}

// TestCompactionInterrupted stops compactions after the segment object and
// after the index entry (as a crash would): the archive reads the same
// throughout, and the next start finishes the job. The repository is
// encrypted: pieces, segments and index entries go through it like any
// sealed object.
func TestCompactionInterrupted(t *testing.T) {
	m := testenv.StartMariaDB(t)
	db := m.DB(t)
	m.Exec(t, "CREATE DATABASE test")
	repo, _ := encryptedRepo(t)
	var n atomic.Int64
	compactFault = func(step string) error {
		k := n.Add(1)
		if k%3 == 1 && step == "segment" || k%3 == 2 && step == "index" {
			return fmt.Errorf("fault after %s", step)
		}
		return nil
	}
	t.Cleanup(func() { compactFault = func(string) error { return nil } })
	p := StreamParams{DSNs: []string{m.DSN}, Repo: repo, Instance: "db", Flush: 100 * time.Millisecond, SegmentSize: 8 << 10, Logger: testLogger(t)}
	w := startWriter(t, db, "test.t")
	stop := runStream(t, p)
	time.Sleep(testenv.Wait(1500 * time.Millisecond))
	w.Stop()
	waitCaughtUp(t, repo, "db", db)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	archived, a := archivedBinlog(t, repo, "db")
	compareBinlog(t, serverBinlog(t, m), archived)
	leftover := 0
	for _, s := range a.segs {
		if len(s.pieces) > 0 && (s.indexed || s != a.segs[len(a.segs)-1]) {
			leftover++
		}
	}
	if leftover == 0 {
		t.Fatal("no interrupted compaction left pieces behind: the fault did not fire")
	}
	compactFault = func(string) error { return nil }
	stop = runStream(t, p)
	testenv.WaitFor(t, "compactions finished", 30*time.Second, func() error {
		a, err := OpenArchive(context.Background(), repo, "db")
		if err != nil {
			return err
		}
		for _, s := range a.segs[:len(a.segs)-1] {
			if !s.indexed || len(s.pieces) > 0 {
				return fmt.Errorf("segment %s: indexed %v, %d pieces", s.meta.Name, s.indexed, len(s.pieces))
			}
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	archived, a = archivedBinlog(t, repo, "db")
	compareBinlog(t, serverBinlog(t, m), archived)
	for _, s := range a.segs[:len(a.segs)-1] {
		if !s.indexed || len(s.pieces) > 0 {
			t.Errorf("segment %s: indexed %v, %d pieces left after a restart", s.meta.Name, s.indexed, len(s.pieces))
		}
	}
	t.Logf("%d interrupted compactions finished by the restart", leftover)
}

// TestSilentServer checks that an idle server makes the streamer write
// nothing, then freezes the server (SIGSTOP: the TCP connection stays up,
// no heartbeat comes): the streamer takes the connection as dead after 4
// heartbeat periods, and after SIGCONT resumes with nothing lost or doubled.
func TestSilentServer(t *testing.T) {
	m := testenv.StartMariaDB(t)
	db := m.DB(t)
	m.Exec(t, "CREATE DATABASE test", "CREATE TABLE test.t (id INT PRIMARY KEY)", "INSERT INTO test.t VALUES (1)")
	repo, _ := fileRepo(t)
	var logs syncBuffer
	p := StreamParams{DSNs: []string{m.DSN}, Repo: repo, Instance: "db", Flush: 100 * time.Millisecond,
		Heartbeat: 250 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	stop := runStream(t, p)
	waitCaughtUp(t, repo, "db", db)
	// An idle server (heartbeats only) makes the streamer write nothing.
	objects := func() int {
		n := 0
		_ = repo.ListObjects(context.Background(), "binlog/", func(archive.ObjectInfo) error { n++; return nil })
		return n
	}
	before := objects()
	time.Sleep(testenv.Wait(1500 * time.Millisecond))
	if after := objects(); after != before {
		t.Errorf("idle server: %d objects became %d", before, after)
	}
	if err := syscall.Kill(m.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the silent connection taken as dead", 20*time.Second, func() error {
		if !strings.Contains(logs.String(), "sent neither an event nor a heartbeat") {
			return fmt.Errorf("not yet; log:\n%s", logs.String())
		}
		return nil
	})
	if err := syscall.Kill(m.Pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	m.Exec(t, "INSERT INTO test.t VALUES (2)")
	waitCaughtUp(t, repo, "db", db)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	archived, _ := archivedBinlog(t, repo, "db")
	compareBinlog(t, serverBinlog(t, m), archived)
}
