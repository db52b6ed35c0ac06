package testenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // the "mysql" driver for every DSN handed out here
)

// MariaDB is a running mariadbd started by StartMariaDB, listening on
// 127.0.0.1 and on its own socket, with binary logging in ROW format.
type MariaDB struct {
	Host     string // always 127.0.0.1
	Port     int
	Socket   string
	DataDir  string // the server's --datadir (binlogs live here too)
	ServerID uint32 // unique among the servers of all running test processes
	// RootDSN is the go-sql-driver DSN of root over TCP, without a password
	// and without a database: "root@tcp(127.0.0.1:PORT)/". Append a database
	// name and/or "?params" as needed.
	RootDSN string
	// DSN is the same for the user tidemark, which holds ALL PRIVILEGES ON
	// *.* WITH GRANT OPTION: "tidemark@tcp(127.0.0.1:PORT)/". It has no
	// password, so tests can hand the DSN to the CLI on its command line,
	// where the CLI refuses a password; tests of passwords make users of
	// their own.
	DSN string

	name    string
	bin     string
	extra   []string
	dir     string   // the instance directory: datadir, logs, pid file
	dirs    []string // removed on cleanup
	logPath string

	mu   sync.Mutex
	proc *process
	root *sql.DB // lazily opened for Exec; closed when the server stops
}

// MariaDBOptions adjusts one instance.
type MariaDBOptions struct {
	// ExtraArgs are appended to mariadbd's arguments and so override the
	// defaults, e.g. "--gtid-strict-mode=1" or "--binlog-format=MIXED". A
	// "--server-id=N" here becomes ServerID. The port, socket and datadir
	// belong to testenv and must not be overridden.
	ExtraArgs []string
	// Name labels the instance in its directory name and in messages; the
	// default is the test's name.
	Name string
	// DataDir, when set, is the server's datadir instead of one in the
	// instance directory: an existing, non-empty one (a restored datadir)
	// is used as it is; an absent or empty one is initialized there (e.g.
	// on a Btrfs test volume). The test owns it: it is not removed.
	DataDir string
}

// MariaDB readiness and shutdown limits.
const (
	mariadbStartTimeout = 30 * time.Second // scaled by Wait
	mariadbStopGrace    = 10 * time.Second
	// maxSocketPath is sun_path's 108 bytes less the terminating NUL; a
	// longer TMPDIR would make mariadbd fail to create its socket.
	maxSocketPath = 107
)

var errPortInUse = errors.New("port already in use")

var serverIDSeq atomic.Uint32

// nextServerID combines the pid (below 2^22 on Linux) with a per-process
// counter, so that servers of test binaries running side by side (go test
// runs packages in parallel) never share a server id.
func nextServerID() uint32 {
	n := serverIDSeq.Add(1)
	return uint32(os.Getpid())<<10 | n&1023
}

// StartMariaDB starts a fresh mariadbd from a copy of a template datadir and
// waits until root can connect over TCP. A cleanup registered on t stops the
// server and removes its directory. At most one MariaDBOptions is accepted.
func StartMariaDB(t testing.TB, opts ...MariaDBOptions) *MariaDB {
	t.Helper()
	if len(opts) > 1 {
		t.Fatalf("testenv: StartMariaDB takes at most one MariaDBOptions, got %d", len(opts))
	}
	var o MariaDBOptions
	if len(opts) == 1 {
		o = opts[0]
	}
	bin := RequireBinary(t, "mariadbd", MariaDBInstallHint)
	installDB := RequireBinary(t, "mariadb-install-db", MariaDBInstallHint)
	tmpl, err := mariadbTemplate(bin, installDB)
	if err != nil {
		t.Fatal(err)
	}
	name := o.Name
	if name == "" {
		name = t.Name()
	}
	dir, err := os.MkdirTemp("", "tidemark-mariadb-"+dirLabel(name)+"-")
	if err != nil {
		t.Fatal(err)
	}
	m := &MariaDB{
		Host:     "127.0.0.1",
		Socket:   filepath.Join(dir, "mariadbd.sock"),
		DataDir:  filepath.Join(dir, "data"),
		ServerID: nextServerID(),
		name:     name,
		bin:      bin,
		extra:    append([]string(nil), o.ExtraArgs...),
		dir:      dir,
		dirs:     []string{dir},
		logPath:  filepath.Join(dir, "error.log"),
	}
	for _, a := range o.ExtraArgs {
		for _, prefix := range []string{"--server-id=", "--server_id="} {
			if v, ok := strings.CutPrefix(a, prefix); ok {
				id, err := strconv.ParseUint(v, 10, 32)
				if err != nil {
					t.Fatalf("testenv: StartMariaDB: bad %s: %v", a, err)
				}
				// Readiness checks the id, so it must be the one the server uses.
				m.ServerID = uint32(id)
			}
		}
	}
	existing, emptyDir := false, false
	if o.DataDir != "" {
		m.DataDir = o.DataDir
		ents, err := os.ReadDir(o.DataDir)
		switch {
		case err == nil && len(ents) > 0:
			existing = true
		case err == nil:
			// Kept, and the template copied into it: the directory may
			// be a Btrfs subvolume or a mount point, which a new
			// directory in its place would not be.
			emptyDir = true
		case !errors.Is(err, os.ErrNotExist):
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { m.cleanup(t) })
	if len(m.Socket) > maxSocketPath {
		sockDir, err := os.MkdirTemp("/tmp", "tm-sock-")
		if err != nil {
			t.Fatal(err)
		}
		m.dirs = append(m.dirs, sockDir)
		m.Socket = filepath.Join(sockDir, "mariadbd.sock")
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	for attempt := 1; ; attempt++ {
		if !existing {
			if err := copyDatadir(tmpl, m.DataDir, emptyDir); err != nil {
				t.Fatal(err)
			}
		}
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		m.setPort(port)
		err = m.start()
		if err == nil {
			return m
		}
		if attempt == 1 && errors.Is(err, errPortInUse) {
			// Someone took the port between our probe and mariadbd's bind;
			// start again from a pristine datadir on another port.
			t.Logf("testenv: mariadbd %s: port %d was taken, retrying on another", m.name, port)
			if !existing {
				if err := emptyOrRemove(m.DataDir, emptyDir); err != nil {
					t.Fatal(err)
				}
			}
			continue
		}
		t.Fatalf("testenv: start mariadbd %s: %v", m.name, err)
	}
}

func (m *MariaDB) setPort(port int) {
	m.Port = port
	m.RootDSN = fmt.Sprintf("root@tcp(127.0.0.1:%d)/", port)
	m.DSN = fmt.Sprintf("tidemark@tcp(127.0.0.1:%d)/", port)
}

func (m *MariaDB) args() []string {
	// Each server gets its own tmpdir: servers sharing /tmp delete each
	// other's #sql-temptable files and information_schema queries fail.
	tmp := filepath.Join(m.dir, "tmp")
	_ = os.MkdirAll(tmp, 0o700)
	args := []string{
		"--no-defaults", // must come first; Debian's /etc/mysql/my.cnf must not leak in
		"--datadir=" + m.DataDir,
		"--socket=" + m.Socket,
		"--port=" + strconv.Itoa(m.Port),
		"--bind-address=127.0.0.1",
		"--pid-file=" + filepath.Join(m.dir, "mariadbd.pid"),
		"--log-error=" + m.logPath,
		"--tmpdir=" + tmp,
		"--log-bin=binlog", // binlog.000001... in the datadir
		"--binlog-format=ROW",
		"--server-id=" + strconv.FormatUint(uint64(m.ServerID), 10),
		"--local-infile=1",
		"--skip-name-resolve",
		// Debian's packaged defaults; the compiled-in default is latin1.
		"--character-set-server=utf8mb4",
		"--collation-server=utf8mb4_general_ci",
	}
	args = append(args, innodbArgs...)
	if os.Geteuid() == 0 {
		args = append(args, "--user=root") // mariadbd refuses to run as root otherwise
	}
	return append(args, m.extra...)
}

// start runs mariadbd and waits for it; m.mu is held.
func (m *MariaDB) start() error {
	var logStart int64
	if fi, err := os.Stat(m.logPath); err == nil {
		logStart = fi.Size()
	}
	p, err := startProcess(exec.Command(m.bin, m.args()...), m.logPath)
	if err != nil {
		return err
	}
	m.proc = p
	if err := m.waitReady(p); err != nil {
		p.kill()
		if logContainsFrom(m.logPath, logStart, "Address already in use", "Bind on TCP/IP port") {
			return fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return err
	}
	return nil
}

// waitReady polls a root connection until it answers, the deadline passes, or
// the process exits (then immediately, with the log tail).
func (m *MariaDB) waitReady(p *process) error {
	db, err := sql.Open("mysql", m.RootDSN+"?timeout=2s")
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()
	timeout := Wait(mariadbStartTimeout)
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := p.attemptContext(2 * time.Second)
		// The server id tells our server from one that took the port between
		// freePort and mariadbd's bind: every testenv root has no password.
		var id uint32
		err = db.QueryRowContext(ctx, "SELECT @@server_id").Scan(&id)
		cancel()
		if err == nil && id == m.ServerID {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("port %d answered with server_id %d, not ours (%d)", m.Port, id, m.ServerID)
		}
		select {
		case <-p.done:
			return fmt.Errorf("mariadbd exited during startup (%s)\n%s", p.exitStatus(), p.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mariadbd not ready after %v (last error: %w)\n%s", timeout, err, p.logTail())
		}
	}
}

// Restart starts the server again on the same datadir and port, after Stop or
// Kill (crash recovery), or stops it cleanly first if it is running.
func (m *MariaDB) Restart(t testing.TB) {
	t.Helper()
	m.Stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.start(); err != nil {
		t.Fatalf("testenv: restart mariadbd %s: %v", m.name, err)
	}
}

// DB opens a pool on DSN (user tidemark) with multiStatements and
// interpolateParams, closed when t's cleanups run.
func (m *MariaDB) DB(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", m.DSN+"?multiStatements=true&interpolateParams=true")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("testenv: connect to mariadbd %s: %v", m.name, err)
	}
	return db
}

// Exec runs stmts as root, in order, on one connection (so session settings
// such as SET sql_log_bin=0 apply to the statements after them), and fails the
// test on the first error. A statement may itself hold several statements.
func (m *MariaDB) Exec(t testing.TB, stmts ...string) {
	t.Helper()
	db, err := m.rootDB()
	if err != nil {
		t.Fatalf("testenv: mariadbd %s: %v", m.name, err)
	}
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatalf("testenv: connect to mariadbd %s: %v", m.name, err)
	}
	defer func() { _ = conn.Close() }()
	for _, s := range stmts {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			t.Fatalf("testenv: mariadbd %s: %s: %v", m.name, s, err)
		}
	}
}

// PurgeBinlogs rotates the binlog and purges every older file, as a server
// whose expiry ran would: what they held can no longer be read from it. It
// returns the file that remains. The server purges a file only once no
// thread reads it and its checkpoint has passed, so it retries until done.
func (m *MariaDB) PurgeBinlogs(t testing.TB) string {
	t.Helper()
	m.Exec(t, "FLUSH BINARY LOGS")
	db, err := m.rootDB()
	if err != nil {
		t.Fatalf("testenv: mariadbd %s: %v", m.name, err)
	}
	var cur string
	rows, err := db.Query("SHOW MASTER STATUS")
	if err != nil {
		t.Fatalf("testenv: mariadbd %s: SHOW MASTER STATUS: %v", m.name, err)
	}
	cols, _ := rows.Columns()
	vals := make([]any, len(cols))
	vals[0] = &cur
	for i := 1; i < len(cols); i++ {
		vals[i] = new(sql.RawBytes)
	}
	for rows.Next() {
		if err := rows.Scan(vals...); err != nil {
			t.Fatalf("testenv: mariadbd %s: SHOW MASTER STATUS: %v", m.name, err)
		}
	}
	_ = rows.Close()
	WaitFor(t, "binlogs purged to "+cur, 30*time.Second, func() error {
		if _, err := db.Exec("PURGE BINARY LOGS TO '" + cur + "'"); err != nil {
			return err
		}
		var first string
		if err := db.QueryRow("SHOW BINARY LOGS").Scan(&first, new(any)); err != nil {
			return err
		}
		if first != cur {
			return fmt.Errorf("oldest binlog is still %s", first)
		}
		return nil
	})
	return cur
}

func (m *MariaDB) rootDB() (*sql.DB, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.root == nil {
		db, err := sql.Open("mysql", m.RootDSN+"?multiStatements=true&interpolateParams=true")
		if err != nil {
			return nil, err
		}
		m.root = db
	}
	return m.root, nil
}

// closeRoot drops Exec's pool, whose connections die with the server; m.mu is held.
func (m *MariaDB) closeRoot() {
	if m.root != nil {
		_ = m.root.Close()
		m.root = nil
	}
}

// Kill sends SIGKILL, as a crash would, and waits for the process to exit.
func (m *MariaDB) Kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closeRoot()
	if m.proc != nil {
		m.proc.kill()
	}
}

// Stop shuts the server down cleanly (SIGTERM; SIGKILL after 10s) and waits
// for it. Stopping a stopped server does nothing.
func (m *MariaDB) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closeRoot()
	if m.proc != nil {
		m.proc.stop(mariadbStopGrace)
	}
}

// Pid returns the process id of the current (or last) mariadbd process.
func (m *MariaDB) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return 0
	}
	return m.proc.pid()
}

func (m *MariaDB) cleanup(t testing.TB) {
	m.Stop()
	if t.Failed() {
		t.Logf("testenv: mariadbd %s (port %d)\n%s", m.name, m.Port, logTail(m.logPath))
	}
	for _, d := range m.dirs {
		if err := os.RemoveAll(d); err != nil {
			t.Errorf("testenv: remove %s: %v", d, err)
		}
	}
}

// dirLabel makes name safe and short for a directory name (the socket path
// inside it must stay under maxSocketPath).
func dirLabel(name string) string {
	b := []byte(name)
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			b[i] = '_'
		}
	}
	if len(b) > 24 {
		b = b[:24]
	}
	return string(b)
}
