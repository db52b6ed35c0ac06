package clone

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Every test here runs against testenv.CloneDouble: MySQL 8.0's clone
// plugin as its documentation describes it, in front of a real MariaDB
// whose files the "clone" copies. They check what Tidemark sends, in what
// order, on which connection, and what it leaves behind; not how MySQL
// itself clones.

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

func backup(ctx context.Context, t *testing.T, r *archive.Repo, e *Engine, dsn string, progress func(engines.Progress)) (*v1.Manifest, *engines.BackupResult, error) {
	t.Helper()
	var res *engines.BackupResult
	m, err := r.WithBackup(ctx, archive.BackupOptions{Engine: Name, Instance: "test"}, func(ctx context.Context, b *archive.Backup) error {
		var err error
		res, err = e.Backup(ctx, engines.BackupParams{DSN: dsn, Parallel: 2, Sink: engines.ArchiveSink(b), Progress: progress})
		return err
	})
	return m, res, err
}

// source starts a MariaDB with some data and the clone double before it.
func source(t *testing.T) (*testenv.MariaDB, *testenv.CloneDouble) {
	t.Helper()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "clone-src"})
	rows := 20000
	if testing.Short() {
		rows = 5000
	}
	src.Exec(t, "CREATE DATABASE shop", "CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, b VARBINARY(200))",
		fmt.Sprintf("INSERT INTO shop.items SELECT seq, CONCAT('item-', seq), RANDOM_BYTES(200) FROM shop.seq_1_to_%d", rows),
		"CREATE TABLE shop.notes (id INT PRIMARY KEY, note TEXT) ENGINE=Aria",
		"INSERT INTO shop.notes VALUES (1, 'non-transactional'), (2, 'too')")
	return src, testenv.StartCloneDouble(t, src)
}

// scratchLeft lists the clone directories and lock files beside the
// datadir.
func scratchLeft(t *testing.T, src *testenv.MariaDB) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(filepath.Dir(src.DataDir), ScratchPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func stmtIndex(log []testenv.Statement, prefix string) int {
	for i, s := range log {
		if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(s.SQL)), strings.ToUpper(prefix)) {
			return i
		}
	}
	return -1
}

// TestBackup: the statements, their order and connections; progress
// followed from clone_progress while CLONE runs (the clone is held after
// its first file so a poll must see it midway); the consistency point
// from clone_status; the physical layout; no scratch directory left.
func TestBackup(t *testing.T) {
	src, d := source(t)
	r, _ := newRepo(t)
	e := &Engine{Poll: 20 * time.Millisecond}
	held := d.Hold()
	var mu sync.Mutex
	var seen []engines.Progress
	midway := make(chan struct{})
	var once sync.Once
	progress := func(p engines.Progress) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, p)
		if p.Phase == "clone" && p.BytesDone > 0 && p.BytesDone < p.BytesTotal {
			once.Do(func() { close(midway) })
		}
	}
	go func() {
		select {
		case <-held:
		case <-time.After(testenv.Wait(time.Minute)):
		}
		select {
		case <-midway:
		case <-time.After(testenv.Wait(30 * time.Second)):
		}
		d.Release()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(3*time.Minute))
	defer cancel()
	m, res, err := backup(ctx, t, r, e, d.DSN, progress)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-midway:
	default:
		t.Errorf("no progress midway through the clone; seen %+v", seen)
	}
	mu.Lock()
	var last engines.Progress
	for _, p := range seen {
		if p.Phase == "clone" {
			last = p
		}
	}
	mu.Unlock()
	if last.BytesDone == 0 || last.BytesDone != last.BytesTotal {
		t.Errorf("last clone progress %+v, want done == total > 0", last)
	}

	// What was sent, in what order, where.
	log := d.Log()
	order := []string{"SELECT PLUGIN_STATUS FROM information_schema.PLUGINS", "SHOW GRANTS", "SELECT @@datadir", "SELECT CONNECTION_ID()", "CLONE LOCAL DATA DIRECTORY"}
	prev := -1
	cloneConn := testenv.ConnOf(log, "CLONE LOCAL DATA DIRECTORY")
	for _, o := range order {
		i := stmtIndex(log, o)
		if i < 0 || i < prev {
			t.Fatalf("%q missing or out of order (index %d after %d) in %v", o, i, prev, log)
		}
		if log[i].Conn != cloneConn {
			t.Errorf("%q ran on connection %d, CLONE on %d: the checks and CLONE share one session", o, log[i].Conn, cloneConn)
		}
		prev = i
	}
	cloneSeq := log[stmtIndex(log, "CLONE LOCAL")].Seq
	var progressPolls, statusAfter int
	for _, s := range log {
		up := strings.ToUpper(s.SQL)
		if strings.Contains(up, "INSTALL PLUGIN") {
			t.Errorf("Tidemark sent %q: it must never install the plugin", s.SQL)
		}
		if strings.Contains(up, "CLONE_PROGRESS") && s.Seq > cloneSeq {
			progressPolls++
			if s.Conn == cloneConn {
				t.Errorf("clone_progress read on the CLONE connection")
			}
		}
		if strings.Contains(up, "CLONE_STATUS") && s.Seq > cloneSeq {
			statusAfter++
			if s.Conn == cloneConn {
				t.Errorf("clone_status read on the CLONE connection")
			}
		}
	}
	if progressPolls == 0 || statusAfter == 0 {
		t.Errorf("after CLONE: %d clone_progress polls, %d clone_status reads; want both", progressPolls, statusAfter)
	}
	dir := m.EngineMetadata[MetaScratch]
	if !strings.HasPrefix(filepath.Base(dir), ScratchPrefix+tag(mustEval(t, src.DataDir))+"-") || filepath.Dir(dir) != mustEval(t, filepath.Dir(src.DataDir)) {
		t.Errorf("scratch directory %q: want %s<tag>-… beside the datadir %s", dir, ScratchPrefix, src.DataDir)
	}
	if !strings.Contains(log[stmtIndex(log, "CLONE LOCAL")].SQL, "'"+dir+"'") {
		t.Errorf("CLONE statement %q does not name %s", log[stmtIndex(log, "CLONE LOCAL")].SQL, dir)
	}

	// The coordinates are clone_status's: the backend's, recorded by the
	// double when it copied (nothing was written since).
	var file string
	var pos uint64
	var gtid string
	db := src.DB(t)
	rows, err := db.Query("SHOW MASTER STATUS")
	if err != nil {
		t.Fatal(err)
	}
	if rows.Next() {
		cols, _ := rows.Columns()
		vals := make([]any, len(cols))
		vals[0], vals[1] = &file, &pos
		for i := 2; i < len(cols); i++ {
			vals[i] = new(any)
		}
		if err := rows.Scan(vals...); err != nil {
			t.Fatal(err)
		}
	}
	_ = rows.Close()
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&gtid); err != nil {
		t.Fatal(err)
	}
	c := m.Consistency
	if c.GetBinlogFile() != file || c.GetBinlogPosition() != pos || c.GetGtidSet() != gtid || c.GetTime() == nil {
		t.Errorf("consistency %v, want %s:%d gtid %q with a time", c, file, pos, gtid)
	}
	if m.Server.GetFlavor() != mysqlx.MySQL || m.Engine != Name || m.LockDuration.AsDuration() != 0 {
		t.Errorf("manifest: server %v engine %s lock %v", m.Server, m.Engine, m.LockDuration.AsDuration())
	}
	if res.Files == 0 || len(res.Warnings) != 0 {
		t.Errorf("result %+v", res)
	}
	var sawIbdata, sawBinlog bool
	for _, s := range m.Streams {
		sawIbdata = sawIbdata || s.Name == "files/datadir/ibdata1"
		sawBinlog = sawBinlog || strings.HasPrefix(s.Name, "files/datadir/binlog.")
	}
	if !sawIbdata || sawBinlog {
		t.Errorf("streams: ibdata1 %v (want true), a binlog %v (want false: a clone has none)", sawIbdata, sawBinlog)
	}
	if left := scratchLeft(t, src); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

func mustEval(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestBadInput: every refusal names what is wrong and how to fix it, and
// none sends CLONE or leaves a directory.
func TestBadInput(t *testing.T) {
	src, d := source(t)
	r, _ := newRepo(t)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(2*time.Minute))
	defer cancel()
	noClone := func(t *testing.T) {
		t.Helper()
		for _, s := range d.Log() {
			if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(s.SQL)), "CLONE") || strings.Contains(strings.ToUpper(s.SQL), "INSTALL PLUGIN") {
				t.Errorf("sent %q", s.SQL)
			}
		}
		if left := scratchLeft(t, src); len(left) != 0 {
			t.Errorf("left behind: %v", left)
		}
	}

	t.Run("plugin missing", func(t *testing.T) {
		d.SetPlugin("")
		defer d.SetPlugin("ACTIVE")
		if err := (&Engine{}).Check(ctx, d.DSN); !errors.Is(err, ErrPluginMissing) {
			t.Errorf("Check: %v", err)
		}
		_, _, err := backup(ctx, t, r, &Engine{}, d.DSN, nil)
		if !errors.Is(err, ErrPluginMissing) || !strings.Contains(fmt.Sprint(err), "INSTALL PLUGIN clone SONAME 'mysql_clone.so'") || !strings.Contains(fmt.Sprint(err), "--plugin-load-add=mysql_clone.so") {
			t.Errorf("err = %v", err)
		}
		noClone(t)
	})
	t.Run("plugin disabled", func(t *testing.T) {
		d.SetPlugin("DISABLED")
		defer d.SetPlugin("ACTIVE")
		_, _, err := backup(ctx, t, r, &Engine{}, d.DSN, nil)
		if !errors.Is(err, ErrPluginMissing) || !strings.Contains(fmt.Sprint(err), "DISABLED") {
			t.Errorf("err = %v", err)
		}
		noClone(t)
	})
	t.Run("privilege missing", func(t *testing.T) {
		d.SetBackupAdmin(false)
		defer d.SetBackupAdmin(true)
		_, _, err := backup(ctx, t, r, &Engine{}, d.DSN, nil)
		if !errors.Is(err, mysqlx.ErrPrivilege) || !strings.Contains(fmt.Sprint(err), "GRANT BACKUP_ADMIN ON *.*") {
			t.Errorf("err = %v", err)
		}
		noClone(t)
	})
	t.Run("MariaDB", func(t *testing.T) {
		if err := (&Engine{}).Check(ctx, src.RootDSN); !errors.Is(err, ErrUnsupported) {
			t.Errorf("Check: %v", err)
		}
		_, _, err := backup(ctx, t, r, &Engine{}, src.RootDSN, nil)
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(fmt.Sprint(err), "--engine mariabackup") || !strings.Contains(fmt.Sprint(err), "--engine snapshot") {
			t.Errorf("err = %v", err)
		}
		noClone(t)
	})
	t.Run("no space", func(t *testing.T) {
		small := testenv.Tmpfs(t, "4m")
		if err := (&Engine{ScratchParent: small}).Check(ctx, d.DSN); !errors.Is(err, ErrNoSpace) {
			t.Errorf("Check: %v", err)
		}
		if err := (&Engine{}).Check(ctx, d.DSN); err != nil {
			t.Errorf("Check with room: %v", err)
		}
		_, _, err := backup(ctx, t, r, &Engine{ScratchParent: small}, d.DSN, nil)
		if !errors.Is(err, ErrNoSpace) || !strings.Contains(fmt.Sprint(err), small) {
			t.Errorf("err = %v", err)
		}
		if ents, _ := os.ReadDir(small); len(ents) != 0 {
			t.Errorf("%s holds %v", small, ents)
		}
		noClone(t)
	})
	t.Run("scratch inside the datadir", func(t *testing.T) {
		_, _, err := backup(ctx, t, r, &Engine{ScratchParent: src.DataDir}, d.DSN, nil)
		if err == nil || !strings.Contains(err.Error(), "inside the datadir") {
			t.Errorf("err = %v", err)
		}
		noClone(t)
	})
	if ms, err := r.Manifests(ctx); err != nil || len(ms) != 0 {
		t.Errorf("manifests after refusals: %d, %v", len(ms), err)
	}
}

// TestFailureCleanup: a disk full mid-clone (the double leaves a
// half-written directory, as a server may) and a canceled backup (KILL
// QUERY of the CLONE connection, sent from the monitoring one, then the
// wait for the statement to end) both remove the scratch directory.
func TestFailureCleanup(t *testing.T) {
	src, d := source(t)
	r, _ := newRepo(t)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(2*time.Minute))
	defer cancel()

	d.FailAfter(1 << 20)
	_, _, err := backup(ctx, t, r, &Engine{}, d.DSN, nil)
	d.FailAfter(-1)
	if !errors.Is(err, mysqlx.ErrDiskFull) {
		t.Errorf("disk full: err = %v", err)
	}
	if d.State() != "Failed" {
		t.Errorf("clone_status STATE %q, want Failed", d.State())
	}
	if left := scratchLeft(t, src); len(left) != 0 {
		t.Errorf("left behind after a failure: %v", left)
	}

	held := d.Hold()
	bctx, bcancel := context.WithCancel(ctx)
	go func() {
		<-held
		bcancel()
	}()
	_, _, err = backup(bctx, t, r, &Engine{Poll: 20 * time.Millisecond}, d.DSN, nil)
	d.Release()
	if !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: err = %v", err)
	}
	log := d.Log()
	cloneConn := 0
	for _, s := range log {
		if strings.HasPrefix(s.SQL, "CLONE LOCAL") {
			cloneConn = s.Conn // the last one
		}
	}
	k := -1
	for i, s := range log {
		if strings.HasPrefix(s.SQL, "KILL QUERY") {
			k = i
		}
	}
	if k < 0 || log[k].Conn == cloneConn {
		t.Errorf("no KILL QUERY from a second connection (CLONE on %d): %v", cloneConn, log)
	}
	if d.State() != "Failed" {
		t.Errorf("clone_status STATE %q after the kill, want Failed", d.State())
	}
	if left := scratchLeft(t, src); len(left) != 0 {
		t.Errorf("left behind after cancellation: %v", left)
	}
	if ms, err := r.Manifests(ctx); err != nil || len(ms) != 0 {
		t.Errorf("manifests: %d, %v", len(ms), err)
	}
}

func TestMain(m *testing.M) { testenv.MainWithLazyTidemark(m) }

// TestRoundTrip: `tidemark backup --engine clone` against the double,
// `tidemark restore --to-datadir` with a mysqld double (the files are
// MariaDB's), a server started on the result has the source's tables.
func TestRoundTrip(t *testing.T) {
	bin := testenv.TidemarkBinary(t)
	src, d := source(t)
	_, repoDir := newRepo(t)
	out, err := exec.Command(bin, "backup", "--engine", "clone", "--mysql", d.DSN, "--repo", "file://"+repoDir).CombinedOutput()
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	id := lines[len(lines)-1]
	t.Logf("backup: %s", out)
	target := filepath.Join(t.TempDir(), "restored")
	out, err = exec.Command(bin, "restore", id, "--repo", "file://"+repoDir, "--to-datadir", target, "--mysqld", testenv.MySQLdDouble(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	restored := testenv.StartMariaDB(t, testenv.MariaDBOptions{DataDir: target, Name: "clone-restored"})
	testenv.Compare(t, src.DB(t), restored.DB(t), "shop")
	if left := scratchLeft(t, src); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestKilledChild: `tidemark backup --engine clone` killed with SIGKILL
// mid-clone leaves the directory, which the server (here the double)
// keeps writing: the engine's cleaner leaves it while clone_status says
// 'In Progress' into it, and removes it (and its lock file) once the clone
// has ended.
func TestKilledChild(t *testing.T) {
	bin := testenv.TidemarkBinary(t)
	src, d := source(t)
	_, repoDir := newRepo(t)
	held := d.Hold()
	c := testenv.NewChild(t, "backup", bin, "backup", "--engine", "clone", "--mysql", d.DSN, "--repo", "file://"+repoDir)
	c.Start()
	select {
	case <-held:
	case <-c.Done():
		t.Fatalf("the backup ended before the clone:\n%s", c.LogTail())
	case <-time.After(testenv.Wait(time.Minute)):
		t.Fatalf("the clone did not start:\n%s", c.LogTail())
	}
	c.Kill()
	left := scratchLeft(t, src)
	if len(left) != 2 {
		t.Fatalf("after the kill: %v, want the directory and its lock file", left)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(time.Minute))
	defer cancel()
	e := New()
	res, err := e.Cleanup(ctx, d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 0 || len(res.Busy) != 1 {
		t.Errorf("cleanup while the server clones: %+v, want it busy", res)
	}
	d.Release()
	testenv.WaitFor(t, "the clone's end", testenv.Wait(time.Minute), func() error {
		if s := d.State(); s != "Completed" {
			return fmt.Errorf("state %q", s)
		}
		return nil
	})
	removed, err := e.CleanLeftovers(ctx, d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 {
		t.Errorf("removed %v, want the killed run's directory", removed)
	}
	if left := scratchLeft(t, src); len(left) != 0 {
		t.Errorf("after the cleanup: %v", left)
	}
	// A MariaDB server is nothing to clean.
	if removed, err := e.CleanLeftovers(ctx, src.RootDSN); err != nil || len(removed) != 0 {
		t.Errorf("on MariaDB: %v, %v", removed, err)
	}
}
