package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/engines/selection"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

func newRepo(t *testing.T) (*archive.Repo, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	st, err := file.Open(dir, file.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := archive.Init(context.Background(), st, archive.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); _ = st.Close() })
	return r, dir
}

func backup(t *testing.T, r *archive.Repo, e *Engine, dsn string) (*v1.Manifest, *engines.BackupResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(3*time.Minute))
	defer cancel()
	var res *engines.BackupResult
	m, err := r.WithBackup(ctx, archive.BackupOptions{Engine: Name, Instance: "test"}, func(ctx context.Context, b *archive.Backup) error {
		var err error
		res, err = e.Backup(ctx, engines.BackupParams{DSN: dsn, Parallel: 2, Sink: engines.ArchiveSink(b)})
		return err
	})
	return m, res, err
}

// restoreAndStart extracts m into a new directory and starts a server on
// it: the server's crash recovery is the prepare step.
func restoreAndStart(t *testing.T, r *archive.Repo, m *v1.Manifest, name string) *testenv.MariaDB {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := physical.Extract(context.Background(), physical.ExtractParams{Source: engines.ArchiveSource(r, m), Dirs: map[string]string{physical.RootDatadir: dir}}); err != nil {
		t.Fatal(err)
	}
	return testenv.StartMariaDB(t, testenv.MariaDBOptions{DataDir: dir, Name: name})
}

func leftSnapshots(t *testing.T, root string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, SnapshotDirName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// btrfsServer starts a MariaDB whose datadir is inside a Btrfs subvolume
// on a loop device.
func btrfsServer(t *testing.T) (*testenv.MariaDB, string) {
	t.Helper()
	b := testenv.StartBtrfs(t, "1G")
	sub := b.Subvolume(t, "mysql")
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{DataDir: filepath.Join(sub, "data"), Name: "snap-src"})
	return m, sub
}

// TestBtrfs runs a real MariaDB on Btrfs: a backup under concurrent
// transfers restores to a server whose balances and counter sit exactly at
// the recorded GTID; a second backup after changing a contiguous 1% of one
// table stores a small fraction of the first and restores to checksums
// equal to the source's; no snapshot is left behind; a user without
// RELOAD is refused naming it, leaving nothing.
func TestBtrfs(t *testing.T) {
	src, sub := btrfsServer(t)
	accounts, fillRows := 20000, 20000 // filler: ~20 MiB of incompressible rows
	if testing.Short() {
		accounts, fillRows = 5000, 12000 // the redo the update writes is a smaller share of more data
	}
	bank := testenv.CreateBank(t, src, accounts,
		"CREATE DATABASE fill",
		"CREATE TABLE fill.t (id INT PRIMARY KEY, b VARBINARY(1000) NOT NULL)",
		fmt.Sprintf("INSERT INTO fill.t SELECT seq, RANDOM_BYTES(1000) FROM seq_1_to_%d", fillRows),
	)
	db := src.DB(t)
	r, _ := newRepo(t)
	e := New()
	e.StateDir = t.TempDir()
	e.WholeRedo = os.Getenv("XWHOLE") != ""

	// 1. Under writes.
	writers := bank.Transfers(t, db, 2)
	m1, res1, err := backup(t, r, e, src.DSN)
	writers.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first backup: lock held %v, %d bytes, %d stored, consistent at %v", res1.LockDuration, m1.LogicalBytes, m1.NewStoredBytes, m1.Consistency)
	if res1.LockDuration <= 0 || m1.LockDuration.AsDuration() != res1.LockDuration {
		t.Errorf("lock time %v, manifest %v: not recorded", res1.LockDuration, m1.LockDuration.AsDuration())
	}
	md := m1.EngineMetadata
	if md[physical.MetaPrepare] != physical.PrepareCrashRecovery || md[physical.MetaFormat] != physical.FormatSparse || md[physical.MetaBlock] != strconv.Itoa(DefaultBlock) || !strings.Contains(md[MetaVolume], "Btrfs subvolume") {
		t.Errorf("engine metadata %v", md)
	}
	if ddl, err := time.ParseDuration(md[MetaDDLBlocked]); err != nil || ddl < res1.LockDuration {
		t.Errorf("DDL blocked %q (%v), commits %v: DDL is blocked first", md[MetaDDLBlocked], err, res1.LockDuration)
	}
	if m1.Consistency.GetBinlogFile() == "" || m1.Server.GetFlavor() != "mariadb" {
		t.Errorf("consistency %v server %v", m1.Consistency, m1.Server)
	}
	for _, s := range m1.Streams {
		if strings.Contains(s.Name, SnapshotDirName) || strings.HasSuffix(s.Name, ".pid") || strings.HasSuffix(s.Name, "ibtmp1") {
			t.Errorf("stored what is not data: %s", s.Name)
		}
	}
	if left := leftSnapshots(t, sub); len(left) != 0 {
		t.Errorf("snapshots left after the backup: %v", left)
	}

	out := restoreAndStart(t, r, m1, "snap-restored1")
	if n := bank.Check(t, out.DB(t), m1.Consistency.GetGtidSet()); n == 0 {
		t.Errorf("no transfer before the consistency point: the test proves nothing")
	}
	out.Stop()

	// 2. A contiguous 1% of the filler changes; the second backup stores
	// little, and restores exactly.
	lo := fillRows / 2
	src.Exec(t, fmt.Sprintf("UPDATE fill.t SET b = RANDOM_BYTES(1000) WHERE id BETWEEN %d AND %d", lo, lo+fillRows/100-1))
	m2, _, err := backup(t, r, e, src.DSN)
	if err != nil {
		t.Fatal(err)
	}
	frac := float64(m2.NewStoredBytes) / float64(m1.NewStoredBytes)
	t.Logf("second backup: %d bytes new of %d, %.1f%% of the first's %d", m2.NewStoredBytes, m2.StoredBytes, 100*frac, m1.NewStoredBytes)
	if frac > 0.15 {
		t.Errorf("the second backup stored %.1f%% of the first's bytes after 1%% of one table changed; want ≤ 15%%", 100*frac)
	}
	out2 := restoreAndStart(t, r, m2, "snap-restored2")
	testenv.Compare(t, db, out2.DB(t), "bank", "fill")
	out2.Stop()

	// 3. Without RELOAD: refused, naming it, nothing left.
	src.Exec(t, "CREATE USER weak@'%' IDENTIFIED BY 'weak'", "GRANT SELECT ON *.* TO weak@'%'")
	_, _, err = backup(t, r, e, fmt.Sprintf("weak:weak@tcp(127.0.0.1:%d)/", src.Port))
	if err == nil || !strings.Contains(err.Error(), "RELOAD") {
		t.Errorf("backup without RELOAD: %v, want an error naming RELOAD", err)
	}
	if left := leftSnapshots(t, sub); len(left) != 0 {
		t.Errorf("snapshots left after a refused backup: %v", left)
	}
}

// TestRefusesWithoutSnapshots: a datadir on a filesystem without
// snapshots (tmpfs here; ext4 without LVM takes the same path) is refused,
// naming the engines that can back it up; so are a database filter and a
// restore onto a running server.
func TestRefusesWithoutSnapshots(t *testing.T) {
	if _, err := New().Backup(context.Background(), engines.BackupParams{Databases: []string{"shop"}, Sink: nopSink{}}); err == nil || !strings.Contains(err.Error(), "every database") {
		t.Errorf("--databases: %v", err)
	}
	if _, err := New().Restore(context.Background(), engines.RestoreParams{}); err == nil || !strings.Contains(err.Error(), "--to-datadir") {
		t.Errorf("restore onto a server: %v", err)
	}
	dir := testenv.Tmpfs(t, "4m")
	_, _, err := locate(context.Background(), ExecRunner{}, dir, "1G", t.TempDir())
	if !errors.Is(err, ErrNotSnapshottable) || !strings.Contains(err.Error(), "tmpfs") || !strings.Contains(err.Error(), "mariabackup") || !strings.Contains(err.Error(), "logical") {
		t.Errorf("tmpfs: %v", err)
	}
}

func TestMain(m *testing.M) { testenv.MainWithLazyTidemark(m) }

// TestKilledBackup: `tidemark backup --engine snapshot` killed with
// SIGKILL while it copies leaves its (read-only) snapshot and no complete
// manifest;
// the next backup of the instance removes the snapshot (and says so) and
// leaves none of its own.
func TestKilledBackup(t *testing.T) {
	bin := testenv.TidemarkBinary(t)
	src, sub := btrfsServer(t)
	rows := 30000
	if testing.Short() {
		rows = 15000
	}
	src.Exec(t, "CREATE DATABASE fill", "USE fill", "CREATE TABLE fill.t (id INT PRIMARY KEY, b VARBINARY(1000) NOT NULL)",
		fmt.Sprintf("INSERT INTO fill.t SELECT seq, RANDOM_BYTES(1000) FROM seq_1_to_%d", rows))
	r, repoDir := newRepo(t)
	// zstd at level 19 and one file at a time: slow enough to be caught
	// in the middle of the copy.
	c := testenv.NewChild(t, "backup", bin, "backup", "--engine", "snapshot", "--mysql", src.DSN, "--repo", "file://"+repoDir,
		"--parallel", "1", "--compress-level", "19")
	c.Env = []string{"TMPDIR=" + t.TempDir()}
	c.Start()
	testenv.WaitFor(t, "the child's snapshot", 30*time.Second, func() error {
		if c.Exited() {
			t.Fatalf("the backup ended before it could be killed:\n%s", c.LogTail())
		}
		if len(leftSnapshots(t, sub)) == 0 {
			return errors.New("no snapshot yet")
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond) // into the copy
	c.Kill()
	left := leftSnapshots(t, sub)
	if len(left) != 1 {
		t.Fatalf("snapshots after the kill: %v, want the killed run's", left)
	}
	snapPath := filepath.Join(sub, SnapshotDirName, left[0])
	if out, err := exec.Command("btrfs", "property", "get", "-ts", snapPath, "ro").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ro=true" {
		t.Errorf("the snapshot %s is not read-only: %s %v", snapPath, out, err)
	}
	ms, err := r.Manifests(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 0 {
		t.Fatalf("a killed backup left %d complete manifest(s)", len(ms))
	}

	// The next run, the binary again, to its end.
	cmd := exec.Command(bin, "backup", "--engine", "snapshot", "--mysql", src.DSN, "--repo", "file://"+repoDir)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the next backup: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "warning: removed 1 snapshot") || !strings.Contains(stderr.String(), left[0]) {
		t.Errorf("stderr of the next backup does not name the removed %s:\n%s", left[0], stderr.String())
	}
	if ms, err = r.Manifests(context.Background()); err != nil || len(ms) != 1 || ms[0].Engine != Name || !strings.Contains(stdout.String(), ms[0].BackupId) {
		t.Errorf("after the next backup: %d manifests (%v), stdout %q", len(ms), err, stdout.String())
	}
	if after := leftSnapshots(t, sub); len(after) != 0 {
		t.Errorf("snapshots after the next backup: %v", after)
	}
}

// TestLockGuards: against the MySQL 8 double (a proxy that
// gives a real MariaDB MySQL's personality; it shows which statements are
// sent, not how MySQL runs them), the lock is LOCK INSTANCE FOR BACKUP and
// FLUSH TABLES WITH READ LOCK on one connection around the coordinates
// and the snapshot; a query running longer than the wait is named and the
// global lock never tried; a missing BACKUP_ADMIN is named. MySQL's own
// lock semantics are untested here. On MariaDB itself, a statement that
// keeps BACKUP STAGE waiting past the bound is named.
func TestLockGuards(t *testing.T) {
	src, sub := btrfsServer(t)
	d := testenv.StartMySQL8Double(t, src)
	r, _ := newRepo(t)
	e := &Engine{StateDir: t.TempDir(), LockWait: time.Second}

	m, res, err := backup(t, r, e, d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	if m.Server.GetFlavor() != "mysql" || res.LockDuration <= 0 {
		t.Errorf("server %v, lock %v", m.Server, res.LockDuration)
	}
	log := d.Log()
	conn := testenv.ConnOf(log, "LOCK INSTANCE FOR BACKUP")
	var seq []string
	for _, s := range log {
		if s.Conn == conn {
			for _, p := range []string{"LOCK INSTANCE", "FLUSH TABLES", "SHOW MASTER STATUS", "SELECT @@GLOBAL.gtid_executed", "UNLOCK TABLES", "UNLOCK INSTANCE"} {
				if strings.HasPrefix(s.SQL, p) {
					seq = append(seq, p)
				}
			}
		}
	}
	want := []string{"LOCK INSTANCE", "FLUSH TABLES", "SHOW MASTER STATUS", "SELECT @@GLOBAL.gtid_executed", "UNLOCK TABLES", "UNLOCK INSTANCE"}
	if conn == 0 || strings.Join(seq, ",") != strings.Join(want, ",") {
		t.Errorf("lock statements on connection %d: %q, want %q", conn, seq, want)
	}

	// A long query: named, and FLUSH TABLES WITH READ LOCK not tried.
	db := src.DB(t)
	done := make(chan error, 1)
	go func() { _, err := db.Exec("SELECT SLEEP(5) AS long_report"); done <- err }()
	time.Sleep(1200 * time.Millisecond)
	before := len(d.Log())
	_, _, err = backup(t, r, e, d.DSN)
	if err == nil || !strings.Contains(err.Error(), "long_report") {
		t.Errorf("backup behind a long query: %v, want an error naming it", err)
	}
	for _, s := range d.Log()[before:] {
		if strings.HasPrefix(s.SQL, "FLUSH TABLES") {
			t.Error("FLUSH TABLES WITH READ LOCK tried behind a long query")
		}
	}
	if err := <-done; err != nil {
		t.Errorf("the long query: %v", err)
	}

	// MariaDB: BACKUP STAGE BLOCK_DDL waits for statements writing
	// non-transactional tables; past the wait, the statement is named and
	// the stages ended (the statement then completes).
	src.Exec(t, "CREATE DATABASE IF NOT EXISTS d", "CREATE TABLE d.a (v INT) ENGINE=MyISAM")
	go func() { _, err := db.Exec("INSERT INTO d.a SELECT SLEEP(4) AS slow_insert"); done <- err }()
	time.Sleep(1200 * time.Millisecond)
	_, _, err = backup(t, r, e, src.DSN)
	if err == nil || !strings.Contains(err.Error(), "slow_insert") || !strings.Contains(err.Error(), "BLOCK_DDL") {
		t.Errorf("MariaDB backup behind a slow MyISAM write: %v, want an error naming it", err)
	}
	if err := <-done; err != nil {
		t.Errorf("the slow insert: %v", err)
	}

	d.Fail("LOCK INSTANCE", &testenv.DoubleError{Number: 1227, SQLState: "42000", Message: "Access denied; you need (at least one of) the BACKUP_ADMIN privilege(s) for this operation"})
	_, _, err = backup(t, r, e, d.DSN)
	if err == nil || !strings.Contains(err.Error(), "BACKUP_ADMIN") {
		t.Errorf("without BACKUP_ADMIN: %v", err)
	}
	if left := leftSnapshots(t, sub); len(left) != 0 {
		t.Errorf("snapshots left: %v", left)
	}
}

// TestLayouts: binlogs and the redo log outside the datadir on the same
// subvolume are roots of their own (the redo log still cut to its live
// window); a datadir that is the subvolume's top gets its
// snapshots beside it (a directory in it would show as a database);
// an undo directory on another subvolume is refused with the reason.
func TestLayouts(t *testing.T) {
	vol := testenv.StartBtrfs(t, "1G")
	r, _ := newRepo(t)
	e := &Engine{StateDir: t.TempDir()}

	a := vol.Subvolume(t, "a")
	for _, d := range []string{"binlogs", "redo"} {
		if err := os.Mkdir(filepath.Join(a, d), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	// The redo log moves out of a datadir made by a first start (a
	// server does not create a missing one).
	testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "snap-a0", DataDir: filepath.Join(a, "data"), ExtraArgs: []string{"--log-bin=" + filepath.Join(a, "binlogs", "binlog")}}).Stop()
	if err := os.Rename(filepath.Join(a, "data", physical.RedoLogName), filepath.Join(a, "redo", physical.RedoLogName)); err != nil {
		t.Fatal(err)
	}
	srvA := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "snap-a", DataDir: filepath.Join(a, "data"), ExtraArgs: []string{
		"--log-bin=" + filepath.Join(a, "binlogs", "binlog"), "--innodb-log-group-home-dir=" + filepath.Join(a, "redo")}})
	m, _, err := backup(t, r, e, srvA.DSN)
	if err != nil {
		t.Fatal(err)
	}
	var binlogs, inData int
	var redoHoles bool
	for _, s := range m.Streams {
		if strings.HasPrefix(s.Name, "files/binlog/binlog.0") {
			binlogs++
		}
		if strings.HasPrefix(s.Name, "files/datadir/binlog.0") {
			inData++
		}
		if s.Name == "files/redo/"+physical.RedoLogName {
			redoHoles = s.GetMetadata()["holes"] != ""
		}
	}
	if binlogs == 0 || inData != 0 {
		t.Errorf("%d binlog files in the binlog root, %d in the datadir", binlogs, inData)
	}
	// The redo log in its own root is still found, and cut to its window.
	if note := m.EngineMetadata[MetaRedo]; !redoHoles || strings.HasPrefix(note, "whole") || note == "" {
		t.Errorf("redo log in its own directory: holes %v, %s %q", redoHoles, MetaRedo, note)
	}
	srvA.Stop()

	b := vol.Subvolume(t, "b")
	srvB := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "snap-b", DataDir: b})
	m, _, err = backup(t, r, e, srvB.DSN)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range m.Streams {
		if strings.Contains(s.Name, SnapshotDirName) {
			t.Errorf("stored %s", s.Name)
		}
	}
	if _, err := os.Stat(filepath.Join(b, SnapshotDirName)); err == nil {
		t.Errorf("%s created inside a datadir that is the subvolume's top", SnapshotDirName)
	}
	if left := leftSnapshots(t, vol.Mount); len(left) != 0 {
		t.Errorf("snapshots left beside the subvolume: %v", left)
	}
	srvB.Stop()

	c, u := vol.Subvolume(t, "c"), vol.Subvolume(t, "u")
	srvC := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "snap-c", DataDir: filepath.Join(c, "data"), ExtraArgs: []string{"--innodb-undo-directory=" + u}})
	_, _, err = backup(t, r, e, srvC.DSN)
	t.Logf("refused: %v", err)
	if !errors.Is(err, ErrNotSnapshottable) || !strings.Contains(err.Error(), u) || !strings.Contains(err.Error(), "one snapshot cannot hold both") {
		t.Errorf("undo on another subvolume: %v", err)
	}
	if left := leftSnapshots(t, c); len(left) != 0 {
		t.Errorf("snapshots left after a refusal: %v", left)
	}
}

type nopSink struct{ engines.Sink }

// TestBtrfsSpaceExhausted: a real Btrfs volume with less free space than a
// snapshot needs for the server's writes while it is held (a ballast file
// leaves 32 MiB, under selection's 64 MiB floor): the backup is refused
// before the lock as a capability failure (engines.ErrCapability, which
// lets engine auto fall back) saying the snapshot space is exhausted, with
// no snapshot and no manifest left, and the server still takes writes.
// With the ballast gone the same engine backs up.
func TestBtrfsSpaceExhausted(t *testing.T) {
	b := testenv.StartBtrfs(t, "1G")
	sub := b.Subvolume(t, "mysql")
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{DataDir: filepath.Join(sub, "data"), Name: "snap-full"})
	src.Exec(t, "CREATE DATABASE shop", "CREATE TABLE shop.t (id INT PRIMARY KEY, b VARBINARY(1000))")
	r, _ := newRepo(t)
	e := New()
	e.StateDir = t.TempDir()

	release := b.Fill(t, 32<<20)
	if free := b.Free(t); free >= selection.MinSnapshotFree {
		t.Fatalf("%d bytes free after the fill: the test needs less than %d", free, selection.MinSnapshotFree)
	}
	_, _, err := backup(t, r, e, src.DSN)
	if !errors.Is(err, engines.ErrCapability) || !strings.Contains(err.Error(), "snapshot space exhausted: Btrfs subvolume "+sub+" has ") ||
		!strings.Contains(err.Error(), "use --engine mariabackup") {
		t.Fatalf("backup on a full volume: %v, want a capability failure saying the snapshot space is exhausted", err)
	}
	t.Logf("refused: %v", err)
	if left := leftSnapshots(t, sub); len(left) != 0 {
		t.Errorf("snapshots left after the refusal: %v", left)
	}
	if ms, err := r.Manifests(context.Background()); err != nil || len(ms) != 0 {
		t.Errorf("manifests after the refusal: %v %v", ms, err)
	}
	src.Exec(t, "INSERT INTO shop.t SELECT seq, RANDOM_BYTES(1000) FROM shop.seq_1_to_1000")

	release()
	if free := b.Free(t); free < 2*selection.MinSnapshotFree {
		t.Fatalf("%d bytes free after the ballast is gone", free)
	}
	m, _, err := backup(t, r, e, src.DSN)
	if err != nil {
		t.Fatalf("backup with the space back: %v", err)
	}
	out := restoreAndStart(t, r, m, "snap-full-restored")
	testenv.Compare(t, src.DB(t), out.DB(t), "shop")
}

// TestBtrfsQgroupExhausted: the datadir is a subvolume's top, so its
// snapshots go to .tidemark-snapshots in the parent subvolume, which is at
// its Btrfs qgroup limit (quota enabled, a ballast filling the limit). The
// filesystem has plenty of free space and the server's own subvolume no
// limit, so the free-space check passes and the server keeps writing, but
// `btrfs subvolume snapshot` fails with EDQUOT (its metadata is charged to
// the parent): a capability failure (snapshot space exhausted) that
// engine auto falls back from, with no snapshot and no manifest left.
func TestBtrfsQgroupExhausted(t *testing.T) {
	b := testenv.StartBtrfs(t, "1G")
	outer := b.Subvolume(t, "outer")
	datadir := filepath.Join(outer, "mysql")
	if out, err := exec.Command("btrfs", "subvolume", "create", datadir).CombinedOutput(); err != nil {
		t.Fatalf("btrfs subvolume create: %v: %s", err, out)
	}
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{DataDir: datadir, Name: "snap-quota"})
	src.Exec(t, "CREATE DATABASE shop", "CREATE TABLE shop.t (id INT PRIMARY KEY, b VARBINARY(1000))")
	btrfs := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("btrfs", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("btrfs %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	btrfs("quota", "enable", b.Mount)
	btrfs("quota", "rescan", "-w", b.Mount)
	var id string
	for _, l := range strings.Split(btrfs("subvolume", "show", outer), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "Subvolume" && f[1] == "ID:" {
			id = f[2]
		}
	}
	if id == "" {
		t.Fatal("no subvolume id for " + outer)
	}
	// The snapshot directory exists (a previous backup made it); then the
	// parent subvolume's qgroup is filled to its limit.
	if err := os.Mkdir(filepath.Join(outer, SnapshotDirName), 0o700); err != nil {
		t.Fatal(err)
	}
	ballast, err := os.Create(filepath.Join(outer, "ballast"))
	if err != nil {
		t.Fatal(err)
	}
	btrfs("qgroup", "limit", "4M", "0/"+id, b.Mount)
	chunk := make([]byte, 64<<10)
	var full error
	for i := 0; i < 128 && full == nil; i++ { // up to 8 MiB: past the 4 MiB limit
		if _, full = ballast.Write(chunk); full == nil {
			full = ballast.Sync()
		}
	}
	_ = ballast.Close()
	if !errors.Is(full, syscall.EDQUOT) {
		t.Fatalf("8 MiB written into a subvolume limited to 4 MiB: %v, want EDQUOT", full)
	}
	btrfs("filesystem", "sync", b.Mount)

	r, _ := newRepo(t)
	e := New()
	e.StateDir = t.TempDir()
	_, _, err = backup(t, r, e, src.DSN)
	t.Logf("refused: %v", err)
	if !errors.Is(err, engines.ErrCapability) || !strings.Contains(err.Error(), "snapshot space exhausted: no room for a snapshot of "+datadir+" in "+filepath.Join(outer, SnapshotDirName)) ||
		!strings.Contains(strings.ToLower(err.Error()), "quota exceeded") {
		t.Fatalf("backup into a parent at its qgroup limit: %v, want a capability failure saying the snapshot space is exhausted", err)
	}
	if left := leftSnapshots(t, outer); len(left) != 0 {
		t.Errorf("snapshots left after the refusal: %v", left)
	}
	if ms, err := r.Manifests(context.Background()); err != nil || len(ms) != 0 {
		t.Errorf("manifests after the refusal: %v %v", ms, err)
	}
	src.Exec(t, "INSERT INTO shop.t SELECT seq, RANDOM_BYTES(1000) FROM shop.seq_1_to_5000")
}
