package binlog

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/secret"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

func fileRepo(t *testing.T) (*archive.Repo, string) {
	t.Helper()
	return fileRepoWith(t, archive.InitOptions{})
}

// encryptedRepo is a file repository encrypted with a passphrase.
func encryptedRepo(t *testing.T) (*archive.Repo, string) {
	t.Helper()
	return fileRepoWith(t, archive.InitOptions{Encrypt: true, Secret: archive.Secret{Passphrase: secret.NewBytes([]byte("binlog test"))}, ScryptN: 1 << 10})
}

func fileRepoWith(t *testing.T, opts archive.InitOptions) (*archive.Repo, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	st, err := file.Open(dir, file.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := archive.Init(context.Background(), st, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(repo.Close)
	return repo, "file://" + dir
}

// writer commits small transactions on db until stopped.
type writer struct {
	stop    chan struct{}
	done    chan struct{}
	commits atomic.Int64
	errs    atomic.Int64
	lastErr atomic.Value
}

func startWriter(t *testing.T, db *sql.DB, table string) *writer {
	t.Helper()
	if _, err := db.Exec("CREATE TABLE IF NOT EXISTS " + table + " (id BIGINT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(200), n INT)"); err != nil {
		t.Fatal(err)
	}
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			tx, err := db.Begin()
			if err == nil {
				for j := 0; j < 1+i%4; j++ {
					_, err = tx.Exec("INSERT INTO "+table+" (v, n) VALUES (?, ?)", strings.Repeat("x", i%150), i)
					if err != nil {
						break
					}
				}
				if err == nil && i%5 == 0 {
					_, err = tx.Exec("UPDATE "+table+" SET n = n + 1 WHERE id = ?", i/2+1)
				}
				if err == nil {
					err = tx.Commit()
				} else {
					_ = tx.Rollback()
				}
			}
			if err != nil {
				w.errs.Add(1)
				w.lastErr.Store(err.Error())
				time.Sleep(50 * time.Millisecond)
				continue
			}
			w.commits.Add(1)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return w
}

func (w *writer) Stop() { close(w.stop); <-w.done }

// binlogEvents splits a native binlog file into events keyed by their start
// position. skipFDECopy drops a Format_description that is a copy (its
// position is not where it sits).
func binlogEvents(t *testing.T, b []byte, name string) []eventAt {
	t.Helper()
	if len(b) < 4 || string(b[:4]) != binlogMagicBytes {
		t.Fatalf("%s: no binlog magic", name)
	}
	var out []eventAt
	for q := 4; q < len(b); {
		if q+headerLen > len(b) {
			t.Fatalf("%s: %d trailing bytes", name, len(b)-q)
		}
		size := int(binary.LittleEndian.Uint32(b[q+9:]))
		if q+size > len(b) || size < headerLen {
			t.Fatalf("%s: event at offset %d of %d bytes overruns the file", name, q, size)
		}
		e, err := parseHeader(b[q : q+size])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, eventAt{pos: e.start(), raw: e.raw, typ: e.typ})
		q += size
	}
	return out
}

type eventAt struct {
	pos uint64
	raw []byte
	typ byte
}

// serverBinlog reads every binlog file in the server's datadir.
func serverBinlog(t *testing.T, m *testenv.MariaDB) map[string][]byte {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(m.DataDir, "binlog.[0-9]*"))
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range binlogEvents(t, b, f) {
			out[fmt.Sprintf("%s:%012d", filepath.Base(f), e.pos)] = e.raw
		}
	}
	return out
}

// archivedBinlog reads every archived event, failing on a duplicate.
func archivedBinlog(t *testing.T, repo *archive.Repo, instance string) (map[string][]byte, *Archive) {
	t.Helper()
	a, err := OpenArchive(context.Background(), repo, instance)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, s := range a.Segments() {
		rc, err := a.Open(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		_ = rc.Close()
		evs := binlogEvents(t, b, s.Name)
		for i, e := range evs {
			if i == 0 && s.StartPos != 4 {
				continue // the copy of the file's Format_description
			}
			k := fmt.Sprintf("%s:%012d", s.File, e.pos)
			if _, dup := out[k]; dup {
				t.Fatalf("event %s archived twice (segment %s)", k, s.Name)
			}
			out[k] = e.raw
		}
	}
	return out, a
}

// compareBinlog asserts the archive holds the server's binlog event for event.
func compareBinlog(t *testing.T, server, archived map[string][]byte) {
	t.Helper()
	var missing, extra, differ []string
	for k, v := range server {
		a, ok := archived[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case string(a) != string(v) && !sameFDE(a, v):
			differ = append(differ, k)
		}
	}
	for k := range archived {
		if _, ok := server[k]; !ok {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing)+len(extra)+len(differ) > 0 {
		t.Fatalf("archive differs from the server's binlog (%d events): %d missing %v, %d extra %v, %d differ %v",
			len(server), len(missing), head(missing), len(extra), head(extra), len(differ), head(differ))
	}
	t.Logf("archive equals the server's binlog: %d events", len(server))
}

// sameFDE accepts the Format_description of the server's active binlog file:
// on disk it carries LOG_EVENT_BINLOG_IN_USE_F (0x1), which the server
// clears (and re-checksums) when it sends the event.
func sameFDE(a, b []byte) bool {
	if len(a) != len(b) || len(a) < headerLen+4 || a[4] != evFormatDesc {
		return false
	}
	x, y := append([]byte(nil), a...), append([]byte(nil), b...)
	x[17] &^= 1
	y[17] &^= 1
	n := len(x) - 4
	return string(x[:n]) == string(y[:n])
}

func head(s []string) []string { return s[:min(len(s), 5)] }

// waitCaughtUp waits until the archive's GTID position is the server's.
func waitCaughtUp(t *testing.T, repo *archive.Repo, instance string, db *sql.DB) {
	t.Helper()
	var want string
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&want); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "archive at GTID "+want, 60*time.Second, func() error {
		a, err := OpenArchive(context.Background(), repo, instance)
		if err != nil {
			return err
		}
		if got := a.Status().GTIDPosition; got != want {
			return fmt.Errorf("archive at %q", got)
		}
		return nil
	})
}

// mariadbBinlogReads runs mariadb-binlog over files and fails on an error.
func mariadbBinlogReads(t *testing.T, files ...string) string {
	t.Helper()
	bin := testenv.RequireBinary(t, "mariadb-binlog", testenv.MariaDBInstallHint)
	out, err := exec.Command(bin, append([]string{"--verify-binlog-checksum"}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mariadb-binlog %v: %v\n%s", files, err, tailStr(string(out), 2000))
	}
	return string(out)
}

func tailStr(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// runStream runs Stream in a goroutine; the returned func stops it and
// returns its error.
func runStream(t *testing.T, p StreamParams) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	errc := make(chan error, 1)
	go func() { errc <- Stream(ctx, p) }()
	var err error
	stop := func() error {
		once.Do(func() { cancel(); err = <-errc })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func objOpts() archive.ObjectOptions { return archive.ObjectOptions{} }
