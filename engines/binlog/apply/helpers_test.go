package apply

import (
	"bufio"
	"context"
	"database/sql"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// binlogFiles returns a server's binlog files in order (binlog.index), as
// the archive would hand them over.
func binlogFiles(t *testing.T, m *testenv.MariaDB) []File {
	t.Helper()
	f, err := os.Open(filepath.Join(m.DataDir, "binlog.index"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var files []File
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := filepath.Base(strings.TrimSpace(sc.Text()))
		if name == "" {
			continue
		}
		files = append(files, diskFile(filepath.Join(m.DataDir, name)))
	}
	return files
}

// diskFile is a File on disk, copied first so that the server can go on
// writing (or be stopped) while a test uses it.
func diskFile(path string) File {
	return File{Name: filepath.Base(path), Open: func(context.Context) (io.ReadCloser, error) { return os.Open(path) }}
}

// snapshotFiles copies files into a directory of their own (optionally
// renaming them with a prefix to keep two servers' same-named files apart
// on disk; the File keeps the original name).
func snapshotFiles(t *testing.T, files []File, prefix string) []File {
	t.Helper()
	dir := t.TempDir()
	out := make([]File, len(files))
	for i, f := range files {
		rc, err := f.Open(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, prefix+f.Name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		name := f.Name
		out[i] = File{Name: name, Open: func(context.Context) (io.ReadCloser, error) { return os.Open(path) }}
	}
	return out
}

// point is a recorded restore point of a source.
type point struct {
	name string
	gtid string
	file string
	pos  uint64
	time time.Time
	sums map[string]testenv.TableSum
}

func record(t *testing.T, name string, db *sql.DB) point {
	t.Helper()
	p := point{name: name}
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&p.gtid); err != nil {
		t.Fatal(err)
	}
	var a, b, c any
	if err := db.QueryRow("SHOW MASTER STATUS").Scan(&p.file, &p.pos, &a, &b); err != nil {
		_ = c
		t.Fatal(err)
	}
	p.sums = testenv.Checksums(t, db)
	return p
}

func apply(t *testing.T, p Params) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(2*time.Minute))
	defer cancel()
	res, err := Apply(ctx, p)
	if err != nil {
		t.Fatalf("apply to %s: %v", p.Stop, err)
	}
	return res
}

func sumsEqual(t *testing.T, what string, got, want map[string]testenv.TableSum) {
	t.Helper()
	for n, w := range want {
		if g, ok := got[n]; !ok {
			t.Errorf("%s: table %s missing (want %d rows)", what, n, w.Rows)
		} else if g != w {
			t.Errorf("%s: table %s has %d rows, checksum %d; want %d rows, checksum %d", what, n, g.Rows, g.Checksum, w.Rows, w.Checksum)
		}
	}
	for n, g := range got {
		if _, ok := want[n]; !ok {
			t.Errorf("%s: table %s should not exist (has %d rows)", what, n, g.Rows)
		}
	}
}
