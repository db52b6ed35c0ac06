package testenv

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// recorder is a testing.TB that records failures and skips instead of
// reporting them, to test helpers whose job is to fail or skip. Like the real
// ones, Fatal* and Skip* end the calling goroutine, so call through record.
// Everything else (Helper, Logf, Cleanup, TempDir) goes to the real test.
type recorder struct {
	testing.TB
	mu      sync.Mutex
	errs    []string
	fatal   bool
	skipped bool
}

func (r *recorder) add(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, msg)
}

func (r *recorder) Error(args ...any)                 { r.add(fmt.Sprint(args...)) }
func (r *recorder) Errorf(format string, args ...any) { r.add(fmt.Sprintf(format, args...)) }
func (r *recorder) Fatal(args ...any)                 { r.fatalNow(fmt.Sprint(args...)) }
func (r *recorder) Fatalf(format string, args ...any) { r.fatalNow(fmt.Sprintf(format, args...)) }
func (r *recorder) Skip(args ...any)                  { r.skipNow(fmt.Sprint(args...)) }
func (r *recorder) Skipf(format string, args ...any)  { r.skipNow(fmt.Sprintf(format, args...)) }

func (r *recorder) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errs) > 0
}

func (r *recorder) fatalNow(msg string) {
	r.add(msg)
	r.mu.Lock()
	r.fatal = true
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recorder) skipNow(msg string) {
	r.mu.Lock()
	r.skipped = true
	r.errs = append(r.errs, "SKIP: "+msg)
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recorder) messages() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.errs, "\n")
}

// record runs f with a recorder in its own goroutine, which Fatal and Skip may
// end without ending the test's.
func record(t *testing.T, f func(tb testing.TB)) *recorder {
	t.Helper()
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

// pidAlive reports whether pid is a live process. A zombie counts as dead:
// an orphaned server is reaped by pid 1, and in containers that may be late or
// never.
func pidAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) state ...": comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

func queryString(t *testing.T, db *sql.DB, q string, args ...any) string {
	t.Helper()
	var s string
	if err := db.QueryRow(q, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return s
}

const missingBinary = "tidemark-testenv-no-such-binary"

func TestRequireBinaryMissingSkipsOutsideCI(t *testing.T) {
	t.Setenv("CI", "")
	var inner *testing.T
	t.Run("inner", func(t *testing.T) {
		inner = t
		RequireBinary(t, missingBinary, "apt-get install -y nothing")
		t.Error("RequireBinary returned for a missing binary")
	})
	if !inner.Skipped() {
		t.Error("outside CI a missing binary must skip the test")
	}
	r := record(t, func(tb testing.TB) { RequireBinary(tb, missingBinary, "apt-get install -y nothing") })
	if !r.skipped || r.fatal {
		t.Errorf("skipped=%v fatal=%v, want a skip", r.skipped, r.fatal)
	}
	if msg := r.messages(); !strings.Contains(msg, missingBinary) || !strings.Contains(msg, "apt-get install -y nothing") {
		t.Errorf("skip message %q lacks the binary name or the install command", msg)
	}
}

func TestRequireBinaryMissingFailsInCI(t *testing.T) {
	t.Setenv("CI", "true")
	r := record(t, func(tb testing.TB) { RequireBinary(tb, missingBinary, MinIOInstallHint) })
	if !r.fatal || r.skipped {
		t.Errorf("fatal=%v skipped=%v, want a failure in CI", r.fatal, r.skipped)
	}
	if msg := r.messages(); !strings.Contains(msg, missingBinary) || !strings.Contains(msg, MinIOInstallHint) {
		t.Errorf("failure message %q lacks the binary name or the install command", msg)
	}
}

func TestRequireBinaryFindsRepoBin(t *testing.T) {
	root := RepoRoot()
	if root == "" {
		t.Fatal("RepoRoot found no go.mod of " + modulePath)
	}
	if got := RequireBinary(t, "sh", "apt-get install -y dash"); !filepath.IsAbs(got) {
		t.Errorf("RequireBinary(sh) = %q, want an absolute path", got)
	}
	want := filepath.Join(root, ".bin", "minio")
	if _, err := os.Stat(want); err != nil {
		t.Skipf("no %s to find: %v", want, err)
	}
	t.Setenv("PATH", "/nonexistent")
	if got := RequireBinary(t, "minio", MinIOInstallHint); got != want {
		t.Errorf("RequireBinary(minio) without PATH = %q, want %q", got, want)
	}
}

func TestMariaDB(t *testing.T) {
	m := StartMariaDB(t)
	db := m.DB(t)
	if got := queryString(t, db, "SELECT 1"); got != "1" {
		t.Errorf("SELECT 1 = %s", got)
	}
	for v, want := range map[string]string{
		"log_bin":       "1",
		"binlog_format": "ROW",
		"local_infile":  "1",
		"server_id":     fmt.Sprint(m.ServerID),
		"port":          fmt.Sprint(m.Port),
		"datadir":       m.DataDir + "/",
		"socket":        m.Socket,
	} {
		if got := queryString(t, db, "SELECT @@"+v); got != want {
			t.Errorf("@@%s = %q, want %q", v, got, want)
		}
	}

	// Exec runs as root, all statements on one connection.
	m.Exec(t, "CREATE DATABASE x", "SET @v := 'same session'", "CREATE TABLE x.t ENGINE=InnoDB AS SELECT @v AS v")
	if got := queryString(t, db, "SELECT v FROM x.t"); got != "same session" {
		t.Errorf("Exec ran its statements on different connections: v = %q", got)
	}
	if got := queryString(t, db, "SELECT CURRENT_USER()"); got != "tidemark@%" {
		t.Errorf("DB connects as %s, want tidemark@%%", got)
	}

	// root over the socket too.
	sock, err := sql.Open("mysql", "root@unix("+m.Socket+")/")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sock.Close() }()
	if got := queryString(t, sock, "SELECT COUNT(*) FROM x.t"); got != "1" {
		t.Errorf("over the socket: %s rows", got)
	}
}

func TestMariaDBParallelStart(t *testing.T) {
	var (
		mu  sync.Mutex
		ids = map[string]string{}
	)
	start := time.Now()
	var ready time.Duration
	t.Run("group", func(t *testing.T) {
		for i := range 3 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				s := time.Now()
				m := StartMariaDB(t)
				id := queryString(t, m.DB(t), "SELECT @@server_id")
				mu.Lock()
				defer mu.Unlock()
				ready = max(ready, time.Since(start))
				t.Logf("instance %d ready in %v, server_id %s", i, time.Since(s), id)
				if other, dup := ids[id]; dup {
					t.Errorf("server_id %s shared by instances %s and %d", id, other, i)
				}
				ids[id] = fmt.Sprint(i)
			})
		}
	})
	total := time.Since(start)
	t.Logf("3 instances in parallel: all ready after %v, started and stopped in %v", ready, total)
	if total > 30*time.Second {
		t.Errorf("3 parallel instances took %v, want a few seconds", total)
	}
}

func TestMariaDBCleanup(t *testing.T) {
	var pid int
	var dir string
	t.Run("instance", func(t *testing.T) {
		m := StartMariaDB(t)
		pid, dir = m.Pid(), filepath.Dir(m.DataDir)
		if !pidAlive(pid) {
			t.Fatalf("mariadbd pid %d not running", pid)
		}
	})
	if pidAlive(pid) {
		t.Errorf("mariadbd pid %d still alive after cleanup", pid)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("instance directory %s left behind (stat: %v)", dir, err)
	}
}

func TestMariaDBKillRestart(t *testing.T) {
	m := StartMariaDB(t)
	m.Exec(t, "CREATE DATABASE k", "CREATE TABLE k.t (id INT PRIMARY KEY) ENGINE=InnoDB", "INSERT INTO k.t VALUES (1), (2), (3)")
	pid := m.Pid()
	m.Kill()
	if pidAlive(pid) {
		t.Fatalf("mariadbd pid %d alive after Kill", pid)
	}
	m.Stop() // idempotent, also after Kill
	m.Restart(t)
	if m.Pid() == pid {
		t.Errorf("Restart kept pid %d", pid)
	}
	// Committed rows survive a crash: trx-commit=2 leaves them in the page cache.
	if got := queryString(t, m.DB(t), "SELECT COUNT(*) FROM k.t"); got != "3" {
		t.Errorf("after crash recovery k.t has %s rows, want 3", got)
	}
	m.Stop()
	m.Stop()
}

func TestMariaDBExtraArgs(t *testing.T) {
	m := StartMariaDB(t, MariaDBOptions{Name: "extra", ExtraArgs: []string{"--server-id=4242", "--binlog-format=MIXED", "--gtid-domain-id=7"}})
	if m.ServerID != 4242 {
		t.Errorf("ServerID = %d, want 4242 from ExtraArgs", m.ServerID)
	}
	db := m.DB(t)
	for v, want := range map[string]string{"server_id": "4242", "binlog_format": "MIXED", "gtid_domain_id": "7"} {
		if got := queryString(t, db, "SELECT @@"+v); got != want {
			t.Errorf("@@%s = %q, want %q", v, got, want)
		}
	}
	if !strings.Contains(filepath.Base(filepath.Dir(m.DataDir)), "tidemark-mariadb-extra-") {
		t.Errorf("Name not in the instance directory %s", m.DataDir)
	}
}

func TestMariaDBStartFailureShowsLog(t *testing.T) {
	label := fmt.Sprintf("badopt%d", os.Getpid())
	t.Run("instance", func(t *testing.T) {
		r := record(t, func(tb testing.TB) {
			StartMariaDB(tb, MariaDBOptions{Name: label, ExtraArgs: []string{"--no-such-option-for-tidemark"}})
		})
		msg := r.messages()
		if !r.fatal {
			t.Fatalf("StartMariaDB with a bad option did not fail: %s", msg)
		}
		if !strings.Contains(msg, "tail of") || !strings.Contains(msg, "no-such-option-for-tidemark") {
			t.Errorf("failure lacks the error log tail:\n%s", msg)
		}
	})
	left, _ := filepath.Glob(filepath.Join(os.TempDir(), "tidemark-mariadb-"+label+"-*"))
	if len(left) > 0 {
		t.Errorf("failed start left %v behind", left)
	}
}

func TestMinIO(t *testing.T) {
	var pid int
	var dir string
	t.Run("instance", func(t *testing.T) {
		m := StartMinIO(t)
		pid, dir = m.Pid(), filepath.Dir(m.DataDir)
		c, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		m.NewBucket(t, "second")
		for _, bucket := range []string{m.Bucket, "second"} {
			data := bytes.Repeat([]byte("tidemark\x00"), 100_000)
			if _, err := c.PutObject(ctx, bucket, "a/b/object", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
				t.Fatalf("put into %s: %v", bucket, err)
			}
			obj, err := c.GetObject(ctx, bucket, "a/b/object", minio.GetObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(obj)
			_ = obj.Close()
			if err != nil {
				t.Fatalf("get from %s: %v", bucket, err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("%s: got %d bytes back, want the %d stored", bucket, len(got), len(data))
			}
		}
	})
	if pid == 0 {
		return
	}
	if pidAlive(pid) {
		t.Errorf("minio pid %d still alive after cleanup", pid)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("minio directory %s left behind (stat: %v)", dir, err)
	}
}

func TestSampleCompare(t *testing.T) {
	const rows = 3000
	ma, mb := StartMariaDB(t), StartMariaDB(t)
	a, b := ma.DB(t), mb.DB(t)
	for _, db := range []*sql.DB{a, b} {
		s := time.Now()
		LoadSample(t, db, "shop", rows)
		t.Logf("LoadSample(%d rows) in %v", rows, time.Since(s))
	}

	sums := Checksums(t, a, "shop")
	want := map[string]int64{"shop.customers": rows / 10, "shop.orders": rows, "shop.audit_log": rows / 4, "shop.legacy_counters": rows / 20}
	if len(sums) != len(want) {
		t.Errorf("Checksums = %v, want the base tables %v only", sums, want)
	}
	for name, n := range want {
		if sums[name].Rows != n || sums[name].Checksum == 0 {
			t.Errorf("%s: %+v, want %d rows and a checksum", name, sums[name], n)
		}
	}
	for q, want := range map[string]string{
		"SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA='shop' AND TABLE_NAME='legacy_counters'":                          "MyISAM",
		"SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA='shop' AND TABLE_NAME='audit_log' AND INDEX_NAME='PRIMARY'": "0",
		"SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA='shop' AND TABLE_NAME='customer_order_totals'":                "VIEW",
		"SELECT SUM(orders) FROM shop.customer_order_totals":                                                                               fmt.Sprint(rows),
		"SELECT COUNT(*) > 0 FROM shop.orders WHERE note IS NULL":                                                                          "1",
		"SELECT COUNT(*) > 0 FROM shop.orders WHERE note LIKE '%🎁%'":                                                                       "1",
		"SELECT COUNT(*) > 0 FROM shop.orders WHERE LOCATE(x'00', payload) > 0":                                                            "1",
		"SELECT COUNT(*) > COUNT(DISTINCT at, actor, action) FROM shop.audit_log":                                                          "1",
	} {
		if got := queryString(t, a, q); got != want {
			t.Errorf("%s = %s, want %s", q, got, want)
		}
	}

	s := time.Now()
	Compare(t, a, b, "shop")
	t.Logf("Compare in %v", time.Since(s))

	mb.Exec(t, "UPDATE shop.orders SET total = total + 0.01 WHERE id = 17")
	r := record(t, func(tb testing.TB) { Compare(tb, a, b, "shop") })
	if msg := r.messages(); len(r.errs) != 1 || !strings.Contains(msg, "shop.orders") || r.fatal {
		t.Errorf("Compare after a changed row reported:\n%s\nwant one error naming shop.orders", msg)
	}

	mb.Exec(t, "DROP TABLE shop.legacy_counters")
	r = record(t, func(tb testing.TB) { Compare(tb, a, b, "shop") })
	if msg := r.messages(); len(r.errs) != 2 || !strings.Contains(msg, "shop.legacy_counters missing on b") {
		t.Errorf("Compare after a dropped table reported:\n%s\nwant shop.orders and shop.legacy_counters", msg)
	}

	r = record(t, func(tb testing.TB) { Compare(tb, a, b, "no_such_schema") })
	if msg := r.messages(); len(r.errs) != 2 || !strings.Contains(msg, "schema no_such_schema missing on a") {
		t.Errorf("Compare of a missing schema reported:\n%s\nwant it missing on both sides", msg)
	}
}

// TestServersDieWithTestBinary runs this test binary again as a child that
// starts mariadbd and MinIO and then hangs, SIGKILLs the child, and expects
// the kernel (Pdeathsig) to kill both servers.
func TestServersDieWithTestBinary(t *testing.T) {
	if os.Getenv("TIDEMARK_TESTENV_CHILD") == "1" {
		m := StartMariaDB(t)
		fmt.Printf("SERVER %d %s\n", m.Pid(), filepath.Dir(m.DataDir))
		if _, err := os.Stat(filepath.Join(RepoRoot(), ".bin", "minio")); err == nil || CI() {
			mc := StartMinIO(t)
			fmt.Printf("SERVER %d %s\n", mc.Pid(), filepath.Dir(mc.DataDir))
		}
		fmt.Println("READY")
		select {}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestServersDieWithTestBinary$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TIDEMARK_TESTENV_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	type server struct {
		pid int
		dir string
	}
	var servers []server
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "READY" {
		var s server
		if _, err := fmt.Sscanf(sc.Text(), "SERVER %d %s", &s.pid, &s.dir); err == nil {
			servers = append(servers, s)
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if len(servers) == 0 {
		t.Fatal("the child started no server")
	}
	for _, s := range servers {
		deadline := time.Now().Add(Wait(10 * time.Second))
		for pidAlive(s.pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if pidAlive(s.pid) {
			t.Errorf("server pid %d outlived its test binary", s.pid)
			_ = syscall.Kill(s.pid, syscall.SIGKILL)
		}
		// The child had no chance to clean up; its directories are ours to remove.
		if err := os.RemoveAll(s.dir); err != nil {
			t.Error(err)
		}
	}
}

// busyPortOnce makes the next freePort call return port (by default one that
// a silent listener of the test holds), as if another process had taken it in
// between. It swaps a package variable: not for parallel tests.
func busyPortOnce(t *testing.T, port int) {
	if port == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		port = l.Addr().(*net.TCPAddr).Port
	}
	orig := freePort
	t.Cleanup(func() { freePort = orig })
	var once sync.Once
	freePort = func() (int, error) {
		busy := 0
		once.Do(func() { busy = port })
		if busy != 0 {
			return busy, nil
		}
		return orig()
	}
}

func TestPortCollisionRetried(t *testing.T) {
	t.Run("mariadb", func(t *testing.T) {
		busyPortOnce(t, 0)
		m := StartMariaDB(t)
		if got := queryString(t, m.DB(t), "SELECT @@port"); got != fmt.Sprint(m.Port) {
			t.Errorf("@@port = %s, want %d", got, m.Port)
		}
		var file, pos, doDB, ignoreDB string
		if err := m.DB(t).QueryRow("SHOW MASTER STATUS").Scan(&file, &pos, &doDB, &ignoreDB); err != nil {
			t.Fatal(err)
		}
		if file != "binlog.000001" {
			t.Errorf("current binlog %s: the retry did not start from a pristine datadir", file)
		}
	})
	// Readiness must not mistake the server holding the port for ours: all
	// testenv roots are alike.
	t.Run("mariadb taken by mariadb", func(t *testing.T) {
		other := StartMariaDB(t)
		busyPortOnce(t, other.Port)
		m := StartMariaDB(t)
		if m.Port == other.Port {
			t.Fatalf("both servers claim port %d", m.Port)
		}
		if got := queryString(t, m.DB(t), "SELECT @@server_id"); got != fmt.Sprint(m.ServerID) {
			t.Errorf("DSN reaches server_id %s, want %d", got, m.ServerID)
		}
	})
	t.Run("minio", func(t *testing.T) {
		busyPortOnce(t, 0)
		m := StartMinIO(t)
		m.NewBucket(t, "after-retry")
	})
}

// TestMariaDBOwnDataDir: a server initializes a datadir the test names,
// and a second server started on it after the first stopped sees its data.
func TestMariaDBOwnDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "own")
	m := StartMariaDB(t, MariaDBOptions{DataDir: dir})
	m.Exec(t, "CREATE DATABASE kept", "CREATE TABLE kept.t (id INT PRIMARY KEY)", "INSERT INTO kept.t VALUES (42)")
	m.Stop()
	m2 := StartMariaDB(t, MariaDBOptions{DataDir: dir, Name: "reopened"})
	var id int
	if err := m2.DB(t).QueryRow("SELECT id FROM kept.t").Scan(&id); err != nil || id != 42 {
		t.Fatalf("data of the first server: %d, %v", id, err)
	}
	m2.Stop()
	if _, err := os.Stat(filepath.Join(dir, "ibdata1")); err != nil {
		t.Errorf("the test's datadir was removed: %v", err)
	}
}
