package archive

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/dumpgen"
	"github.com/tidemark-backup/tidemark/internal/secret"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/storage/s3"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// Short lock timing for every test here, parent and children alike.
const (
	testRefresh = 100 * time.Millisecond
	testStale   = 1 * time.Second
)

// repoPlace says where a child process finds the repository.
type repoPlace struct {
	uri, access, secret string
}

func (p repoPlace) env() []string {
	return []string{"TIDEMARK_GC_URI=" + p.uri, "TIDEMARK_GC_AK=" + p.access, "TIDEMARK_GC_SK=" + p.secret}
}

func openPlace(p repoPlace) (storage.Storage, error) {
	if dir, ok := strings.CutPrefix(p.uri, "file://"); ok {
		return openFileStoreNoT(dir), nil
	}
	return location.Open(context.Background(), p.uri, location.Options{S3: s3.Config{
		Credentials: &s3.Credentials{AccessKeyID: p.access, SecretAccessKey: secret.NewString(p.secret)},
	}})
}

// gcRepo makes a repository with small chunks (many per megabyte) and the
// short lock timing, on file:// or on MinIO.
func gcRepo(t *testing.T, onS3 bool, srv *s3Server, name string) (*Repo, repoPlace) {
	t.Helper()
	var st storage.Storage
	var place repoPlace
	if onS3 {
		st = subStore(t, srv, name)
		place = repoPlace{uri: fmt.Sprintf("s3://%s/%s?endpoint=%s&tls=false", srv.mc.Bucket, name, srv.mc.Endpoint), access: srv.mc.AccessKey, secret: srv.mc.SecretKey}
	} else {
		dir := t.TempDir()
		st = openFileStore(t, dir)
		place = repoPlace{uri: "file://" + dir}
	}
	r, err := Init(context.Background(), st, InitOptions{ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	if err := r.SetLockTiming(testRefresh, testStale); err != nil {
		t.Fatal(err)
	}
	return r, place
}

// backupData writes one stream of dump-like data (pass picks the content,
// so equal passes share every chunk).
func backupData(ctx context.Context, r *Repo, id string, size int64, pass uint64, pause func()) (string, error) {
	m, err := r.WithBackup(ctx, BackupOptions{ID: id, Engine: "test"}, func(ctx context.Context, b *Backup) error {
		w, err := b.Stream("s", nil)
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, dumpgen.NewReader(tmpl(), size, pass)); err != nil {
			return err
		}
		if pause != nil {
			pause()
		}
		return w.Close()
	})
	if err != nil {
		return "", err
	}
	return m.BackupId, nil
}

// TestGCChild is not a test: it is the body of the child processes the
// tests below start (writers and gc runs), selected by TIDEMARK_GC_CHILD.
func TestGCChild(t *testing.T) {
	mode := os.Getenv("TIDEMARK_GC_CHILD")
	if mode == "" {
		return
	}
	st, err := openPlace(repoPlace{os.Getenv("TIDEMARK_GC_URI"), os.Getenv("TIDEMARK_GC_AK"), os.Getenv("TIDEMARK_GC_SK")})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	r, err := Open(context.Background(), st, Secret{})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	refresh, stale := testRefresh, testStale
	if v := os.Getenv("TIDEMARK_GC_STALE"); v != "" {
		stale, _ = time.ParseDuration(v)
		refresh = stale / 10
	}
	if err := r.SetLockTiming(refresh, stale); err != nil {
		panic(err)
	}
	seed, _ := strconv.ParseUint(os.Getenv("TIDEMARK_GC_SEED"), 10, 64)
	rng := rand.New(rand.NewPCG(seed, 1))
	stop := os.Getenv("TIDEMARK_GC_STOP")
	stopped := func() bool { _, err := os.Stat(stop); return err == nil }
	ctx := context.Background()
	switch mode {
	case "writer":
		// Backups of a few contents (so they share chunks with backups
		// deleted meanwhile), each with a random pause mid-way.
		for i := 0; !stopped(); i++ {
			id := fmt.Sprintf("w%d-%d", seed, i)
			pass := uint64(rng.IntN(40))
			size := int64(64<<10) * int64(4+rng.IntN(12))
			pause := time.Duration(rng.IntN(300)) * time.Millisecond
			// The busy file tells the parent a backup is in flight, for
			// it to stop this process mid-backup.
			busy := os.Getenv("TIDEMARK_GC_BUSY")
			_, err := backupData(ctx, r, id, size, pass, func() {
				if busy != "" {
					_ = os.WriteFile(busy, nil, 0o600)
				}
				time.Sleep(pause)
			})
			if busy != "" {
				_ = os.Remove(busy)
			}
			if err != nil {
				fmt.Printf("failed %s %v\n", id, strings.ReplaceAll(err.Error(), "\n", " "))
			} else {
				fmt.Printf("committed %s\n", id)
			}
		}
	case "gc":
		for !stopped() {
			rep, err := r.GC(ctx, GCOptions{Grace: 0})
			switch {
			case errors.Is(err, ErrLocked):
				fmt.Println("locked")
			case err != nil:
				fmt.Println("gcerror", err)
			default:
				fmt.Printf("gc deleted %d condemned %d\n", rep.ChunksDeleted, rep.ChunksCondemned)
			}
			time.Sleep(time.Duration(50+rng.IntN(200)) * time.Millisecond)
		}
	case "paused-writer":
		// Writes its stream, says so, and commits when told.
		_, err := backupData(ctx, r, "paused", 1<<20, 7, func() {
			fmt.Println("written")
			_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		})
		fmt.Printf("result %v\n", err)
	case "paused-gc":
		// Stops in the middle of a sweep (after reading references, before
		// deleting) for the parent to SIGSTOP it there.
		gcTestHook = func(step string) {
			if step == "references-read" {
				fmt.Println("sweeping")
				_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
			}
		}
		rep, err := r.GC(ctx, GCOptions{})
		deleted := 0
		if rep != nil {
			deleted = rep.ChunksDeleted
		}
		fmt.Printf("result deleted=%d err=%v\n", deleted, err)
	}
	os.Exit(0)
}

type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
}

func startChild(t *testing.T, mode string, place repoPlace, extra ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestGCChild$")
	cmd.Env = append(append(append(os.Environ(), "TIDEMARK_GC_CHILD="+mode), place.env()...), extra...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 10000), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		_ = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-c.done
	})
	return c
}

// expect waits for a line starting with prefix and returns it.
func (c *child) expect(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(testenv.Wait(60 * time.Second))
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				t.Fatalf("child ended before printing %q", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("child never printed %q", prefix)
		}
	}
}

// Issue 19's hole: a backup that decided to reuse chunks is stopped past
// the stale time; meanwhile its base backup is deleted and gc condemns and
// deletes those chunks. When it wakes it must not commit: its marker's
// loss is seen on its next step and the tombstone gc left refuses the
// manifest. Before the two-phase gc, its refresh re-created the lock and
// it committed a manifest over deleted chunks.
func TestPausedWriterIsFenced(t *testing.T) {
	ctx := context.Background()
	r, place := gcRepo(t, false, nil, "")
	base, err := backupData(ctx, r, "base", 1<<20, 7, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := startChild(t, "paused-writer", place)
	c.expect(t, "written")
	if err := c.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := r.Store().Delete(ctx, manifestKey(base)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(testStale + 200*time.Millisecond)
	rep, err := r.GC(ctx, GCOptions{})
	if err != nil || !slices.Equal(rep.BackupsFenced, []string{"paused"}) || rep.ChunksCondemned == 0 {
		t.Fatalf("first gc: %+v %v: want the paused writer fenced and the base's chunks condemned", rep, err)
	}
	rep, err = r.GC(ctx, GCOptions{})
	if err != nil || rep.ChunksDeleted != rep.Records[0].Chunks || rep.ChunksDeleted == 0 {
		t.Fatalf("second gc: %+v %v: want every condemned chunk deleted", rep, err)
	}
	_ = c.cmd.Process.Signal(syscall.SIGCONT)
	_, _ = io.WriteString(c.stdin, "go\n")
	res := c.expect(t, "result")
	if !strings.Contains(res, ErrFenced.Error()) {
		t.Fatalf("woken writer: %q, want it fenced", res)
	}
	if ids, err := r.BackupIDs(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("backups after the fenced writer: %v %v", ids, err)
	}
	if _, err := r.LoadManifest(ctx, "paused"); !errors.Is(err, ErrBackupMissing) || !strings.Contains(err.Error(), "abandoned") {
		t.Fatalf("loading the fenced backup: %v", err)
	}
	if vr, err := r.Verify(ctx, VerifyOptions{ReadData: true}); err != nil || !vr.OK() {
		t.Fatalf("verify: %+v %v", vr, err)
	}
}

// Issue 20 item 1: a gc whose sweep lasts longer than the stale time keeps
// its lock fresh (a second gc is refused all along, it does not take the
// lock over), and a backup that needs chunks being swept waits for the
// sweep and stores them again rather than reusing them. Before the fix gc
// never refreshed: the second run or a backup judged its lock abandoned.
func TestLongSweepKeepsLockAndBackupStoresAgain(t *testing.T) {
	ctx := context.Background()
	r, _ := gcRepo(t, false, nil, "")
	base, err := backupData(ctx, r, "base", 2<<20, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Store().Delete(ctx, manifestKey(base)); err != nil {
		t.Fatal(err)
	}
	if rep, err := r.GC(ctx, GCOptions{}); err != nil || rep.ChunksCondemned == 0 {
		t.Fatalf("condemning: %+v %v", rep, err)
	}
	// The sweep stops after reading references for twice the stale time.
	gcTestHook = func(step string) {
		if step == "references-read" {
			time.Sleep(2 * testStale)
		}
	}
	t.Cleanup(func() { gcTestHook = nil })
	gcDone := make(chan *GCReport, 1)
	go func() {
		rep, err := r.GC(ctx, GCOptions{})
		if err != nil {
			t.Errorf("long gc: %v", err)
		}
		gcDone <- rep
	}()
	waitFor(t, "the sweep to begin", func() bool { return countKeys(t, r.Store(), deletingDir) == 1 })
	time.Sleep(testStale + 300*time.Millisecond)
	r2, err := Open(ctx, r.Store(), Secret{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if err := r2.SetLockTiming(testRefresh, testStale); err != nil {
		t.Fatal(err)
	}
	// (This run fails before its first step, so the hook is not called.)
	if _, err := r2.GC(ctx, GCOptions{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second gc during a sweep longer than the stale time: %v, want ErrLocked", err)
	}
	// The same content again, through another Repo whose index lists the
	// condemned chunks as present.
	id, err := backupData(ctx, r2, "again", 2<<20, 3, nil)
	if err != nil {
		t.Fatalf("backup during the sweep: %v", err)
	}
	rep := <-gcDone
	if rep == nil || rep.ChunksDeleted == 0 {
		t.Fatalf("long gc: %+v", rep)
	}
	if vr, err := r.Verify(ctx, VerifyOptions{ReadData: true, BackupID: id}); err != nil || !vr.OK() {
		t.Fatalf("backup written during the sweep: %+v %v", vr, err)
	}
}

// Issue 20 item 1, second half: a lock whose owner has the same host name
// and a pid that does not exist here is not thereby dead (another
// container, another pid namespace): only its age decides.
func TestSameHostDeadPidIsNotStale(t *testing.T) {
	ctx := context.Background()
	r, _ := gcRepo(t, false, nil, "")
	p := exec.Command("true")
	if err := p.Run(); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	other := lockInfo{Kind: lockGC, Owner: "other-namespace", Host: host, PID: p.Process.Pid}
	if _, err := r.putMarker(ctx, lockKey(lockGC, other.Owner), &other, true); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GC(ctx, GCOptions{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("gc beside a fresh lock of a pid unknown here: %v, want ErrLocked", err)
	}
	time.Sleep(testStale + 200*time.Millisecond)
	if _, err := r.GC(ctx, GCOptions{}); err != nil {
		t.Fatalf("gc beside a stale lock: %v", err)
	}
	if _, err := r.Store().Stat(ctx, fenceKey(other.Owner)); err != nil {
		t.Fatalf("the stale run was not fenced: %v", err)
	}
}

// A gc stopped (SIGSTOP) mid-sweep past the stale time is fenced by the
// next run, which sweeps the record; a backup then stores those chunks
// again. When the stopped run wakes it finds its lock gone and deletes
// nothing: the backup stays whole.
func TestPausedGCDeletesNothingWhenItWakes(t *testing.T) {
	ctx := context.Background()
	r, place := gcRepo(t, false, nil, "")
	base, err := backupData(ctx, r, "base", 2<<20, 5, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Store().Delete(ctx, manifestKey(base)); err != nil {
		t.Fatal(err)
	}
	if rep, err := r.GC(ctx, GCOptions{}); err != nil || rep.ChunksCondemned == 0 {
		t.Fatalf("condemning: %+v %v", rep, err)
	}
	c := startChild(t, "paused-gc", place)
	c.expect(t, "sweeping")
	if err := c.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(testStale + 300*time.Millisecond)
	rep, err := r.GC(ctx, GCOptions{})
	if err != nil || rep.ChunksDeleted == 0 {
		t.Fatalf("gc after the stopped one went stale: %+v %v", rep, err)
	}
	id, err := backupData(ctx, r, "after", 2<<20, 5, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Process.Signal(syscall.SIGCONT)
	_, _ = io.WriteString(c.stdin, "go\n")
	res := c.expect(t, "result")
	if !strings.Contains(res, "deleted=0 ") || !strings.Contains(res, ErrFenced.Error()) {
		t.Fatalf("woken gc: %q, want it fenced with nothing deleted", res)
	}
	if vr, err := r.Verify(ctx, VerifyOptions{ReadData: true, BackupID: id}); err != nil || !vr.OK() {
		t.Fatalf("backup after the woken gc: %+v %v", vr, err)
	}
}

// Sealed objects (binlog segments) are put and deleted while gc runs: gc
// neither touches them nor waits for their writer.
func TestGCLeavesObjectsAlone(t *testing.T) {
	ctx := context.Background()
	r, _ := gcRepo(t, false, nil, "")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	kept := map[string]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("binlog/db1/seg-%04d", i)
			if err := r.PutObject(ctx, name, []byte(name), ObjectOptions{}); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			kept[name] = true
			if i%3 == 2 {
				old := fmt.Sprintf("binlog/db1/seg-%04d", i-2)
				if err := r.DeleteObject(ctx, old); err != nil {
					t.Error(err)
				}
				delete(kept, old)
			}
			mu.Unlock()
		}
	}()
	for i := range 5 {
		if _, err := r.GC(ctx, GCOptions{}); err != nil {
			t.Fatalf("gc %d: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
	for name := range kept {
		got, err := r.GetObject(ctx, name)
		if err != nil || string(got) != name {
			t.Fatalf("object %s after gc: %q %v", name, got, err)
		}
	}
	if len(kept) == 0 {
		t.Fatal("no objects written")
	}
}

// The randomized concurrency test of issue 19: three writer processes
// doing backups with random pauses (one of them SIGSTOPped past the stale
// time), two gc processes running gc in a loop (one SIGSTOPped too),
// manifests deleted at random and sealed objects put and deleted meanwhile.
// At the end every committed backup that was not deleted is listed and
// reads back whole, the objects are intact, and two gc runs after the
// writers are gone leave nothing that nothing references.
func TestGCRandomizedFile(t *testing.T) { testGCRandomized(t, false) }

func TestGCRandomizedS3(t *testing.T) { testGCRandomized(t, true) }

func testGCRandomized(t *testing.T, onS3 bool) {
	ctx := context.Background()
	var srv *s3Server
	stale := testStale
	if onS3 {
		// HEAD gives S3 times to the second: a stale time of a second
		// would judge live markers stale (safe, but the test would then
		// measure fencing rather than the protocol).
		srv, stale = openS3Store(t), 3*time.Second
	}
	r, place := gcRepo(t, onS3, srv, "randomized")
	if err := r.SetLockTiming(stale/10, stale); err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("TIDEMARK_GC_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (set TIDEMARK_GC_SEED to replay the parent's choices)", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	dur := 12 * time.Second
	if testing.Short() {
		dur = 6 * time.Second
		if onS3 {
			dur = 9 * time.Second // slower here: fewer runs in the same time
		}
	}
	stopFile := filepath.Join(t.TempDir(), "stop")
	env := func(i int) []string {
		return []string{fmt.Sprintf("TIDEMARK_GC_SEED=%d", seed%1000*10+uint64(i)), "TIDEMARK_GC_STOP=" + stopFile, "TIDEMARK_GC_STALE=" + stale.String()}
	}
	var writers, gcs []*child
	busy := stopFile + ".busy"
	for i := range 3 {
		e := env(i)
		if i == 0 {
			e = append(e, "TIDEMARK_GC_BUSY="+busy)
		}
		writers = append(writers, startChild(t, "writer", place, e...))
	}
	for i := range 2 {
		gcs = append(gcs, startChild(t, "gc", place, env(10+i)...))
	}

	// A binlog streamer's sealed objects, beside it all.
	var objMu sync.Mutex
	objects := map[string]bool{}
	objStop := make(chan struct{})
	var objWG sync.WaitGroup
	objWG.Add(1)
	go func() {
		defer objWG.Done()
		for i := 0; ; i++ {
			select {
			case <-objStop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			name := fmt.Sprintf("binlog/db1/seg-%05d", i)
			if err := r.PutObject(ctx, name, []byte(name), ObjectOptions{}); err != nil {
				t.Errorf("put object: %v", err)
				return
			}
			objMu.Lock()
			objects[name] = true
			if i%4 == 3 {
				old := fmt.Sprintf("binlog/db1/seg-%05d", i-3)
				if err := r.DeleteObject(ctx, old); err != nil {
					t.Errorf("delete object: %v", err)
				}
				delete(objects, old)
			}
			objMu.Unlock()
		}
	}()

	deleted := map[string]bool{}
	start := time.Now()
	pausedWriter, pausedGC := false, false
	for time.Since(start) < dur {
		time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
		ids, err := r.BackupIDs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range rng.IntN(3) {
			if len(ids) < 2 {
				break
			}
			victim := ids[rng.IntN(len(ids))]
			if err := r.Store().Delete(ctx, manifestKey(victim)); err != nil {
				t.Fatal(err)
			}
			deleted[victim] = true
		}
		if _, err := os.Stat(busy); err == nil && !pausedWriter && time.Since(start) > dur/4 {
			// Mid-backup, its chunks decided: stopped past the stale time.
			pausedWriter = true
			pause(t, writers[0], 2*stale)
		}
		if !pausedGC && time.Since(start) > dur/2 {
			pausedGC = true
			pause(t, gcs[0], 2*stale)
		}
	}
	if err := os.WriteFile(stopFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	close(objStop)
	objWG.Wait()

	committed := map[string]bool{}
	var fenced, gcRuns, gcFenced, gcDeleted int
	for _, c := range append(writers, gcs...) {
		select {
		case <-c.done:
		case <-time.After(testenv.Wait(60 * time.Second)):
			t.Fatal("a child did not stop")
		}
		for l := range c.lines {
			switch f := strings.Fields(l); {
			case f[0] == "committed":
				committed[f[1]] = true
			case f[0] == "failed" && strings.Contains(l, ErrFenced.Error()):
				fenced++
			case f[0] == "gc":
				gcRuns++
				n, _ := strconv.Atoi(f[2])
				gcDeleted += n
			case f[0] == "locked":
			case f[0] == "gcerror" && strings.Contains(l, ErrFenced.Error()):
				gcFenced++
			default:
				t.Errorf("child: %s", l)
			}
		}
	}
	t.Logf("%d backups committed, %d deleted, %d writers fenced; %d gc runs deleted %d chunks, %d gc runs fenced", len(committed), len(deleted), fenced, gcRuns, gcDeleted, gcFenced)
	if len(committed) < 5 || gcRuns < 3 || gcDeleted == 0 {
		t.Fatalf("too little happened to prove anything: %d backups, %d gc runs, %d chunks deleted", len(committed), gcRuns, gcDeleted)
	}

	var want []string
	for id := range committed {
		if !deleted[id] {
			want = append(want, id)
		}
	}
	slices.Sort(want)
	ids, err := r.BackupIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, want) {
		t.Fatalf("backups listed %v, want the committed and not deleted %v", ids, want)
	}
	vr, err := r.Verify(ctx, VerifyOptions{ReadData: true})
	if err != nil || !vr.OK() || vr.Backups != len(want) {
		t.Fatalf("verify --read-data: %+v %v", vr, err)
	}
	for name := range objects {
		if got, err := r.GetObject(ctx, name); err != nil || string(got) != name {
			t.Fatalf("object %s: %q %v", name, got, err)
		}
	}

	// The bound: with no writer left, two runs delete everything
	// unreferenced (the first sweeps or condemns, the second sweeps).
	time.Sleep(stale)
	for i := range 2 {
		if _, err := r.GC(ctx, GCOptions{}); err != nil {
			t.Fatalf("final gc %d: %v", i, err)
		}
	}
	rep, err := r.GC(ctx, GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ChunksTotal != rep.ChunksReferred || len(rep.Records) != 0 || rep.MissingReferred != 0 {
		t.Fatalf("after two final runs: %d chunks stored, %d referenced, records %+v", rep.ChunksTotal, rep.ChunksReferred, rep.Records)
	}
}

// pause stops a child for d, then lets it go on.
func pause(t *testing.T, c *child, d time.Duration) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(d, func() { _ = c.cmd.Process.Signal(syscall.SIGCONT) })
}

// A writer's clock does not count: a marker that says it was refreshed an
// hour ago but was just written is live (its backup is waited for), and
// one that claims a refresh in the future but has not been rewritten for
// the stale time is fenced. Only the store's times decide.
func TestWriterClockIgnored(t *testing.T) {
	ctx := context.Background()
	r, _ := gcRepo(t, false, nil, "")
	put := func(owner string, refreshed time.Time) {
		body := fmt.Sprintf(`{"kind":"backup","owner":%q,"host":"h","pid":1,"refreshed":%q}`, owner, refreshed.Format(time.RFC3339Nano))
		if err := r.Store().Put(ctx, lockKey(lockBackup, owner), strings.NewReader(body), int64(len(body)), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	put("future", time.Now().Add(time.Hour))
	time.Sleep(testStale + 200*time.Millisecond)
	put("past", time.Now().Add(-time.Hour))
	putOrphan(t, r, "an orphan")
	rep, err := r.GC(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.BackupsFenced, []string{"future"}) || !slices.Equal(rep.BackupsRunning, []string{"past"}) {
		t.Fatalf("fenced %v, running %v: want the stale marker fenced and the fresh one waited for", rep.BackupsFenced, rep.BackupsRunning)
	}
	if len(rep.Records) != 1 || !slices.Equal(rep.Records[0].WaitingFor, []string{"past"}) {
		t.Fatalf("records %+v: want the new one waiting for backup past", rep.Records)
	}
}

// An older tidemark's gc (a lock without the protocol field) deletes
// without condemning first: a backup refuses to run beside it, as before.
// Once its lock is stale the backup runs.
func TestBackupRefusesOldGC(t *testing.T) {
	ctx := context.Background()
	r, _ := gcRepo(t, false, nil, "")
	body := `{"kind":"gc","owner":"old","host":"h","pid":1,"refreshed":"2026-01-01T00:00:00Z"}`
	if err := r.Store().Put(ctx, lockKey(lockGC, "old"), strings.NewReader(body), int64(len(body)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := backupData(ctx, r, "", 1<<20, 1, nil); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "older tidemark") {
		t.Fatalf("backup beside an older gc: %v, want ErrLocked", err)
	}
	if n := countKeys(t, r.Store(), lockPrefix+lockBackup); n != 0 {
		t.Fatalf("the refused backup left %d markers", n)
	}
	time.Sleep(testStale + 200*time.Millisecond)
	if _, err := backupData(ctx, r, "", 1<<20, 1, nil); err != nil {
		t.Fatalf("backup beside a stale older gc lock: %v", err)
	}
}

// The core interleaving of issue 19, in one process: a backup reuses the
// chunks of a backup that is then deleted; gc condemns them while the
// backup runs. The backup's next refresh acknowledges the record and
// rescues every condemned chunk it already refers to, so the sweep spares
// them all and the backup commits whole.
func TestRunningBackupRescuesWhatItReused(t *testing.T) {
	ctx := context.Background()
	r, _ := gcRepo(t, false, nil, "")
	base, err := backupData(ctx, r, "base", 1<<20, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	referred, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := backupData(ctx, r, "reuser", 1<<20, 4, func() { close(referred); <-release })
		done <- err
	}()
	<-referred
	// Every chunk has been handed to the workers; give them a moment to
	// take the last ones.
	time.Sleep(testenv.Wait(200 * time.Millisecond))
	if err := r.Store().Delete(ctx, manifestKey(base)); err != nil {
		t.Fatal(err)
	}
	rep, err := r.GC(ctx, GCOptions{})
	if err != nil || rep.ChunksCondemned == 0 {
		t.Fatalf("condemning: %+v %v", rep, err)
	}
	condemned := rep.ChunksCondemned
	waitFor(t, "the backup to acknowledge the record", func() bool {
		rep, err := r.GC(ctx, GCOptions{DryRun: true})
		return err == nil && len(rep.Records) == 1 && rep.Records[0].State == "deletable"
	})
	rep, err = r.GC(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// 1 MiB in 64 KiB chunks: every chunk was flushed by the writes.
	if rep.ChunksRescued != condemned || rep.ChunksDeleted != 0 {
		t.Fatalf("sweep: %d rescued, %d deleted of %d condemned: want every one rescued", rep.ChunksRescued, rep.ChunksDeleted, condemned)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if vr, err := r.Verify(ctx, VerifyOptions{ReadData: true}); err != nil || !vr.OK() || vr.Backups != 1 {
		t.Fatalf("verify: %+v %v", vr, err)
	}
}
