package physical

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

func newRepo(t *testing.T) *archive.Repo {
	t.Helper()
	st, err := file.Open(filepath.Join(t.TempDir(), "repo"), file.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := archive.Init(context.Background(), st, archive.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); _ = st.Close() })
	return r
}

func makeFile(t *testing.T, path string, size int, seed uint64) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

// tree builds a datadir-like tree: big and small files, nested and empty
// directories, a symlink, a socket (left out) and a redo root elsewhere.
func tree(t *testing.T) (datadir, redo string) {
	t.Helper()
	base := t.TempDir()
	datadir, redo = filepath.Join(base, "data"), filepath.Join(base, "redo")
	makeFile(t, filepath.Join(datadir, "ibdata1"), 3<<20+5, 1)
	makeFile(t, filepath.Join(datadir, "db1", "t1.ibd"), 2<<20, 2)
	makeFile(t, filepath.Join(datadir, "db1", "t1.frm"), 900, 3)
	makeFile(t, filepath.Join(datadir, "db2", "empty.MYD"), 0, 4)
	makeFile(t, filepath.Join(redo, "ib_logfile0"), 1<<20, 5)
	if err := os.MkdirAll(filepath.Join(datadir, "emptydb"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../elsewhere/t9.ibd", filepath.Join(datadir, "db1", "t9.ibd")); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(datadir, "mysqld.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	old := time.Date(2020, 1, 2, 3, 4, 5, 600, time.UTC)
	if err := os.Chtimes(filepath.Join(datadir, "db1", "t1.frm"), old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(datadir, "emptydb"), old, old); err != nil {
		t.Fatal(err)
	}
	return datadir, redo
}

func backup(t *testing.T, r *archive.Repo, roots []Root, skip func(string, string, fs.DirEntry) bool) *v1.Manifest {
	t.Helper()
	m, err := r.WithBackup(context.Background(), archive.BackupOptions{Engine: "test"}, func(ctx context.Context, b *archive.Backup) error {
		_, err := CopyTree(ctx, CopyParams{Sink: engines.ArchiveSink(b), Roots: roots, Skip: skip, Parallel: 3, Block: 256 << 10})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type entry struct {
	kind    string
	mode    fs.FileMode
	mtime   time.Time
	content string
}

func snapshotTree(t *testing.T, dir string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e := entry{mode: info.Mode(), mtime: info.ModTime()}
		switch {
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.kind, e.content = "file", string(b)
		case info.IsDir():
			e.kind = "dir"
		case info.Mode()&fs.ModeSymlink != 0:
			tgt, _ := os.Readlink(p)
			e.kind, e.content = "symlink", tgt
			e.mtime = time.Time{}
		default:
			return nil
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func compareTrees(t *testing.T, want, got map[string]entry) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("%s: missing after restore", k)
		case g.kind != w.kind || g.mode != w.mode || g.content != w.content:
			t.Errorf("%s: %s %v (%d bytes) restored as %s %v (%d bytes)", k, w.kind, w.mode, len(w.content), g.kind, g.mode, len(g.content))
		case !g.mtime.Equal(w.mtime):
			t.Errorf("%s: modified %v, restored %v", k, w.mtime, g.mtime)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: restored but not in the source", k)
		}
	}
}

// TestCopyExtractRoundTrip: a tree with two roots comes back exactly
// (contents, modes, times, symlinks, empty dirs), sockets are left out, the
// marker is gone at the end, and the redo root lands where it is sent.
func TestCopyExtractRoundTrip(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	datadir, redo := tree(t)
	want := snapshotTree(t, datadir)
	wantRedo := snapshotTree(t, redo)
	delete(want, "mysqld.sock")
	m := backup(t, r, []Root{{RootDatadir, datadir}, {RootRedo, redo}}, nil)
	for _, s := range m.Streams {
		if strings.HasSuffix(s.Name, "ibdata1") && s.Chunks[0].Size != 256<<10 {
			t.Errorf("ibdata1 cut into %d-byte chunks, want 256 KiB blocks", s.Chunks[0].Size)
		}
		if strings.Contains(s.Name, "sock") {
			t.Errorf("socket stored: %s", s.Name)
		}
	}

	target := filepath.Join(t.TempDir(), "new", "data")
	targetRedo := filepath.Join(t.TempDir(), "redo")
	res, err := Extract(ctx, ExtractParams{Source: engines.ArchiveSource(r, m), Dirs: map[string]string{RootDatadir: target, RootRedo: targetRedo}, Parallel: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 5 {
		t.Errorf("%d files written, want 5", res.Files)
	}
	compareTrees(t, want, snapshotTree(t, target))
	compareTrees(t, wantRedo, snapshotTree(t, targetRedo))

	// Without a redo directory, redo files go into the datadir.
	into := filepath.Join(t.TempDir(), "one")
	if _, err := Extract(ctx, ExtractParams{Source: engines.ArchiveSource(r, m), Dirs: map[string]string{RootDatadir: into}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(into, "ib_logfile0")); err != nil {
		t.Errorf("redo not restored into the datadir: %v", err)
	}
	if Unfinished(into) {
		t.Error("marker left after a complete restore")
	}
}

// TestExtractRefuses: a non-empty target, a target without room, a
// damaged stream: each a clear error; the half-written one keeps its
// marker and is then refused as unfinished.
func TestExtractRefuses(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	datadir, _ := tree(t)
	m := backup(t, r, []Root{{RootDatadir, datadir}}, func(_, rel string, _ fs.DirEntry) bool { return rel == "mysqld.sock" })
	src := engines.ArchiveSource(r, m)

	full := t.TempDir()
	makeFile(t, filepath.Join(full, "ibdata1"), 10, 9)
	_, err := Extract(ctx, ExtractParams{Source: src, Dirs: map[string]string{RootDatadir: full}})
	if !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), "ibdata1") {
		t.Errorf("non-empty target: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(full, "ibdata1")); len(b) != 10 {
		t.Error("a refused restore changed the target")
	}

	small := testenv.Tmpfs(t, "16m")
	_, err = Extract(ctx, ExtractParams{Source: src, Dirs: map[string]string{RootDatadir: filepath.Join(small, "data")}})
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "MiB free") {
		t.Errorf("small target: %v", err)
	}
	if ents, _ := os.ReadDir(small); len(ents) != 0 {
		t.Errorf("a restore refused for space wrote %d entries", len(ents))
	}

	// A stream that breaks part way fails the restore half way.
	bad := &brokenSource{Source: src, broken: "t1.ibd"}
	half := filepath.Join(t.TempDir(), "half")
	if _, err := Extract(ctx, ExtractParams{Source: bad, Dirs: map[string]string{RootDatadir: half}}); err == nil || !strings.Contains(err.Error(), "t1.ibd") {
		t.Fatalf("damaged stream: %v, want an error naming it", err)
	}
	if !Unfinished(half) {
		t.Fatal("a failed restore removed its marker")
	}
	if _, err := Extract(ctx, ExtractParams{Source: src, Dirs: map[string]string{RootDatadir: half}}); !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), "unfinished restore") {
		t.Errorf("restore into a half-restored dir: %v", err)
	}
}

// brokenSource fails the read of one stream part way.
type brokenSource struct {
	engines.Source
	broken string
}

func (b *brokenSource) OpenStream(ctx context.Context, name string) (io.ReadCloser, error) {
	rc, err := b.Source.OpenStream(ctx, name)
	if err != nil || !strings.HasSuffix(name, b.broken) {
		return rc, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(io.LimitReader(rc, 300<<10), iotest.ErrReader(errors.New("chunk 1 is damaged"))), rc}, nil
}

func TestFileOfRefusesEscapes(t *testing.T) {
	for _, name := range []string{"files/datadir/../etc/passwd", "files/datadir//x", "files/datadir/", "files/nope/x", "files/datadir/a/../../b"} {
		ref := &v1.StreamRef{Name: name, Metadata: map[string]string{"kind": "file", "mode": "640", "mtime": "0"}}
		if _, ok, err := FileOf(ref); !ok || err == nil {
			t.Errorf("%s: ok %v err %v, want refused", name, ok, err)
		}
	}
	if _, ok, err := FileOf(&v1.StreamRef{Name: "schema/x"}); ok || err != nil {
		t.Errorf("non-file stream: %v %v", ok, err)
	}
}

// TestCopyReusesUnchangedFiles: a second copy takes over, unread, the
// files whose size, inode and times are those of the previous backup's
// copy, reads the changed one, and restores exactly the tree as it is now;
// files changed too close to the first copy are read again.
func TestCopyReusesUnchangedFiles(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	datadir, _ := tree(t)
	skip := func(_, rel string, _ fs.DirEntry) bool { return rel == "mysqld.sock" }
	copyAt := func(taken time.Time) (*v1.Manifest, *CopyResult) {
		t.Helper()
		var res *CopyResult
		m, err := r.WithBackup(ctx, archive.BackupOptions{Engine: "test", Instance: "i1"}, func(ctx context.Context, b *archive.Backup) error {
			var err error
			res, err = CopyTree(ctx, CopyParams{Sink: engines.ArchiveSink(b), Roots: []Root{{RootDatadir, datadir}}, Skip: skip, Block: 256 << 10, Reuse: true, TakenAt: taken})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return m, res
	}
	// Files changed 2 s or more before the snapshot are trusted next time.
	later := time.Now().Add(time.Minute)
	if _, res := copyAt(later); res.Reused != 0 {
		t.Fatalf("first copy reused %d files", res.Reused)
	}
	makeFile(t, filepath.Join(datadir, "db1", "t1.ibd"), 2<<20, 99) // same size, new content
	m2, res := copyAt(later)
	if res.Reused != 3 || res.Files != 4 || m2.ParentBackupId == "" {
		t.Fatalf("second copy reused %d of %d files (parent %q), want the 3 unchanged", res.Reused, res.Files, m2.ParentBackupId)
	}
	want := snapshotTree(t, datadir)
	delete(want, "mysqld.sock")
	target := filepath.Join(t.TempDir(), "restored")
	if _, err := Extract(ctx, ExtractParams{Source: engines.ArchiveSource(r, m2), Dirs: map[string]string{RootDatadir: target}}); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, want, snapshotTree(t, target))

	// Copied right after its files changed: nothing is trusted next time.
	if _, res := copyAt(time.Now()); res.Reused != 4 {
		t.Fatalf("third copy reused %d, want all 4 (the second recorded them as settled)", res.Reused)
	}
	if _, res := copyAt(time.Now()); res.Reused != 0 {
		t.Fatalf("fourth copy reused %d files the third marked racy", res.Reused)
	}
}
