package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/dumpgen"
	"github.com/tidemark-backup/tidemark/internal/secret"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

var tmpl = sync.OnceValue(func() []byte { return dumpgen.Template(42) })

func testSecret() Secret {
	return Secret{Passphrase: secret.NewBytes([]byte("correct horse battery staple"))}
}

func initRepo(t *testing.T, st storage.Storage, encrypt bool) *Repo {
	t.Helper()
	opts := InitOptions{}
	if encrypt {
		opts.Encrypt, opts.Secret, opts.ScryptN = true, testSecret(), 1<<10
	}
	r, err := Init(context.Background(), st, opts)
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// writeStreams writes one backup with the given streams of dump-like data
// and returns the manifest and each stream's SHA-256.
func writeStreams(t *testing.T, r *Repo, sizes map[string]int64, pass uint64) (id string, sums map[string][32]byte) {
	t.Helper()
	sums = map[string][32]byte{}
	var mu sync.Mutex
	m, err := r.WithBackup(context.Background(), BackupOptions{Engine: "test", Instance: "db1"}, func(ctx context.Context, b *Backup) error {
		var wg sync.WaitGroup
		errs := make(chan error, len(sizes))
		for name, size := range sizes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w, err := b.Stream(name, nil)
				if err != nil {
					errs <- err
					return
				}
				h := sha256.New()
				if _, err := io.Copy(io.MultiWriter(w, h), dumpgen.NewReader(tmpl(), size, pass)); err != nil {
					errs <- err
					return
				}
				if err := w.Close(); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				sums[name] = [32]byte(h.Sum(nil))
				mu.Unlock()
			}()
		}
		wg.Wait()
		close(errs)
		return <-errs
	})
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	return m.BackupId, sums
}

func readStreamSum(t *testing.T, r *Repo, id, name string) ([32]byte, error) {
	t.Helper()
	m, err := r.LoadManifest(context.Background(), id)
	if err != nil {
		return [32]byte{}, err
	}
	rc, err := r.OpenStream(context.Background(), m, name, ReadOptions{})
	if err != nil {
		return [32]byte{}, err
	}
	defer func() { _ = rc.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return [32]byte{}, err
	}
	return [32]byte(h.Sum(nil)), nil
}

func roundTripSize() int64 {
	if testing.Short() {
		return 24 << 20
	}
	return 192 << 20
}

func testRoundTrip(t *testing.T, st storage.Storage, encrypt bool) {
	r := initRepo(t, st, encrypt)
	total := roundTripSize()
	sizes := map[string]int64{"schema": 12345, "db.big": total * 3 / 4, "db.small": total / 4, "empty": 0}
	id, sums := writeStreams(t, r, sizes, 0)
	m, err := r.LoadManifest(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if m.LogicalBytes != uint64(total+12345) {
		t.Errorf("manifest logical bytes %d, want %d", m.LogicalBytes, total+12345)
	}
	if m.StoredBytes == 0 || m.StoredBytes > m.LogicalBytes/2 {
		t.Errorf("stored %d of %d logical: compression did not happen", m.StoredBytes, m.LogicalBytes)
	}
	for name, want := range sums {
		got, err := readStreamSum(t, r, id, name)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		if got != want {
			t.Errorf("stream %s: read back differs from what was written", name)
		}
	}
	rep, err := r.Verify(context.Background(), VerifyOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("verify of a healthy repo: %+v %v", rep, err)
	}
	// Reopen from the store alone: what another process would see.
	r2, err := Open(context.Background(), st, testSecretIf(encrypt))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	got, err := readStreamSum(t, r2, id, "db.small")
	if err != nil || got != sums["db.small"] {
		t.Fatalf("reopened repo read: %v", err)
	}
}

func testSecretIf(encrypt bool) Secret {
	if encrypt {
		return testSecret()
	}
	return Secret{}
}

func TestRoundTripFile(t *testing.T) {
	for _, enc := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypt=%v", enc), func(t *testing.T) {
			t.Parallel()
			testRoundTrip(t, openFileStore(t, t.TempDir()), enc)
		})
	}
}

func TestRoundTripS3(t *testing.T) {
	st := openS3Store(t)
	for _, enc := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypt=%v", enc), func(t *testing.T) {
			testRoundTrip(t, subStore(t, st, fmt.Sprintf("rt-%v", enc)), enc)
		})
	}
}

func TestDedupSecondBackupStoresAlmostNothing(t *testing.T) {
	st := openFileStore(t, t.TempDir())
	r := initRepo(t, st, true)
	sizes := map[string]int64{"t1": 40 << 20, "t2": 9 << 20}
	writeStreams(t, r, sizes, 7)
	id2, _ := writeStreams(t, r, sizes, 7)
	m2, err := r.LoadManifest(context.Background(), id2)
	if err != nil {
		t.Fatal(err)
	}
	if m2.NewStoredBytes != 0 {
		t.Errorf("second identical backup uploaded %d bytes, want 0", m2.NewStoredBytes)
	}
	// A fresh process (new index from a listing) must dedup too.
	r2, err := Open(context.Background(), st, testSecret())
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	id3, _ := writeStreams(t, r2, sizes, 7)
	m3, _ := r2.LoadManifest(context.Background(), id3)
	if m3.NewStoredBytes != 0 {
		t.Errorf("third backup from a reopened repo uploaded %d bytes", m3.NewStoredBytes)
	}
	// One changed stream uploads only its own chunks.
	id4, _ := writeStreams(t, r2, map[string]int64{"t1": 40 << 20, "t2": 9 << 20}, 8)
	m4, _ := r2.LoadManifest(context.Background(), id4)
	if m4.NewStoredBytes == 0 {
		t.Error("changed data uploaded nothing")
	}
}

func TestTwoWritersAtOnce(t *testing.T) {
	st := openFileStore(t, t.TempDir())
	r1 := initRepo(t, st, false)
	r2, err := Open(context.Background(), st, Secret{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	var wg sync.WaitGroup
	ids := make([]string, 2)
	sums := make([]map[string][32]byte, 2)
	for i, r := range []*Repo{r1, r2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Same pass: both upload the same chunks at the same time.
			ids[i], sums[i] = writeStreams(t, r, map[string]int64{"x": 30 << 20}, 3)
		}()
	}
	wg.Wait()
	if ids[0] == ids[1] {
		t.Fatal("two backups got one id")
	}
	for i := range ids {
		got, err := readStreamSum(t, r1, ids[i], "x")
		if err != nil || got != sums[i]["x"] {
			t.Fatalf("backup %s: %v", ids[i], err)
		}
	}
}

func TestWrongKeyAndUnknownFormat(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := openFileStore(t, dir)
	initRepo(t, st, true)
	if _, err := Open(ctx, st, Secret{Passphrase: secret.NewBytes([]byte("nope"))}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if _, err := Open(ctx, st, Secret{}); !errors.Is(err, ErrNeedKey) {
		t.Fatalf("no key: %v", err)
	}
	if _, err := Open(ctx, st, Secret{KeyFile: secret.NewBytes(bytes.Repeat([]byte("k"), 32))}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("key file for passphrase repo: %v", err)
	}
	if _, err := Init(ctx, st, InitOptions{}); !errors.Is(err, ErrRepoExists) {
		t.Fatalf("init over a repo: %v", err)
	}
	cfg, _ := os.ReadFile(filepath.Join(dir, "config"))
	cfg = bytes.Replace(cfg, []byte(`"format_version": 2`), []byte(`"format_version": 99`), 1)
	if err := os.WriteFile(filepath.Join(dir, "config"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, st, testSecret())
	if !errors.Is(err, ErrBadFormat) || !strings.Contains(err.Error(), "99") {
		t.Fatalf("unknown format: %v", err)
	}
	empty := openFileStore(t, t.TempDir())
	if _, err := Open(ctx, empty, Secret{}); !errors.Is(err, ErrNoRepository) {
		t.Fatalf("no repo: %v", err)
	}
}

func TestDamageCaughtByVerifyAndRead(t *testing.T) {
	for _, damage := range []string{"flip", "delete", "truncate"} {
		t.Run(damage, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			st := openFileStore(t, dir)
			r := initRepo(t, st, false)
			idA, _ := writeStreams(t, r, map[string]int64{"s": 20 << 20}, 1)
			idB, _ := writeStreams(t, r, map[string]int64{"s": 20 << 20, "other": 1 << 20}, 1)
			m, _ := r.LoadManifest(ctx, idA)
			victim := ChunkID(m.Streams[0].Chunks[1].Id)
			path := filepath.Join(dir, filepath.FromSlash(chunkKey(victim)))
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			switch damage {
			case "flip":
				data[len(data)/2] ^= 0x40
				err = os.WriteFile(path, data, 0o600)
			case "delete":
				err = os.Remove(path)
			case "truncate":
				err = os.WriteFile(path, data[:len(data)-10], 0o600)
			}
			if err != nil {
				t.Fatal(err)
			}
			rep, err := r.Verify(ctx, VerifyOptions{ReadData: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) != 1 || rep.Problems[0].Chunk != victim.String() {
				t.Fatalf("verify found %+v, want chunk %s", rep.Problems, victim)
			}
			if got := strings.Join(rep.Problems[0].Backups, ","); got != idA+","+idB && got != idB+","+idA {
				t.Errorf("damaged chunk attributed to %q, want both backups", got)
			}
			_, err = readStreamSum(t, r, idA, "s")
			var de *DamageError
			if !errors.As(err, &de) || de.Chunk != victim || de.Backup != idA || de.Stream != "s" {
				t.Fatalf("read of damaged stream: %v", err)
			}
			for _, want := range []string{idA, "stream s", victim.String()} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %s", err, want)
				}
			}
			// The other stream of B is unaffected.
			if _, err := readStreamSum(t, r, idB, "other"); err != nil {
				t.Errorf("undamaged stream: %v", err)
			}
		})
	}
}

// TestKilledWriterLeavesNoManifest runs a backup in a child process, kills it
// with SIGKILL mid-upload, and checks that no backup appears and gc removes
// what it uploaded.
func TestKilledWriterLeavesNoManifest(t *testing.T) {
	if os.Getenv("TIDEMARK_ARCHIVE_CHILD") != "" {
		childWriter(os.Getenv("TIDEMARK_ARCHIVE_CHILD"))
		return
	}
	ctx := context.Background()
	dir := t.TempDir()
	st := openFileStore(t, dir)
	r := initRepo(t, st, false)
	keepID, _ := writeStreams(t, r, map[string]int64{"keep": 9 << 20}, 5)

	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledWriterLeavesNoManifest$")
	cmd.Env = append(os.Environ(), "TIDEMARK_ARCHIVE_CHILD="+dir)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The child prints a line once it has uploaded some chunks.
	buf := make([]byte, 64)
	if _, err := stdout.Read(buf); err != nil {
		t.Fatalf("child never reported progress: %v", err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	ids, err := r.BackupIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0] != keepID {
		t.Fatalf("after the kill the repo lists %v, want only %s", ids, keepID)
	}
	before, _ := r.Stats(ctx)
	// The dead writer's marker is judged by its age alone: once stale, the
	// first run fences it and condemns what it uploaded, the second
	// deletes that.
	if err := r.SetLockTiming(50*time.Millisecond, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	rep, err := r.GC(ctx, GCOptions{Grace: 0})
	if err != nil {
		t.Fatalf("gc after a killed writer: %v", err)
	}
	if len(rep.BackupsFenced) != 1 || rep.ChunksCondemned == 0 || rep.ChunksDeleted != 0 {
		t.Fatalf("first gc: %+v, want the dead writer fenced and its chunks condemned, none deleted", rep)
	}
	rep, err = r.GC(ctx, GCOptions{Grace: 0})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ChunksDeleted == 0 {
		t.Fatalf("second gc deleted nothing; chunks before: %d; %+v", before.Chunks, rep)
	}
	if ids, _ := r.BackupIDs(ctx); len(ids) != 1 || ids[0] != keepID {
		t.Fatalf("after gc the repo lists %v (a tombstone is no backup), want only %s", ids, keepID)
	}
	after, _ := r.Stats(ctx)
	m, _ := r.LoadManifest(ctx, keepID)
	if after.Chunks != len(m.Streams[0].Chunks) {
		t.Errorf("after gc %d chunks remain, want the %d of the kept backup", after.Chunks, len(m.Streams[0].Chunks))
	}
	if vr, err := r.Verify(ctx, VerifyOptions{ReadData: true}); err != nil || !vr.OK() {
		t.Fatalf("verify after gc: %+v %v", vr, err)
	}
}

func childWriter(dir string) {
	st := openFileStoreNoT(dir)
	r, err := Open(context.Background(), st, Secret{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	reported := false
	_, err = r.WithBackup(context.Background(), BackupOptions{Engine: "test", Progress: func(p Progress) {
		if p.ChunksNew >= 3 && !reported {
			reported = true
			fmt.Println("uploading")
		}
	}}, func(ctx context.Context, b *Backup) error {
		w, err := b.Stream("big", nil)
		if err != nil {
			return err
		}
		// Slow enough that the parent kills us long before the end.
		for i := uint64(0); ; i++ {
			if _, err := io.Copy(w, dumpgen.NewReader(tmpl(), 8<<20, 100+i)); err != nil {
				return err
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	fmt.Fprintln(os.Stderr, "child backup ended:", err)
	os.Exit(4)
}

func putOrphan(t *testing.T, r *Repo, plain string) ChunkID {
	t.Helper()
	id := r.codec.id([]byte(plain))
	blob, _, _ := r.codec.encode(nil, nil, id.String(), []byte(plain), "zstd", 1)
	if err := r.store.Put(context.Background(), chunkKey(id), bytes.NewReader(blob), int64(len(blob)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	return id
}

// An unreferenced chunk is protected by grace, then condemned by one run
// and deleted by the next; a dry run writes nothing. A backup that runs all
// along neither blocks gc nor is blocked: the record waits for its
// acknowledgement, then is swept while it still runs.
func TestGCTwoPhaseWithBackupRunning(t *testing.T) {
	ctx := context.Background()
	st := openFileStore(t, t.TempDir())
	r := initRepo(t, st, false)
	if err := r.SetLockTiming(50*time.Millisecond, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	writeStreams(t, r, map[string]int64{"a": 2 << 20}, 1)
	id := putOrphan(t, r, "orphan chunk plaintext")
	rep, err := r.GC(ctx, GCOptions{Grace: time.Hour})
	if err != nil || rep.ChunksCondemned != 0 || rep.ChunksInGrace != 1 {
		t.Fatalf("gc with grace: %+v %v", rep, err)
	}
	rep, err = r.GC(ctx, GCOptions{Grace: 0, DryRun: true})
	if err != nil || rep.ChunksCondemned != 1 || len(rep.Records) != 1 || rep.Records[0].State != "new" {
		t.Fatalf("dry run: %+v %v", rep, err)
	}
	if n := countKeys(t, st, gcPrefix); n != 0 {
		t.Fatalf("dry run wrote %d objects under gc/", n)
	}

	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	go func() {
		_, err := r.WithBackup(ctx, BackupOptions{Engine: "test", ID: "running"}, func(ctx context.Context, b *Backup) error {
			close(started)
			<-release
			w, _ := b.Stream("s", nil)
			if _, err := w.Write([]byte("orphan chunk plaintext")); err != nil {
				return err
			}
			return w.Close()
		})
		done <- err
	}()
	<-started
	rep, err = r.GC(ctx, GCOptions{Grace: 0})
	if err != nil || rep.ChunksCondemned != 1 || rep.ChunksDeleted != 0 {
		t.Fatalf("gc during a backup: %+v %v", rep, err)
	}
	if rec := rep.Records[0]; rec.State != "new" || len(rec.WaitingFor) != 1 || rec.WaitingFor[0] != "running" {
		t.Fatalf("new record %+v: want it to wait for backup running", rec)
	}
	if _, err := st.Stat(ctx, chunkKey(id)); err != nil {
		t.Fatalf("condemned chunk deleted by the run that condemned it: %v", err)
	}
	// The backup acknowledges within its refresh interval; then the next
	// run deletes, the backup still running.
	waitFor(t, "the backup to acknowledge the record", func() bool {
		rep, err := r.GC(ctx, GCOptions{DryRun: true})
		return err == nil && len(rep.Records) == 1 && rep.Records[0].State == "deletable"
	})
	rep, err = r.GC(ctx, GCOptions{Grace: 0})
	if err != nil || rep.ChunksDeleted != 1 || rep.Records[0].State != "deleted" {
		t.Fatalf("gc after acknowledgement: %+v %v", rep, err)
	}
	if _, err := st.Stat(ctx, chunkKey(id)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("condemned chunk still there: %v", err)
	}
	// The backup now writes that very chunk: it is stored again.
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if vr, err := r.Verify(ctx, VerifyOptions{ReadData: true}); err != nil || !vr.OK() || vr.Backups != 2 {
		t.Fatalf("verify: %+v %v", vr, err)
	}

	// A gc paused in its middle while a whole backup runs: both complete.
	reached, resume := make(chan struct{}), make(chan struct{})
	gcTestHook = func(step string) {
		if step == "references-read" {
			close(reached)
			<-resume
		}
	}
	t.Cleanup(func() { gcTestHook = nil })
	gcDone := make(chan error)
	go func() { _, err := r.GC(ctx, GCOptions{}); gcDone <- err }()
	<-reached
	writeStreams(t, r, map[string]int64{"b": 3 << 20}, 9)
	close(resume)
	if err := <-gcDone; err != nil {
		t.Fatalf("gc that ran across a backup: %v", err)
	}
	gcTestHook = nil
}

func countKeys(t *testing.T, st storage.Storage, prefix string) int {
	t.Helper()
	n := 0
	if err := st.List(context.Background(), prefix, func(storage.ObjectInfo) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(testenv.Wait(20 * time.Second))
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestFailedBackupLeavesNoManifest(t *testing.T) {
	ctx := context.Background()
	st := openFileStore(t, t.TempDir())
	r := initRepo(t, st, false)
	_, err := r.WithBackup(ctx, BackupOptions{Engine: "test"}, func(ctx context.Context, b *Backup) error {
		w, _ := b.Stream("s", nil)
		_, _ = io.Copy(w, dumpgen.NewReader(tmpl(), 3<<20, 0))
		return errors.New("engine lost its connection")
	})
	if err == nil || !strings.Contains(err.Error(), "engine lost its connection") {
		t.Fatalf("failed backup returned %v", err)
	}
	_, err = r.WithBackup(ctx, BackupOptions{Engine: "test"}, func(ctx context.Context, b *Backup) error {
		w, _ := b.Stream("never-closed", nil)
		_, err := w.Write([]byte("x"))
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "never-closed") {
		t.Fatalf("unclosed stream: %v", err)
	}
	ids, _ := r.BackupIDs(ctx)
	if len(ids) != 0 {
		t.Fatalf("failed backups listed: %v", ids)
	}
}

// TestAvailableBufferInPlace appends to the room a stream offers and writes
// it back, mostly within the room and sometimes past the chunk's end (so
// append moved it and Write must copy): the room always continues where
// the last write ended, and the stream reads back exactly.
func TestAvailableBufferInPlace(t *testing.T) {
	r := initRepo(t, openFileStore(t, t.TempDir()), false)
	data := make([]byte, 0, 3*DefaultChunkSize)
	for len(data) < cap(data)-100 {
		data = fmt.Appendf(data, "%d\trow %d with some text\n", len(data), len(data)%977)
	}
	var inPlace, moved int
	m, err := r.WithBackup(context.Background(), BackupOptions{Engine: "test", Instance: "db1"}, func(ctx context.Context, b *Backup) error {
		w, err := b.Stream("s", nil)
		if err != nil {
			return err
		}
		rest := data
		var next *byte // where the room should start after an in-place write
		for step := 0; len(rest) > 0; step++ {
			buf := w.AvailableBuffer()
			room := cap(buf)
			if next != nil && &buf[:1][0] != next {
				return fmt.Errorf("step %d: the room does not start where the in-place write ended", step)
			}
			next = nil
			// Mostly appends that fit; every fifth runs past the room.
			k := min(len(rest), room/2+1, 700_000)
			if step%5 == 4 {
				k = min(len(rest), room+1000)
			}
			buf = append(buf, rest[:k]...)
			if k <= room {
				inPlace += k
				if k < room {
					next = &buf[:k+1][k]
				}
			} else {
				moved += k
			}
			if n, err := w.Write(buf); err != nil || n != k {
				return fmt.Errorf("write %d: %d %w", k, n, err)
			}
			rest = rest[k:]
		}
		return w.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	if inPlace == 0 || moved == 0 {
		t.Fatalf("in place %d, moved %d: both paths must be taken", inPlace, moved)
	}
	got, err := readStreamSum(t, r, m.BackupId, "s")
	if err != nil || got != sha256.Sum256(data) {
		t.Fatalf("read back: %v, checksum mismatch %v", err, got != sha256.Sum256(data))
	}
}
