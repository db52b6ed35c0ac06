package physical

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// ErrVersionMismatch is returned when a backup's server and the binary
// that would run on the restored files differ in flavor or major version.
var ErrVersionMismatch = errors.New("server version mismatch")

// Binary is a server or tool program and the version it reports.
type Binary struct {
	Path    string
	Flavor  string // mysqlx.MariaDB, MySQL, Percona
	Version string // "10.11.19"
	Major   string // "10.11": what InnoDB's on-disk format follows
}

// FindMysqld returns the server binary: path, or mariadbd, else mysqld,
// from PATH (and /usr/sbin, where packages put it outside root's PATH).
func FindMysqld(path string) (string, error) {
	if path != "" {
		p, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("server binary %s: %w", path, err)
		}
		return p, nil
	}
	for _, name := range []string{"mariadbd", "mysqld", "/usr/sbin/mariadbd", "/usr/sbin/mysqld"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no server binary found (mariadbd or mysqld on PATH): give its path with --mysqld")
}

// MysqldVersion runs `mysqld --version` and reads flavor and version from
// "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu ...".
func MysqldVersion(ctx context.Context, path string) (*Binary, error) {
	out, err := exec.CommandContext(ctx, path, "--no-defaults", "--version").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("server binary %s --version: %w: %s", path, err, strings.TrimSpace(string(out)))
	}
	return parseMysqldVersion(path, string(out))
}

func parseMysqldVersion(path, out string) (*Binary, error) {
	line := strings.TrimSpace(out)
	_, rest, ok := strings.Cut(line, " Ver ")
	if !ok {
		return nil, fmt.Errorf("server binary %s --version said %q, not \"... Ver X.Y.Z ...\": is it mariadbd or mysqld?", path, line)
	}
	ver, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
	return binaryOf(path, ver, line), nil
}

// MariabackupVersion runs `mariabackup --version`: "mariabackup based on
// MariaDB server 10.11.19-MariaDB debian-linux-gnu (x86_64)".
func MariabackupVersion(ctx context.Context, path string) (*Binary, error) {
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w: %s", path, err, strings.TrimSpace(string(out)))
	}
	return parseMariabackupVersion(path, string(out))
}

func parseMariabackupVersion(path, out string) (*Binary, error) {
	// The version is on the "based on ... server X.Y.Z" line (xtrabackup
	// prints log lines around it, some with "server" in them).
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if _, rest, ok := strings.Cut(line, " based on "); ok {
			if _, rest, ok = strings.Cut(rest, " server "); !ok {
				continue
			}
			ver, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
			return binaryOf(path, ver, line), nil
		}
	}
	return nil, fmt.Errorf("%s --version said %q, not \"... based on MariaDB server X.Y.Z ...\"", path, strings.TrimSpace(out))
}

func binaryOf(path, version, line string) *Binary {
	flavor, major, minor, patch := mysqlx.ParseVersion(version, line)
	return &Binary{Path: path, Flavor: flavor, Version: fmt.Sprintf("%d.%d.%d", major, minor, patch), Major: fmt.Sprintf("%d.%d", major, minor)}
}

// checkVersion refuses to run b on files of the server s: another flavor,
// or another major version (major.minor: 10.6 and 10.11 differ on disk,
// and an upgrade is the server's own procedure, not a restore's).
func checkVersion(what string, s *v1.ServerInfo, b *Binary) error {
	if s.GetVersion() == "" {
		return nil
	}
	flavor, major, minor, _ := mysqlx.ParseVersion(s.GetVersion(), s.GetFlavor())
	if s.GetFlavor() != "" {
		flavor = s.GetFlavor()
	}
	sameFamily := flavor == b.Flavor || (flavor != mysqlx.MariaDB && b.Flavor != mysqlx.MariaDB) // Percona and MySQL share a format
	if !sameFamily || fmt.Sprintf("%d.%d", major, minor) != b.Major {
		return fmt.Errorf("%w: the backup is of %s %s, and %s %s is %s %s; use a %s %d.%d binary (--mysqld / --mariabackup PATH)",
			ErrVersionMismatch, flavor, s.GetVersion(), what, b.Path, b.Flavor, b.Version, flavor, major, minor)
	}
	return nil
}

// TempServer is a server started on a restored datadir for its recovery
// and the roll-forward: no TCP listener, a socket in a private directory,
// and an account made for this run alone.
type TempServer struct {
	// DSN reaches the server over its socket as the run's account.
	DSN string

	cmd     *exec.Cmd
	dir     string // private: socket, pid file, error log, tmpdir
	logPath string
	exited  chan struct{}
	waitErr error
	user    string
}

// TempServerParams are StartTempServer's inputs.
type TempServerParams struct {
	Mysqld  string // the server binary
	Datadir string
	// LogBin is the binlog basename to start with ("" none). A
	// crash-consistent image must be recovered with its binlog: InnoDB
	// transactions prepared at the crash are committed or rolled back by
	// whether the binlog holds them, and without it the server refuses to
	// start.
	LogBin string
	// Args are appended to the server's arguments (buffer pool, redo log
	// size, ...).
	Args []string
	// StartTimeout bounds recovery and start; 0: 30 minutes.
	StartTimeout time.Duration
}

// tempUser is the account a temporary server is reached with; it is
// created by the server's --init-file at start (outside the binlog) and
// dropped before the shutdown.
const tempUser = "tidemark_restore"

// StartTempServer starts mysqld on p.Datadir and waits until it answers.
// It listens on no TCP port (--skip-networking: outgoing connections, such
// as a replica's to the roll-forward's source on loopback, still work), on
// a socket in a private directory only this user can enter. Its error log
// tail is quoted by every error.
func StartTempServer(ctx context.Context, p TempServerParams) (*TempServer, error) {
	dir, err := os.MkdirTemp("", "tidemark-restore-")
	if err != nil {
		return nil, fmt.Errorf("temporary server: %w", err)
	}
	if len(filepath.Join(dir, "mysqld.sock")) > 100 {
		_ = os.RemoveAll(dir)
		if dir, err = os.MkdirTemp("/tmp", "tm-restore-"); err != nil {
			return nil, fmt.Errorf("temporary server: %w", err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("temporary server: %w", err)
	}
	pw := make([]byte, 18)
	_, _ = rand.Read(pw)
	pass := hex.EncodeToString(pw)
	initFile := filepath.Join(dir, "init.sql")
	// DROP + CREATE rather than CREATE OR REPLACE: MySQL has no OR
	// REPLACE for users, and one left by a killed earlier run must go.
	init := fmt.Sprintf("SET sql_log_bin=0;\nDROP USER IF EXISTS '%[1]s'@'localhost';\nCREATE USER '%[1]s'@'localhost' IDENTIFIED BY '%[2]s';\nGRANT ALL PRIVILEGES ON *.* TO '%[1]s'@'localhost' WITH GRANT OPTION;\n", tempUser, pass)
	if err := os.WriteFile(initFile, []byte(init), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("temporary server: %w", err)
	}
	sock := filepath.Join(dir, "mysqld.sock")
	ts := &TempServer{dir: dir, logPath: filepath.Join(dir, "error.log"), exited: make(chan struct{}), user: tempUser}
	args := []string{
		"--no-defaults", // the host's my.cnf would bring its port, socket, datadir
		"--datadir=" + p.Datadir,
		"--socket=" + sock,
		"--skip-networking",
		"--pid-file=" + filepath.Join(dir, "mysqld.pid"),
		"--log-error=" + ts.logPath,
		"--tmpdir=" + dir,
		"--init-file=" + initFile,
		"--skip-slave-start", // a restored replica must not reconnect to its old primary
	}
	if p.LogBin != "" {
		// The roll-forward goes into the restored binlog too, so that it
		// stays continuous: a restored primary's replicas, and the next
		// roll-forward from it, find every transaction in it.
		args = append(args, "--log-bin="+p.LogBin, "--log-slave-updates=1")
	}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root") // mariadbd refuses root otherwise; the files stay root's
	}
	args = append(args, p.Args...)
	ts.cmd = exec.Command(p.Mysqld, args...)
	// Its own process group: a Ctrl-C meant for tidemark does not kill
	// the server mid-recovery; tidemark stops it cleanly instead.
	// Pdeathsig: if tidemark dies, the server gets SIGTERM (a clean
	// shutdown) rather than running on, orphaned, on a directory still
	// marked unfinished. Linux sends it when the forking thread exits, so
	// the start and the wait run on one locked thread that ends only after
	// the server has.
	ts.cmd.SysProcAttr = tempServerAttr()
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		if err := ts.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		ts.waitErr = ts.cmd.Wait()
		close(ts.exited)
	}()
	if err := <-started; err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("temporary server %s: %w", p.Mysqld, err)
	}

	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = tempUser, pass, "unix", sock
	cfg.Timeout = 5 * time.Second
	cfg.ParseTime = true
	ts.DSN = cfg.FormatDSN()

	timeout := p.StartTimeout
	if timeout == 0 {
		timeout = 30 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	var last error
	for {
		select {
		case <-ts.exited:
			err := fmt.Errorf("temporary server on %s exited during start (%w); its error log ends:\n%s", p.Datadir, ts.waitErr, ts.LogTail())
			_ = os.RemoveAll(dir)
			return nil, err
		case <-ctx.Done():
			_ = ts.Stop(context.Background())
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if last = ts.ping(ctx); last == nil {
			return ts, nil
		}
		if time.Now().After(deadline) {
			err := fmt.Errorf("temporary server on %s did not answer within %s (%w); its error log ends:\n%s", p.Datadir, timeout, last, ts.LogTail())
			_ = ts.Stop(context.Background())
			return nil, err
		}
	}
}

func (ts *TempServer) ping(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(ts.dir, "mysqld.sock")); err != nil {
		return err
	}
	db, err := sql.Open("mysql", ts.DSN)
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()
	return db.PingContext(ctx)
}

// Pid is the server's process id.
func (ts *TempServer) Pid() int { return ts.cmd.Process.Pid }

// LogTail is the end of the server's error log.
func (ts *TempServer) LogTail() string {
	f, err := os.Open(ts.logPath)
	if err != nil {
		return "(no error log: " + err.Error() + ")"
	}
	defer func() { _ = f.Close() }()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 30 {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// Stop drops the run's account, shuts the server down cleanly (SIGTERM:
// the server's normal shutdown) and waits for it to exit, then removes the
// private directory. A server that does not exit within 10 minutes is
// killed, and the error says the datadir needs crash recovery again.
func (ts *TempServer) Stop(ctx context.Context) error {
	select {
	case <-ts.exited:
		defer func() { _ = os.RemoveAll(ts.dir) }()
		return fmt.Errorf("temporary server exited before its shutdown (%w); its error log ends:\n%s", ts.waitErr, ts.LogTail())
	default:
	}
	var dropErr error
	if db, err := sql.Open("mysql", ts.DSN); err == nil {
		db.SetMaxOpenConns(1)
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if _, err := db.ExecContext(dctx, "SET sql_log_bin=0"); err == nil {
			_, dropErr = db.ExecContext(dctx, "DROP USER IF EXISTS '"+ts.user+"'@'localhost'")
		} else {
			dropErr = err
		}
		cancel()
		_ = db.Close()
	}
	_ = ts.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ts.exited:
	case <-time.After(10 * time.Minute):
		_ = ts.cmd.Process.Kill()
		<-ts.exited
		tail := ts.LogTail()
		_ = os.RemoveAll(ts.dir)
		return fmt.Errorf("temporary server did not shut down within 10 minutes and was killed: the datadir needs crash recovery at its next start; its error log ends:\n%s", tail)
	}
	tail := ts.LogTail()
	_ = os.RemoveAll(ts.dir)
	if ts.waitErr != nil {
		return fmt.Errorf("temporary server shut down with %w; its error log ends:\n%s", ts.waitErr, tail)
	}
	if dropErr != nil {
		return fmt.Errorf("temporary server: dropping the account %s@localhost it was reached with: %w (drop it before using the datadir)", ts.user, dropErr)
	}
	return nil
}

// binlogBase returns the binlog basename a crash-consistent datadir was
// written with: the consistency point's file without its number, when its
// index is in dir. The index is rewritten to name its files relative to
// dir ("./name") when it names them by another path (the source's absolute
// --log-bin): recovery reads the files the index names, and must read the
// restored ones, never the original server's. A file the index names that
// is not in dir is an error: recovery could not decide the transactions it
// holds.
//
// dir is where the binlogs were restored, datadir the datadir; the result
// is the --log-bin value (relative to the datadir when dir is it).
func binlogBase(dir, datadir string, c *v1.ConsistencyPoint) (string, error) {
	f := c.GetBinlogFile()
	i := strings.LastIndexByte(f, '.')
	if i <= 0 || !allDigits(f[i+1:]) {
		return "", nil // no binlog coordinates of the form base.NNNNNN
	}
	base := filepath.Base(f[:i])
	idx := filepath.Join(dir, base+".index")
	data, err := os.ReadFile(idx)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("physical: %w", err)
	}
	var out []string
	changed := false
	for _, l := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		name := filepath.Base(l)
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("physical: the restored binlog index %s names %s, which is not among the restored files: the backup lacks binlogs that crash recovery needs", idx, l)
		}
		want := "./" + name
		if filepath.Clean(dir) != filepath.Clean(datadir) {
			want = filepath.Join(dir, name)
		}
		if want != l {
			l, changed = want, true
		}
		out = append(out, l)
	}
	if changed {
		if err := os.WriteFile(idx, []byte(strings.Join(out, "\n")+"\n"), 0o640); err != nil {
			return "", fmt.Errorf("physical: rewriting %s: %w", idx, err)
		}
	}
	if filepath.Clean(dir) != filepath.Clean(datadir) {
		return filepath.Join(dir, base), nil
	}
	return base, nil
}

func allDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}
