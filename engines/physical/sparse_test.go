package physical

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/archive"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestSparseCopy: with Sparse, all-zero blocks and the blocks outside
// Live are holes, recorded in the stream's metadata and not stored; a
// restore gives the zero blocks back exactly and the left-out blocks as
// zeros, at the file's full size; a reused file keeps its holes; a
// stream whose holes do not add up is refused naming it.
func TestSparseCopy(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run("direct="+strconv.FormatBool(direct), func(t *testing.T) { sparseCopy(t, direct) })
	}
}

func sparseCopy(t *testing.T, direct bool) {
	ctx := context.Background()
	r := newRepo(t)
	const block = 256 << 10
	dir := t.TempDir()
	// zeros.ibd: data, zeros, data, zeros, and a short zero tail.
	z := filepath.Join(dir, "db", "zeros.ibd")
	makeFile(t, z, 5*block+1000, 1)
	zb, _ := os.ReadFile(z)
	clear(zb[block : 2*block])
	clear(zb[3*block:])
	if err := os.WriteFile(z, zb, 0o640); err != nil {
		t.Fatal(err)
	}
	// ib_logfile0: random data throughout; Live keeps bytes 10..20 and
	// the last byte, so blocks 0 and 3 are stored.
	lg := filepath.Join(dir, "ib_logfile0")
	makeFile(t, lg, 4*block, 2)
	lb, _ := os.ReadFile(lg)
	old := time.Now().Add(-time.Hour)
	for _, p := range []string{z, lg} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	live := func(f File, path string) []Extent {
		if f.Path != "ib_logfile0" || path != lg {
			return nil
		}
		return []Extent{{10, 10}, {4*block - 1, 1}}
	}
	later := time.Now().Add(time.Minute) // files changed before it are settled
	run := func() (*v1.Manifest, *CopyResult) {
		t.Helper()
		var res *CopyResult
		m, err := r.WithBackup(ctx, archive.BackupOptions{Engine: "test", Instance: "i"}, func(ctx context.Context, b *archive.Backup) error {
			var err error
			res, err = CopyTree(ctx, CopyParams{Sink: engines.ArchiveSink(b), Roots: []Root{{RootDatadir, dir}}, Block: block, Sparse: true, Direct: direct, Live: live, Reuse: true, TakenAt: later})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return m, res
	}
	m, _ := run()
	refs := map[string]*v1.StreamRef{}
	for _, s := range m.Streams {
		refs[s.Name] = s
	}
	zr, lr := refs["files/datadir/db/zeros.ibd"], refs["files/datadir/ib_logfile0"]
	if got, want := zr.GetMetadata()[metaHoles], holesString([]Extent{{block, block}, {3 * block, 2*block + 1000}}); got != want {
		t.Errorf("zeros.ibd holes %q, want %q", got, want)
	}
	if zr.GetSize() != 2*block || zr.GetMetadata()[metaSize] != strconv.Itoa(len(zb)) {
		t.Errorf("zeros.ibd: stream of %d bytes, size %q; want %d and %d", zr.GetSize(), zr.GetMetadata()[metaSize], 2*block, len(zb))
	}
	if got, want := lr.GetMetadata()[metaHoles], holesString([]Extent{{block, 2 * block}}); got != want || lr.GetSize() != 2*block {
		t.Errorf("ib_logfile0 holes %q (stream %d bytes), want %q (%d)", got, lr.GetSize(), want, 2*block)
	}

	check := func(m *v1.Manifest) {
		t.Helper()
		target := filepath.Join(t.TempDir(), "restored")
		if _, err := Extract(ctx, ExtractParams{Source: engines.ArchiveSource(r, m), Dirs: map[string]string{RootDatadir: target}}); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(filepath.Join(target, "db", "zeros.ibd")); !bytes.Equal(got, zb) {
			t.Errorf("zeros.ibd restored as %d bytes, not the %d of the source", len(got), len(zb))
		}
		want := bytes.Clone(lb)
		clear(want[block : 3*block])
		if got, _ := os.ReadFile(filepath.Join(target, "ib_logfile0")); !bytes.Equal(got, want) {
			t.Errorf("ib_logfile0 restored as %d bytes, want the live blocks and zeros, %d bytes", len(got), len(want))
		}
	}
	check(m)
	m2, res := run()
	if res.Reused != 2 {
		t.Fatalf("second copy reused %d files, want both", res.Reused)
	}
	for _, s := range m2.Streams {
		if p := refs[s.Name]; p != nil && s.GetMetadata()[metaHoles] != p.GetMetadata()[metaHoles] {
			t.Errorf("%s reused with holes %q, was %q", s.Name, s.GetMetadata()[metaHoles], p.GetMetadata()[metaHoles])
		}
	}
	check(m2)

	for _, bad := range []map[string]string{
		{metaHoles: "0+10,5+10", metaSize: "100"}, // overlapping
		{metaHoles: "90+20", metaSize: "100"},     // past the end
		{metaHoles: "0+10", metaSize: "50"},       // 40 bytes of data, stream has 30
		{metaHoles: "0+10", metaSize: "x"},        // no size
		{metaHoles: "10", metaSize: "40"},         // no length
		{metaHoles: "0+0", metaSize: "30"},        // empty hole
		{metaHoles: "20+10,0+10", metaSize: "50"}, // out of order
		{metaHoles: "-5+10", metaSize: "35"},      // negative
		{metaHoles: "0+10", metaSize: "-1"},       // negative size
		{metaHoles: "0+9223372036854775807", metaSize: "40"},
	} {
		md := map[string]string{metaKind: KindFile, metaMode: "640", metaMTime: "0"}
		for k, v := range bad {
			md[k] = v
		}
		if _, ok, err := FileOf(&v1.StreamRef{Name: "files/datadir/x", Size: 30, Metadata: md}); !ok || err == nil {
			t.Errorf("holes %q size %q: ok %v err %v, want refused", bad[metaHoles], bad[metaSize], ok, err)
		}
	}
}

// redoFile writes a synthetic MariaDB 10.8 redo log header: first LSN
// 12288, the given checkpoints (LSN, end LSN; 0,0 leaves a block empty),
// flags to spoil parts of it.
func redoFile(t *testing.T, path string, size int64, ck1, ck2 [2]uint64, spoil string) {
	t.Helper()
	be := binary.BigEndian
	hdr := make([]byte, redoStartOffset)
	be.PutUint32(hdr, redoFormat108)
	if spoil == "format" {
		be.PutUint32(hdr, 0x50687970)
	}
	be.PutUint64(hdr[8:], redoStartOffset)
	copy(hdr[16:], "MariaDB 10.11.19")
	if spoil == "encrypted" {
		be.PutUint32(hdr[48:], 1)
	}
	be.PutUint32(hdr[508:], crc32.Checksum(hdr[:508], crc32c))
	if spoil == "header" {
		hdr[20] ^= 1
	}
	for i, ck := range [][2]uint64{ck1, ck2} {
		if ck[0] == 0 {
			continue
		}
		b := hdr[redoCheckpoint1*(i+1):]
		be.PutUint64(b, ck[0])
		be.PutUint64(b[8:], ck[1])
		be.PutUint32(b[60:], crc32.Checksum(b[:60], crc32c))
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(hdr); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
}

// TestRedoLive: the live window of a synthetic log, before and across the
// wrap, from the later of two checkpoints, and every case that keeps the
// whole file, each saying why.
func TestRedoLive(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, RedoLogName)
	const size = 64 << 20
	const capacity = size - redoStartOffset
	first := uint64(redoStartOffset)

	// Checkpoint at LSN first+5 MiB+100 (the newer of the two), end 3 MiB later.
	ck := first + 5<<20 + 100
	redoFile(t, path, size, [2]uint64{first + 1<<20, first + 1<<20}, [2]uint64{ck, ck + 200}, "")
	w, err := RedoLive(path, ck+3<<20)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(redoStartOffset + 5<<20) // the 4 KiB block holding the checkpoint
	want := []Extent{{0, redoStartOffset}, {off, 100 + 3<<20 + RedoMargin}}
	if w.CheckpointLSN != ck || !equalExtents(w.Live, want) {
		t.Errorf("checkpoint %d, live %v; want %d, %v", w.CheckpointLSN, w.Live, ck, want)
	}

	// Third pass, the window crossing the end of the file.
	ck = first + 2*capacity + capacity - 1<<20
	redoFile(t, path, size, [2]uint64{ck, ck + 10}, [2]uint64{ck - 1<<20, ck - 1<<20}, "")
	if w, err = RedoLive(path, ck+2<<20); err != nil {
		t.Fatal(err)
	}
	tail := int64(2<<20 + RedoMargin - 1<<20)
	want = []Extent{{0, redoStartOffset + tail}, {size - 1<<20, 1 << 20}}
	if !equalExtents(w.Live, want) || w.LiveBytes() != redoStartOffset+2<<20+RedoMargin {
		t.Errorf("wrapped: live %v (%d bytes), want %v", w.Live, w.LiveBytes(), want)
	}

	// A checkpoint block with a bad checksum is skipped, as recovery
	// skips it: the other one counts.
	redoFile(t, path, size, [2]uint64{first + 8<<20, first + 8<<20}, [2]uint64{first + 1<<20, first + 1<<20}, "")
	spoilAt(t, path, redoCheckpoint1+3)
	if w, err = RedoLive(path, first+2<<20); err != nil || w.CheckpointLSN != first+1<<20 {
		t.Errorf("one bad checkpoint: %v, %v; want the other, %d", w, err, first+1<<20)
	}

	for _, c := range []struct {
		name   string
		spoil  string
		ck1    [2]uint64
		end    uint64
		size   int64
		resize bool
	}{
		{name: "format", spoil: "format", ck1: [2]uint64{first, first}, end: first + 100, size: size},
		{name: "encrypted", spoil: "encrypted", ck1: [2]uint64{first, first}, end: first + 100, size: size},
		{name: "header checksum", spoil: "header", ck1: [2]uint64{first, first}, end: first + 100, size: size},
		{name: "no checkpoint", end: first + 100, size: size},
		{name: "end before the checkpoint's", ck1: [2]uint64{first + 1000, first + 2000}, end: first + 1500, size: size},
		{name: "window fills the log", ck1: [2]uint64{first, first}, end: first + capacity - RedoMargin, size: size},
		{name: "tiny file", ck1: [2]uint64{first, first}, end: first, size: redoStartOffset + 100},
		{name: "resize in progress", ck1: [2]uint64{first, first}, end: first + 100, size: size, resize: true},
	} {
		redoFile(t, path, c.size, c.ck1, [2]uint64{}, c.spoil)
		if c.resize {
			if err := os.WriteFile(filepath.Join(dir, "ib_logfile101"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		w, err := RedoLive(path, c.end)
		if !errors.Is(err, ErrRedoUnknown) || w != nil {
			t.Errorf("%s: %v, %v; want ErrRedoUnknown", c.name, w, err)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
	}
}

func spoilAt(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func equalExtents(a, b []Extent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

type manifestOnly struct{ m *v1.Manifest }

func (s manifestOnly) Manifest() *v1.Manifest { return s.m }
func (s manifestOnly) OpenStream(context.Context, string) (io.ReadCloser, error) {
	return nil, errors.New("not read")
}

// TestLayoutVersions: versions 1 and 2 (holes) pass the version check; an
// unknown one is refused before anything else, naming both it knows.
func TestLayoutVersions(t *testing.T) {
	for _, v := range []string{FormatVersion, FormatSparse, "3"} {
		m := &v1.Manifest{BackupId: "b1", Engine: "snapshot", EngineMetadata: map[string]string{MetaFormat: v, MetaPrepare: PrepareCrashRecovery}}
		err := Check(context.Background(), RestoreParams{Source: manifestOnly{m}, Dirs: map[string]string{RootDatadir: t.TempDir()}, Mysqld: "/nonexistent/mysqld"})
		refused := err != nil && strings.Contains(err.Error(), "layout version")
		if refused != (v == "3") {
			t.Errorf("layout version %s: %v", v, err)
		}
	}
}
