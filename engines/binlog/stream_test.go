package binlog

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

// TestStreamResume streams a server under a writer with small segments,
// stops and restarts the streamer several times (in process), rotates the
// binlog, and checks the archive against the server's binlog files event for
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
		rounds = 2
	}
	for i := 0; i < rounds; i++ {
		stop := runStream(t, p)
		time.Sleep(time.Duration(700+300*i) * time.Millisecond)
		if i == 1 {
			m.Exec(t, "FLUSH BINARY LOGS")
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
