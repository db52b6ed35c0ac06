package mariabackup

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	"github.com/tidemark-backup/tidemark/internal/xbstream"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// double writes a shell script standing in for mariabackup/xtrabackup (a
// command-level double): it answers --version with version and runs body
// for a backup.
func double(t *testing.T, version, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "double")
	script := fmt.Sprintf("#!/bin/sh\nif [ \"$1\" = --version ]; then echo %q >&2; exit 0; fi\n%s\n", version, body)
	if err := os.WriteFile(p, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func realVersion(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(testenv.RequireBinary(t, "mariabackup", mariabackupHint), "--version").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// memSink is a five-line sink: streams in memory, the Set* calls recorded.
// Stream and Close may be called from several goroutines (the Sink
// contract).
type memSink struct {
	mu      sync.Mutex
	streams map[string]*bytes.Buffer
	cp      *v1.ConsistencyPoint
	md      map[string]string
	open    int
}

func newMemSink() *memSink {
	return &memSink{streams: map[string]*bytes.Buffer{}, md: map[string]string{}}
}

type memStream struct {
	*bytes.Buffer
	s *memSink
}

func (m memStream) Close() error { m.s.mu.Lock(); m.s.open--; m.s.mu.Unlock(); return nil }

func (s *memSink) Stream(name string, _ map[string]string) (io.WriteCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.streams[name]; dup {
		return nil, fmt.Errorf("stream %s twice", name)
	}
	b := &bytes.Buffer{}
	s.streams[name] = b
	s.open++
	return memStream{b, s}, nil
}
func (s *memSink) SetServer(*v1.ServerInfo)               {}
func (s *memSink) SetConsistency(cp *v1.ConsistencyPoint) { s.cp = cp }
func (s *memSink) SetLockDuration(time.Duration)          {}
func (s *memSink) SetEngineMetadata(k, v string)          { s.md[k] = v }

// chunk appends one xbstream payload, end-of-file or remove chunk.
func chunk(b *bytes.Buffer, typ byte, path string, off uint64, data []byte) {
	b.WriteString(xbstream.Magic)
	b.WriteByte(0)
	b.WriteByte(typ)
	_ = binary.Write(b, binary.LittleEndian, uint32(len(path)))
	b.WriteString(path)
	if typ == xbstream.TypeEOF || typ == xbstream.TypeRemove {
		return
	}
	_ = binary.Write(b, binary.LittleEndian, uint64(len(data)))
	_ = binary.Write(b, binary.LittleEndian, off)
	_ = binary.Write(b, binary.LittleEndian, crc32.ChecksumIEEE(data))
	b.Write(data)
}

func pidAlive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// TestBadInput: each case a clear error before or instead of a backup,
// nothing stored as complete, no child left running.
func TestBadInput(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "bad"})
	version := realVersion(t)
	repo := newRepo(t)

	t.Run("missing tool names the package", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		_, _, err := backup(t, repo, New(), src.DSN)
		if err == nil || !strings.Contains(err.Error(), "mariabackup is not installed") || !strings.Contains(err.Error(), "mariadb-backup") {
			t.Errorf("got %v", err)
		}
	})

	t.Run("other series is refused before running", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "ran")
		d := double(t, "mariabackup based on MariaDB server 11.4.2-MariaDB debian-linux-gnu (x86_64)", "touch "+marker)
		_, _, err := backup(t, repo, &Engine{MariaBackup: d}, src.DSN)
		if !errors.Is(err, engines.ErrCapability) || !strings.Contains(err.Error(), "11.4.2-MariaDB") || !strings.Contains(err.Error(), "series 10.11") {
			t.Errorf("got %v", err)
		}
		if _, serr := os.Stat(marker); serr == nil {
			t.Error("the tool ran for a backup despite the version mismatch")
		}
	})

	t.Run("missing privileges are named", func(t *testing.T) {
		src.Exec(t, "CREATE USER 'weak'@'%' IDENTIFIED BY 'weak'", "GRANT SELECT, PROCESS ON *.* TO 'weak'@'%'")
		dsn := fmt.Sprintf("weak:weak@tcp(127.0.0.1:%d)/", src.Port)
		_, _, err := backup(t, repo, New(), dsn)
		if !errors.Is(err, mysqlx.ErrPrivilege) {
			t.Fatalf("got %v", err)
		}
		for _, p := range []string{"RELOAD", "LOCK TABLES", "BINLOG MONITOR"} {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error does not name %s: %v", p, err)
			}
		}
		if strings.Contains(err.Error(), "PROCESS,") {
			t.Errorf("names PROCESS, which the user holds: %v", err)
		}
	})

	t.Run("credentials through a private option file, not argv", func(t *testing.T) {
		pw := `p"a\ss #w'd x`
		src.Exec(t, "CREATE USER 'quoted'@'%' IDENTIFIED BY "+mysqlx.QuoteString(pw), "GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR, SELECT ON *.* TO 'quoted'@'%'")
		rec := filepath.Join(t.TempDir(), "rec")
		real := testenv.RequireBinary(t, "mariabackup", mariabackupHint)
		// Records argv and the option file's mode, then runs the real tool.
		d := double(t, version, fmt.Sprintf(`echo "$@" > %[1]s.argv
f=$(echo "$1" | sed 's/^--defaults-extra-file=//'); stat -c %%a "$f" > %[1]s.mode; stat -c %%a "$(dirname "$f")" > %[1]s.dirmode; echo "$f" > %[1]s.path
exec %[2]s "$@"`, rec, real))
		dsn := fmt.Sprintf("quoted:%s@tcp(127.0.0.1:%d)/", pw, src.Port)
		m, _, err := backup(t, repo, &Engine{MariaBackup: d}, dsn)
		if err != nil {
			t.Fatal(err)
		}
		read := func(s string) string { b, _ := os.ReadFile(rec + s); return strings.TrimSpace(string(b)) }
		if argv := read(".argv"); strings.Contains(argv, "p\"a") || strings.Contains(argv, "quoted") || !strings.HasPrefix(argv, "--defaults-extra-file=") {
			t.Errorf("argv exposes credentials or lacks the option file first: %s", argv)
		}
		if read(".mode") != "600" || read(".dirmode") != "700" {
			t.Errorf("option file mode %s, directory %s; want 600, 700", read(".mode"), read(".dirmode"))
		}
		if _, err := os.Stat(read(".path")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("option file %s left behind: %v", read(".path"), err)
		}
		if len(m.GetStreams()) < 100 {
			t.Errorf("backup holds %d streams", len(m.GetStreams()))
		}
	})

	// A partial stream from a double; each failure leaves no manifest.
	var partial bytes.Buffer
	chunk(&partial, xbstream.TypePayload, "ibdata1", 0, bytes.Repeat([]byte("i"), 1000))
	chunk(&partial, xbstream.TypePayload, "db/t.ibd", 0, []byte("t"))
	pf := filepath.Join(t.TempDir(), "partial.xb")
	if err := os.WriteFile(pf, partial.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	before := countManifests(t, repo)

	t.Run("non-zero exit quotes stderr", func(t *testing.T) {
		d := double(t, version, "cat "+pf+"; echo '[00] FATAL ERROR: InnoDB: the redo log was overwritten' >&2; exit 1")
		_, _, err := backup(t, repo, &Engine{MariaBackup: d}, src.DSN)
		if err == nil || !strings.Contains(err.Error(), "exit status 1") || !strings.Contains(err.Error(), "redo log was overwritten") {
			t.Errorf("got %v", err)
		}
		// A tool that ran and failed is no capability failure: no fallback.
		if errors.Is(err, engines.ErrCapability) {
			t.Errorf("got %v", err)
		}
	})

	t.Run("killed child", func(t *testing.T) {
		d := double(t, version, "cat "+pf+"; kill -9 $$")
		_, _, err := backup(t, repo, &Engine{MariaBackup: d}, src.DSN)
		if err == nil || !strings.Contains(err.Error(), "killed by signal") || !strings.Contains(err.Error(), "incomplete") {
			t.Errorf("got %v", err)
		}
	})

	t.Run("exit 0 with a truncated stream", func(t *testing.T) {
		d := double(t, version, "cat "+pf+"; echo 'completed OK!' >&2")
		_, _, err := backup(t, repo, &Engine{MariaBackup: d}, src.DSN)
		if !errors.Is(err, xbstream.ErrCorrupt) || !strings.Contains(err.Error(), "db/t.ibd") {
			t.Errorf("got %v", err)
		}
	})

	t.Run("cancel leaves no child", func(t *testing.T) {
		pids := filepath.Join(t.TempDir(), "pids")
		// The tool and a helper of its own both must die.
		d := double(t, version, fmt.Sprintf("cat %s; sleep 300 & echo $$ $! > %s; wait", pf, pids))
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			testenv.WaitFor(t, "the double to start", testenv.Wait(20*time.Second), func() error {
				_, err := os.Stat(pids)
				return err
			})
			cancel()
		}()
		_, _, err := backupCtx(ctx, t, repo, &Engine{MariaBackup: d}, src.DSN)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v", err)
		}
		b, _ := os.ReadFile(pids)
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			deadline := time.Now().Add(testenv.Wait(5 * time.Second))
			for pidAlive(pid) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if pid == 0 || pidAlive(pid) {
				t.Errorf("process %d outlived the cancelled backup", pid)
			}
		}
	})

	if after := countManifests(t, repo); after != before {
		t.Errorf("%d manifests after the failed backups, %d before", after, before)
	}

	t.Run("databases filter refused", func(t *testing.T) {
		_, err := New().Backup(context.Background(), engines.BackupParams{DSN: src.DSN, Databases: []string{"x"}, Sink: newMemSink()})
		if err == nil || !strings.Contains(err.Error(), "whole instance") {
			t.Errorf("got %v", err)
		}
	})
}

func countManifests(t *testing.T, repo *archive.Repo) int {
	t.Helper()
	ids, err := repo.BackupIDs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(ids)
}

// TestNotThisHost: a server whose datadir is not on this host is refused
// before the tool runs. Stand-in for a remote server: the running server's
// datadir is moved away (it keeps its open files), so @@datadir names a
// path that does not exist here.
func TestNotThisHost(t *testing.T) {
	t.Parallel()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "elsewhere"})
	moved := src.DataDir + ".moved"
	if err := os.Rename(src.DataDir, moved); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Rename(moved, src.DataDir) }) // before the server's own cleanup
	marker := filepath.Join(t.TempDir(), "ran")
	d := double(t, realVersion(t), "touch "+marker)
	_, err := (&Engine{MariaBackup: d}).Backup(context.Background(), engines.BackupParams{DSN: src.DSN, Sink: newMemSink()})
	if err == nil || !strings.Contains(err.Error(), "must run on the server's host") || !strings.Contains(err.Error(), src.DataDir) {
		t.Errorf("got %v", err)
	}
	if _, serr := os.Stat(marker); serr == nil {
		t.Error("the tool ran")
	}
}
