package mariabackup

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	"github.com/tidemark-backup/tidemark/internal/xbstream"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// The files the tools write into the stream that the engine reads as well
// as stores (MariaDB ≥ 11 names them mariadb_backup_*).
var infoFiles = map[string]bool{
	"xtrabackup_binlog_info": true, "mariadb_backup_binlog_info": true,
	"xtrabackup_checkpoints": true, "mariadb_backup_checkpoints": true,
	"xtrabackup_info": true, "mariadb_backup_info": true,
}

// maxInfo bounds what is kept of one info file.
const maxInfo = 64 << 10

// Backup implements engines.Engine.
func (e *Engine) Backup(ctx context.Context, p engines.BackupParams) (*engines.BackupResult, error) {
	if len(p.Databases) > 0 {
		return nil, fmt.Errorf("the %s engine backs up the whole instance (its files); it cannot be limited to databases %s: use the logical engine for that", Name, strings.Join(p.Databases, ", "))
	}
	dsn, err := mysqlx.ParseDSN(p.DSN)
	if err != nil {
		return nil, err
	}
	db, err := dsn.Open(nil)
	if err != nil {
		return nil, err
	}
	defer func() { _ = db.Close() }()
	srv, err := mysqlx.Detect(ctx, db)
	if err != nil {
		return nil, err
	}
	var datadir string
	if err := db.QueryRowContext(ctx, "SELECT @@datadir").Scan(&datadir); err != nil {
		return nil, mysqlx.Translate("reading @@datadir", err)
	}
	// The tool reads the files under the datadir the server names; they
	// must be this host's. (A DSN of another host whose datadir path also
	// exists here is not caught: the agent runs next to its server.)
	if _, err := os.ReadDir(datadir); err != nil {
		return nil, fmt.Errorf("the datadir of %s %s, %s, is not readable on this host (%w): the %s engine copies the server's files and must run on the server's host, as the user the files belong to or root",
			srv.Flavor, dsn.Addr(), datadir, err, Name)
	}
	innodb, err := innodbArgs(ctx, db)
	if err != nil {
		return nil, err
	}
	t, err := e.toolFor(ctx, srv)
	if err != nil {
		// Missing or of another series: the host cannot run this engine,
		// which lets a backup with engine auto fall back.
		return nil, fmt.Errorf("%w: %w", engines.ErrCapability, err)
	}
	if err := checkPrivileges(ctx, db, srv); err != nil {
		return nil, err
	}
	_ = db.Close()

	priv, err := os.MkdirTemp(e.TempDir, "tidemark-mariabackup-")
	if err != nil {
		return nil, fmt.Errorf("%s: private temporary directory: %w", Name, err)
	}
	defer func() { _ = os.RemoveAll(priv) }() // the credentials and the tool's target dir
	cnf, err := writeDefaults(priv, dsn)
	if err != nil {
		return nil, err
	}
	target := filepath.Join(priv, "target")
	if err := os.Mkdir(target, 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	parallel := p.Parallel
	if parallel <= 0 {
		parallel = 4
	}
	args := []string{
		"--defaults-extra-file=" + cnf, // must come first
		"--backup", "--stream=xbstream", "--target-dir=" + target,
		"--datadir=" + datadir, "--parallel=" + strconv.Itoa(parallel),
	}
	args = append(args, innodb...)
	dialect := xbstream.DialectMariaDB
	if t.name == "xtrabackup" {
		dialect = xbstream.DialectPercona
	}

	p.Sink.SetServer(srv.Proto())
	block := e.Block
	if block == 0 {
		block = physical.DefaultBlock
	}
	p.Sink.SetEngineMetadata(physical.MetaFormat, physical.FormatVersion)
	p.Sink.SetEngineMetadata(physical.MetaBlock, strconv.Itoa(block))
	p.Sink.SetEngineMetadata(physical.MetaPrepare, physical.PrepareMariabackup)
	p.Sink.SetEngineMetadata(MetaTool, t.name+" "+t.version)

	run := newRun(p.Sink, block, priv, p.Progress)
	defer run.discard()
	res, err := run.exec(ctx, t, args, dialect)
	if err != nil {
		return nil, err
	}
	cp, err := run.consistency()
	if err != nil {
		return nil, err
	}
	p.Sink.SetConsistency(cp)
	ckpt, ok := run.info["mariadb_backup_checkpoints"]
	if !ok {
		ckpt = run.info["xtrabackup_checkpoints"]
	}
	for key, meta := range map[string]string{"to_lsn": MetaToLSN, "last_lsn": MetaLastLSN} {
		if v := keyValue(ckpt, key); v != "" {
			p.Sink.SetEngineMetadata(meta, v)
		}
	}
	if n := len(run.unsent); n > 0 {
		shown := run.unsent[:min(n, 5)]
		res.Warnings = append(res.Warnings, fmt.Sprintf("%s renamed %d file(s) it had not sent (%s): tables created and renamed while the backup ran; mbstream -x skips these renames too, so the backup holds what mariabackup's own would. Check those tables after a restore",
			t.name, n, strings.Join(shown, ", ")))
	}
	if run.renames+run.removes > 0 {
		p.Sink.SetEngineMetadata(MetaDDL, fmt.Sprintf("renamed %d, removed %d", run.renames, run.removes))
	}
	if res.LockDuration > 0 {
		p.Sink.SetLockDuration(res.LockDuration)
	}
	return res, nil
}

// innodbLayout are the server variables that say where InnoDB's files are
// and how they are laid out. The tool reads option files, not the running
// server's command line: a server started with these as arguments (a
// container, our tests) would otherwise be read with the defaults.
var innodbLayout = []string{"innodb_data_home_dir", "innodb_data_file_path", "innodb_log_group_home_dir", "innodb_undo_directory", "innodb_page_size"}

// innodbArgs passes the running server's InnoDB layout to the tool, each
// variable the server has and sets.
func innodbArgs(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx, "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('"+strings.Join(innodbLayout, "','")+"')")
	if err != nil {
		return nil, mysqlx.Translate("reading the InnoDB layout", err)
	}
	defer func() { _ = rows.Close() }()
	vals := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, mysqlx.Translate("reading the InnoDB layout", err)
		}
		vals[strings.ToLower(k)] = v
	}
	if err := rows.Err(); err != nil {
		return nil, mysqlx.Translate("reading the InnoDB layout", err)
	}
	var out []string
	for _, k := range innodbLayout {
		if v := vals[k]; v != "" {
			out = append(out, "--"+strings.ReplaceAll(k, "_", "-")+"="+v)
		}
	}
	return out, nil
}

// writeDefaults writes the connection options into an option file only
// the agent's user can read, in a directory only it can list.
// writeSSLOptions gives mariabackup the DSN's TLS settings. MariaDB's
// client has no verify-ca: ssl-verify-server-cert checks the chain and the
// name together, and without it nothing is checked. verify-ca therefore
// encrypts mariabackup's connection without checking it; the engine's own
// connections to the same server, opened first, do check the chain.
func writeSSLOptions(b *strings.Builder, dsn *mysqlx.DSN) {
	mode, ca, cert, key := dsn.SSL()
	switch mode {
	case "":
		return // mariabackup's default
	case mysqlx.SSLDisabled:
		b.WriteString("skip-ssl\n")
		return
	}
	b.WriteString("ssl\n")
	if ca != "" {
		fmt.Fprintf(b, "ssl-ca=%s\n", quoteOption(ca))
	}
	if cert != "" {
		fmt.Fprintf(b, "ssl-cert=%s\nssl-key=%s\n", quoteOption(cert), quoteOption(key))
	}
	if mode == mysqlx.SSLVerifyIdentity {
		b.WriteString("ssl-verify-server-cert\n")
	}
}

func writeDefaults(dir string, dsn *mysqlx.DSN) (string, error) {
	c := dsn.Config()
	var b strings.Builder
	b.WriteString("# written by tidemark for one backup; removed when it ends\n[client]\n")
	fmt.Fprintf(&b, "user=%s\n", quoteOption(c.User))
	if c.Passwd != "" {
		fmt.Fprintf(&b, "password=%s\n", quoteOption(c.Passwd))
	}
	switch c.Net {
	case "unix":
		fmt.Fprintf(&b, "socket=%s\n", quoteOption(c.Addr))
	default:
		host, port := c.Addr, "3306"
		if i := strings.LastIndexByte(c.Addr, ':'); i >= 0 {
			host, port = c.Addr[:i], c.Addr[i+1:]
		}
		host = strings.Trim(host, "[]")
		if host == "localhost" {
			host = "127.0.0.1" // "localhost" would make the client use its default socket
		}
		fmt.Fprintf(&b, "host=%s\nport=%s\nprotocol=TCP\n", quoteOption(host), port)
	}
	writeSSLOptions(&b, dsn)
	path := filepath.Join(dir, "client.cnf")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", fmt.Errorf("%s: credentials file: %w", Name, err)
	}
	_, err = f.WriteString(b.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("%s: credentials file: %w", Name, err)
	}
	return path, nil
}

// quoteOption quotes a value for a MySQL option file: inside double quotes
// the parser undoes \\, \", \n, \t, \r, \b (mysys/my_default.c).
func quoteOption(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`, "\r", `\r`, "\b", `\b`)
	return `"` + r.Replace(s) + `"`
}

// exec runs the tool and stores its stream. On any failure the tool's
// process group is killed and waited for before exec returns.
func (r *run) exec(ctx context.Context, t *tool, args []string, dialect xbstream.Dialect) (res *engines.BackupResult, err error) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(cctx, t.path, args...)
	cmd.SysProcAttr = childAttr()
	cmd.Cancel = func() error {
		// The whole group: the tool may have started helpers.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 10 * time.Second
	se := &stderrWatch{}
	cmd.Stderr = se
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	// The tool gets SIGKILL when the OS thread that forked it exits
	// (Pdeathsig), not only when tidemark does. So it is forked from, and
	// waited for on, a thread locked to one goroutine: no other goroutine
	// runs there, and a goroutine that ends while locked to some other
	// thread (a temporary server's) cannot take the tool with it.
	started, waited, readDone := make(chan error, 1), make(chan error, 1), make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine, after Wait
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		<-readDone // Wait closes stdout: not before the stream is read
		waited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("%s: starting %s: %w", Name, t.path, err)
	}
	streamErr := r.consume(cctx, out, dialect)
	if streamErr == nil {
		// Held back until the stream's renames and removals are known.
		streamErr = r.storeSpooled(cctx)
	}
	// A damaged or truncated stream usually means the tool died; any other
	// failure is ours (storing), and we kill the tool.
	ours := streamErr != nil && !errors.Is(streamErr, xbstream.ErrCorrupt)
	if streamErr != nil {
		cancel() // kill the group; Wait reaps it
		_, _ = io.Copy(io.Discard, out)
	}
	close(readDone)
	waitErr := <-waited
	if streamErr != nil {
		r.discard()
	}
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%s: backup cancelled, %s stopped: %w", Name, t.name, ctx.Err())
	case ours:
		return nil, fmt.Errorf("%s: storing the stream of %s: %w", Name, t.name, streamErr)
	case waitErr != nil && streamErr != nil:
		return nil, fmt.Errorf("%s failed (%s) and its stream is incomplete (%w); its last messages:\n%s", t.name, describeExit(waitErr), streamErr, se.tail(25))
	case waitErr != nil:
		return nil, fmt.Errorf("%s %s failed (%s); its last messages:\n%s", t.name, strings.Join(redactArgs(args), " "), describeExit(waitErr), se.tail(25))
	case streamErr != nil:
		return nil, fmt.Errorf("%s: the stream of %s: %w", Name, t.name, streamErr)
	}
	if !se.completed() {
		return nil, fmt.Errorf("%s exited 0 without reporting \"completed OK!\"; not trusting the backup; its last messages:\n%s", t.name, se.tail(25))
	}
	res = &engines.BackupResult{LockDuration: se.lockDuration(), Files: len(r.stored) + r.nSpooled}
	if res.LockDuration == 0 {
		if s := keyValue(r.info["xtrabackup_info"], "lock_time"); s != "" {
			if n, err := strconv.Atoi(s); err == nil {
				res.LockDuration = time.Duration(n) * time.Second
			}
		}
	}
	return res, nil
}

func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + ws.Signal().String()
		}
		return fmt.Sprintf("exit status %d", ee.ExitCode())
	}
	return err.Error()
}

// redactArgs shows argv as run; it never holds a secret, but the option
// file's path is private and noise.
func redactArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		if strings.HasPrefix(a, "--defaults-extra-file=") {
			a = "--defaults-extra-file=(credentials)"
		}
		out = append(out, a)
	}
	return out
}

// consistency reads the coordinates the tool wrote under its lock:
// "<file>\t<position>[\t<gtid>]" (the GTID may span lines on MySQL).
func (r *run) consistency() (*v1.ConsistencyPoint, error) {
	cp := &v1.ConsistencyPoint{}
	if !r.infoAt.IsZero() {
		cp.Time = timestamppb.New(r.infoAt.UTC())
	}
	raw, ok := r.info["mariadb_backup_binlog_info"]
	if !ok {
		raw, ok = r.info["xtrabackup_binlog_info"]
	}
	if !ok {
		// No binary log on the server: no coordinates to record.
		return cp, nil
	}
	fields := strings.SplitN(strings.TrimSpace(string(raw)), "\t", 3)
	if len(fields) < 2 {
		return nil, fmt.Errorf("%s: cannot read the binlog coordinates from %q", Name, raw)
	}
	pos, err := strconv.ParseUint(strings.TrimSpace(fields[1]), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%s: binlog position in %q: %w", Name, raw, err)
	}
	cp.BinlogFile, cp.BinlogPosition = strings.TrimSpace(fields[0]), pos
	if len(fields) == 3 {
		cp.GtidSet = strings.ReplaceAll(strings.ReplaceAll(strings.TrimSpace(fields[2]), "\n", ""), " ", "")
	}
	return cp, nil
}

// keyValue reads "key = value" from the tools' info files.
func keyValue(b []byte, key string) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// stderrWatch keeps the tail of the tool's stderr (bounded) and times its
// lock from the lines that start and end it, as they arrive.
type stderrWatch struct {
	mu        sync.Mutex
	buf       []byte // the tail
	partial   []byte
	lockStart time.Time
	lockEnd   time.Time
	ok        bool
}

const stderrKeep = 64 << 10

// Lines that begin and end the window in which commits are blocked:
// MariaDB's BACKUP STAGE BLOCK_COMMIT, xtrabackup's FLUSH TABLES WITH READ
// LOCK / LOCK BINLOG FOR BACKUP / performance_schema.log_status read.
var (
	lockBegins = []string{"Starting BACKUP STAGE BLOCK_COMMIT", "Executing FLUSH TABLES WITH READ LOCK", "Executing LOCK BINLOG FOR BACKUP", "Executing LOCK INSTANCE FOR BACKUP"}
	lockEnds   = []string{"All tables unlocked", "Executing BACKUP STAGE END", "Executing UNLOCK BINLOG", "Executing UNLOCK INSTANCE"}
)

func (s *stderrWatch) Write(b []byte) (int, error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(s.buf, b...)
	if len(s.buf) > 2*stderrKeep {
		s.buf = append(s.buf[:0], s.buf[len(s.buf)-stderrKeep:]...)
	}
	s.partial = append(s.partial, b...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		line := string(s.partial[:i])
		s.partial = s.partial[i+1:]
		if s.lockStart.IsZero() && containsAny(line, lockBegins) {
			s.lockStart = now
		} else if !s.lockStart.IsZero() && s.lockEnd.IsZero() && containsAny(line, lockEnds) {
			s.lockEnd = now
		}
		if strings.Contains(line, "completed OK!") {
			s.ok = true
		}
	}
	if len(s.partial) > stderrKeep {
		s.partial = s.partial[:0] // a line that long is not a marker
	}
	return len(b), nil
}

func containsAny(s string, subs []string) bool {
	for _, x := range subs {
		if strings.Contains(s, x) {
			return true
		}
	}
	return false
}

func (s *stderrWatch) lockDuration() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lockStart.IsZero() || s.lockEnd.IsZero() {
		return 0
	}
	return s.lockEnd.Sub(s.lockStart)
}

func (s *stderrWatch) completed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ok
}

// tail is the last n lines of stderr.
func (s *stderrWatch) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	lines := strings.Split(strings.TrimRight(string(s.buf), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}
