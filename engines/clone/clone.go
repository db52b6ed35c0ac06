package clone

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/internal/humanize"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Name is the engine's name in manifests and on the command line.
const Name = "clone"

// DefaultBlock is the block size files are cut into: the physical
// engines' (physical.DefaultBlock), so that clone and snapshot backups of
// one instance cut files alike.
const DefaultBlock = physical.DefaultBlock

// Engine-metadata keys this engine adds to the physical ones.
const (
	// MetaScratch is the directory the server cloned into (removed since).
	MetaScratch = "clone.scratch"
	// MetaCloneTime is how long the CLONE statement ran, a Go duration.
	MetaCloneTime = "clone.clone_time"
)

// ScratchPrefix begins the name of every scratch directory.
const ScratchPrefix = ".tidemark-clone-"

// Kinds of refusal, for errors.Is (selection tells them apart).
var (
	// ErrUnsupported: the server cannot run the engine (MariaDB, MySQL
	// older than 8.0.17).
	ErrUnsupported = errors.New("the clone engine cannot back up this server")
	// ErrPluginMissing: the clone plugin is not installed or not active.
	ErrPluginMissing = errors.New("clone plugin not active")
	// ErrNoSpace: the scratch directory's filesystem cannot hold the clone.
	ErrNoSpace = errors.New("not enough free space for the clone")
)

// Engine takes backups with the server's clone plugin. The zero value is
// ready; fields adjust it.
type Engine struct {
	// ScratchParent is the existing directory the server clones into
	// (a new .tidemark-clone-* directory in it). mysqld must be able to
	// create directories there and it must not be inside the datadir.
	// Default: the datadir's parent.
	ScratchParent string
	// Block is the block size files are cut into; 0: DefaultBlock.
	Block int
	// Poll is how often clone_progress is read while the clone runs;
	// 0: 500 ms.
	Poll time.Duration
	// KillWait bounds the wait for a killed clone to end before its
	// directory is left to CleanLeftovers; 0: 2 minutes.
	KillWait time.Duration
}

// New returns the engine with its defaults.
func New() *Engine { return &Engine{} }

// Name implements engines.Engine.
func (e *Engine) Name() string { return Name }

// Restore implements engines.Engine: a physical backup is not replayed
// into a running server.
func (e *Engine) Restore(context.Context, engines.RestoreParams) (*engines.RestoreResult, error) {
	return nil, errors.New("a clone backup holds the server's files, not statements: restore it into an empty directory with `tidemark restore ID --to-datadir DIR` and start a server there")
}

func (e *Engine) poll() time.Duration {
	if e.Poll > 0 {
		return e.Poll
	}
	return 500 * time.Millisecond
}

func (e *Engine) killWait() time.Duration {
	if e.KillWait > 0 {
		return e.KillWait
	}
	return 2 * time.Minute
}

// session is two pinned connections to the server: one runs CLONE, the
// other watches it (and kills it).
type session struct {
	db        *sql.DB
	clone     *sql.Conn
	mon       *sql.Conn
	srv       *mysqlx.Server
	dsn       *mysqlx.DSN
	datadir   string
	binPrefix string // base name of the binlogs plus ".", "" without binlog
}

func (s *session) close() {
	for _, c := range []*sql.Conn{s.clone, s.mon} {
		if c != nil {
			_ = c.Close()
		}
	}
	_ = s.db.Close()
}

func connect(ctx context.Context, dsnStr string) (*session, error) {
	dsn, err := mysqlx.ParseDSN(dsnStr)
	if err != nil {
		return nil, err
	}
	db, err := dsn.Open(func(c *mysql.Config) { c.InterpolateParams = true })
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(2)
	s := &session{db: db, dsn: dsn}
	op := "connecting to " + dsn.Addr() + " as " + dsn.User()
	if s.clone, err = db.Conn(ctx); err == nil {
		err = s.clone.PingContext(ctx)
	}
	if err != nil {
		s.close()
		return nil, mysqlx.Translate(op, err)
	}
	if s.srv, err = mysqlx.Detect(ctx, s.clone); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// checkServer refuses a server without a clone plugin to have.
func checkServer(srv *mysqlx.Server) error {
	if srv.IsMariaDB() {
		return fmt.Errorf("%w: %s has no clone plugin (CLONE is MySQL's, from 8.0.17): use --engine mariabackup (any filesystem) or --engine snapshot (datadir on Btrfs, LVM or ZFS), or logical", ErrUnsupported, srv)
	}
	if !srv.AtLeast(8, 0, 17) {
		return fmt.Errorf("%w: %s: CLONE LOCAL DATA DIRECTORY needs MySQL ≥ 8.0.17; use --engine mariabackup (with xtrabackup) or logical", ErrUnsupported, srv)
	}
	return nil
}

// checkPlugin reads the clone plugin's status; Tidemark never installs it.
func checkPlugin(ctx context.Context, c *sql.Conn, srv *mysqlx.Server) error {
	var status string
	err := c.QueryRowContext(ctx, "SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME='clone'").Scan(&status)
	how := "install it yourself (tidemark never installs plugins): INSTALL PLUGIN clone SONAME 'mysql_clone.so'; or start the server with --plugin-load-add=mysql_clone.so ([mysqld] plugin-load-add=mysql_clone.so in my.cnf)"
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%w: the clone plugin is not installed on %s: %s", ErrPluginMissing, srv, how)
	case err != nil:
		return mysqlx.Translate("reading the clone plugin's status", err)
	case !strings.EqualFold(status, "ACTIVE"):
		return fmt.Errorf("%w: the clone plugin on %s is %s, not ACTIVE: see the server's error log; %s", ErrPluginMissing, srv, status, how)
	}
	return nil
}

// checkGrants looks for BACKUP_ADMIN (or ALL PRIVILEGES) on *.* in SHOW
// GRANTS. MySQL 8 prints dynamic privileges such as BACKUP_ADMIN on a line
// of their own; privileges held through roles are not printed without
// USING, so a user with roles is let through and the server's own
// refusal (which names the privilege) decides.
func checkGrants(ctx context.Context, c *sql.Conn, user string) error {
	rows, err := c.QueryContext(ctx, "SHOW GRANTS")
	if err != nil {
		return nil // CLONE's own error names the privilege
	}
	defer func() { _ = rows.Close() }()
	has, roles := false, false
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return nil
		}
		has = has || grantsBackupAdmin(line)
		u := strings.ToUpper(strings.TrimSpace(line))
		if strings.HasPrefix(u, "GRANT ") && !strings.Contains(u, " ON ") {
			roles = true // GRANT `role`@`%` TO ...
		}
	}
	if rows.Err() != nil || has || roles {
		return nil
	}
	return &mysqlx.Error{Kind: mysqlx.ErrPrivilege, Op: "checking privileges",
		Msg: fmt.Sprintf("the user %s lacks BACKUP_ADMIN, which CLONE LOCAL DATA DIRECTORY needs: GRANT BACKUP_ADMIN ON *.* TO %s", user, user)}
}

// grantsBackupAdmin says whether one SHOW GRANTS line grants BACKUP_ADMIN
// (or every privilege) on *.*.
func grantsBackupAdmin(line string) bool {
	u := strings.ToUpper(strings.TrimSpace(line))
	privs, rest, ok := strings.Cut(strings.TrimPrefix(u, "GRANT "), " ON ")
	if !ok || !strings.HasPrefix(strings.TrimSpace(rest), "*.*") {
		return false
	}
	for _, p := range strings.Split(privs, ",") {
		switch strings.TrimSpace(p) {
		case "BACKUP_ADMIN", "ALL", "ALL PRIVILEGES":
			return true
		}
	}
	return false
}

// readDirs reads the datadir and the binlogs' base name.
func (s *session) readDirs(ctx context.Context) error {
	var binBase sql.NullString
	if err := s.clone.QueryRowContext(ctx, "SELECT @@datadir, @@log_bin_basename").Scan(&s.datadir, &binBase); err != nil {
		return mysqlx.Translate("reading the server's datadir", err)
	}
	d := filepath.Clean(s.datadir)
	if r, err := filepath.EvalSymlinks(d); err == nil {
		d = r
	}
	s.datadir = d
	if binBase.Valid && binBase.String != "" {
		s.binPrefix = filepath.Base(binBase.String) + "."
	}
	return nil
}

// tag names this server's scratch directories: a hash of its datadir.
func tag(datadir string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(datadir))
	return fmt.Sprintf("%08x", h.Sum32())
}

// ScratchDirPrefix is how the names of the scratch directories of the
// server whose datadir is datadir (symlinks resolved) begin.
func ScratchDirPrefix(datadir string) string { return ScratchPrefix + tag(datadir) + "-" }

func (e *Engine) scratchParent(datadir string) (string, error) {
	p := e.ScratchParent
	if p == "" {
		p = filepath.Dir(datadir)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("clone scratch directory %q: the server needs an absolute path", p)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("clone scratch directory: %w (the server clones into a new directory there; it must exist)", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("clone scratch directory %s is not a directory", p)
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	if p == datadir || strings.HasPrefix(p, datadir+"/") {
		return "", fmt.Errorf("clone scratch directory %s is inside the datadir %s, where MySQL refuses to clone (ER_PATH_IN_DATADIR): choose a directory beside it", p, datadir)
	}
	return p, nil
}

// dataSize is what the clone will write, about: every file of the datadir
// but the binlogs (a clone has none).
func dataSize(datadir, binPrefix string) (int64, error) {
	var n int64
	err := filepath.WalkDir(datadir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() || binPrefix != "" && strings.HasPrefix(d.Name(), binPrefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n += fi.Size()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("measuring the datadir %s (the clone engine runs on the server's host as a user that can read it: root or the server's user): %w", datadir, err)
	}
	return n, nil
}

// checkSpace compares the scratch filesystem's free space with the size of
// the datadir plus 5% (the clone writes the redo generated while it runs
// on top of the files).
func checkSpace(parent string, need int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(parent, &st); err != nil {
		return fmt.Errorf("clone scratch directory %s: %w", parent, err)
	}
	free := int64(st.Bavail) * st.Bsize
	want := need + need/20
	if free < want {
		return fmt.Errorf("%w in %s: %s free, the clone needs about %s (the datadir without binlogs, plus 5%%): free space there or set the clone scratch directory to a larger filesystem", ErrNoSpace, parent, humanize.Bytes(free), humanize.Bytes(want))
	}
	return nil
}

// preflight runs the checks that need no scratch directory: server,
// plugin, privilege, where to clone; it returns the scratch parent and the
// size to expect.
func (e *Engine) preflight(ctx context.Context, s *session) (parent string, size int64, err error) {
	if err := checkServer(s.srv); err != nil {
		return "", 0, err
	}
	if err := checkPlugin(ctx, s.clone, s.srv); err != nil {
		return "", 0, err
	}
	if err := checkGrants(ctx, s.clone, s.dsn.User()); err != nil {
		return "", 0, err
	}
	if err := s.readDirs(ctx); err != nil {
		return "", 0, err
	}
	if parent, err = e.scratchParent(s.datadir); err != nil {
		return "", 0, err
	}
	if size, err = dataSize(s.datadir, s.binPrefix); err != nil {
		return "", 0, err
	}
	return parent, size, nil
}

// Check says whether a backup of the server at dsn could run now, without
// starting one: nil, or the first refusal Backup would give (errors.Is
// ErrUnsupported, ErrPluginMissing, mysqlx.ErrPrivilege, ErrNoSpace, or a
// scratch-directory problem), with its reason. For engine selection.
func (e *Engine) Check(ctx context.Context, dsn string) error {
	s, err := connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer s.close()
	parent, size, err := e.preflight(ctx, s)
	if err != nil {
		return err
	}
	return checkSpace(parent, size)
}

// Backup implements engines.Engine: check, clone into a scratch directory
// while following clone_progress, read the coordinates from clone_status,
// copy the clone into the archive, remove the scratch directory (also on
// failure and cancellation).
func (e *Engine) Backup(ctx context.Context, p engines.BackupParams) (res *engines.BackupResult, err error) {
	if p.Sink == nil {
		return nil, errors.New("clone backup: no sink")
	}
	if len(p.Databases) > 0 {
		return nil, errors.New("clone backup: a clone holds every database; --databases is for the logical engine")
	}
	s, err := connect(ctx, p.DSN)
	if err != nil {
		return nil, err
	}
	defer s.close()
	parent, size, err := e.preflight(ctx, s)
	if err != nil {
		return nil, err
	}
	p.Sink.SetServer(s.srv.Proto())
	res = &engines.BackupResult{}
	// What a killed run left would take the space this one needs.
	if cl, err := e.cleanup(ctx, s); err != nil {
		return nil, err
	} else if len(cl.Removed) > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("removed %d clone director(ies) an earlier, interrupted backup left: %s", len(cl.Removed), strings.Join(cl.Removed, ", ")))
	}

	if err := checkSpace(parent, size); err != nil {
		return nil, err
	}
	name := ScratchPrefix + tag(s.datadir) + "-" + time.Now().UTC().Format("20060102T150405.000000000Z")
	dir := filepath.Join(parent, name)
	lk, err := lockScratch(dir)
	if err != nil {
		return nil, err
	}
	cloneDone := true // false while the server may still write into dir
	defer func() {
		if !cloneDone {
			_ = lk.Close() // CleanLeftovers removes it once the server is done
			return
		}
		rerr := os.RemoveAll(dir)
		_ = os.Remove(lk.Name())
		_ = lk.Close()
		if rerr != nil {
			rerr = fmt.Errorf("removing the clone directory %s (the agent removes it at its next start): %w", dir, rerr)
			if err == nil {
				res.Warnings = append(res.Warnings, rerr.Error())
			} else {
				err = errors.Join(err, rerr)
			}
		}
	}()

	if s.mon, err = s.db.Conn(ctx); err != nil {
		return nil, mysqlx.Translate("opening a second connection", err)
	}
	started := time.Now()
	cloneDone, err = e.runClone(ctx, s, dir, size, p.Progress)
	if err != nil {
		return nil, err
	}
	cloneTime := time.Since(started)
	cp, err := readStatus(ctx, s.mon, dir)
	if err != nil {
		return nil, err
	}
	p.Sink.SetConsistency(cp)
	p.Sink.SetLockDuration(0) // commits are never blocked; DDL is, while the clone copies
	block := e.Block
	if block == 0 {
		block = DefaultBlock
	}
	p.Sink.SetEngineMetadata(physical.MetaFormat, physical.FormatVersion)
	p.Sink.SetEngineMetadata(physical.MetaBlock, strconv.Itoa(block))
	// A clone is consistent; starting a server on it once is still the
	// restore's check (recovery finds nothing to do on a clean clone).
	p.Sink.SetEngineMetadata(physical.MetaPrepare, physical.PrepareCrashRecovery)
	p.Sink.SetEngineMetadata(MetaScratch, dir)
	p.Sink.SetEngineMetadata(MetaCloneTime, cloneTime.Round(time.Millisecond).String())
	cres, err := physical.CopyTree(ctx, physical.CopyParams{
		Sink: p.Sink, Roots: []physical.Root{{Name: physical.RootDatadir, Dir: dir}}, Parallel: p.Parallel, Block: block,
		Progress: func(done, total int64) {
			if p.Progress != nil {
				p.Progress(engines.Progress{Phase: "files", BytesDone: done, BytesTotal: total})
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("copying the clone %s into the backup: %w", dir, err)
	}
	if p.Progress != nil {
		p.Progress(engines.Progress{Phase: "files", BytesDone: cres.Bytes, BytesTotal: cres.Bytes})
	}
	res.Files = cres.Files
	return res, nil
}

// lockScratch creates and flocks <dir>.lock: held for the backup, it
// tells CleanLeftovers the directory is in use. A lock file a cleaner
// unlinked between our create and our flock is made again.
func lockScratch(dir string) (*os.File, error) {
	p := dir + ".lock"
	for range 3 {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("creating the clone lock file %s (tidemark must be able to write where the server clones): %w", p, err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("locking %s: %w", p, err)
		}
		var a, b unix.Stat_t
		if unix.Fstat(int(f.Fd()), &a) == nil && unix.Stat(p, &b) == nil && a.Ino == b.Ino && a.Dev == b.Dev {
			return f, nil
		}
		_ = f.Close()
	}
	return nil, fmt.Errorf("locking %s: it keeps being removed", p)
}

// runClone runs CLONE LOCAL DATA DIRECTORY on s.clone and follows
// clone_progress on s.mon until it ends. Canceled, it kills the clone and
// waits for the statement to end; done is false when the server may still
// be writing into dir.
func (e *Engine) runClone(ctx context.Context, s *session, dir string, estimate int64, progress func(engines.Progress)) (done bool, err error) {
	var thread int64
	if err := s.clone.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&thread); err != nil {
		return true, mysqlx.Translate("reading the connection id", err)
	}
	if _, err := s.mon.ExecContext(ctx, "SET SESSION time_zone = '+00:00'"); err != nil {
		return true, mysqlx.Translate("setting up the monitoring session", err)
	}
	result := make(chan error, 1)
	go func() {
		// Not ctx: a canceled context would close the connection and leave
		// the server cloning; cancellation is KILL QUERY below.
		_, err := s.clone.ExecContext(context.WithoutCancel(ctx), "CLONE LOCAL DATA DIRECTORY = "+mysqlx.QuoteString(dir))
		result <- err
	}()
	tick := time.NewTicker(e.poll())
	defer tick.Stop()
	report := func() {
		if progress == nil {
			return
		}
		if done, total, ok := readProgress(ctx, s.mon); ok {
			if total == 0 { // before the clone has estimated: our measure of the datadir
				total = estimate
			}
			progress(engines.Progress{Phase: "clone", BytesDone: done, BytesTotal: total})
		}
	}
	for {
		select {
		case err := <-result:
			if err != nil {
				return true, cloneError(s.srv, s.dsn.User(), dir, err)
			}
			report()
			return true, nil
		case <-tick.C:
			report()
		case <-ctx.Done():
			kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			_, kerr := s.mon.ExecContext(kctx, "KILL QUERY "+strconv.FormatInt(thread, 10))
			cancel()
			if kerr != nil {
				return false, errors.Join(ctx.Err(), fmt.Errorf("stopping the clone (KILL QUERY %d) failed, its directory %s is left for the agent's cleanup: %w", thread, dir, kerr))
			}
			select {
			case cerr := <-result:
				_ = cerr // ER_QUERY_INTERRUPTED, or success just before the kill: canceled either way
				return true, ctx.Err()
			case <-time.After(e.killWait()):
				return false, fmt.Errorf("%w; the killed clone did not end within %v, its directory %s is left for the agent's cleanup", ctx.Err(), e.killWait(), dir)
			}
		}
	}
}

// readProgress sums clone_progress over its stages.
func readProgress(ctx context.Context, c *sql.Conn) (done, total int64, ok bool) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := c.QueryRowContext(qctx, "SELECT IFNULL(SUM(DATA), 0), IFNULL(SUM(ESTIMATE), 0) FROM performance_schema.clone_progress").Scan(&done, &total)
	return done, total, err == nil
}

// cloneError explains a failed CLONE statement.
func cloneError(srv *mysqlx.Server, user, dir string, err error) error {
	op := "CLONE LOCAL DATA DIRECTORY = '" + dir + "'"
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return mysqlx.Translate(op, err)
	}
	switch me.Number {
	case 1524: // ER_PLUGIN_IS_NOT_LOADED
		return fmt.Errorf("%w: %s: %s: install it yourself: INSTALL PLUGIN clone SONAME 'mysql_clone.so', or --plugin-load-add=mysql_clone.so", ErrPluginMissing, op, me.Message)
	case 3632: // ER_PATH_IN_DATADIR
		return fmt.Errorf("%s: %s: set the clone scratch directory outside the datadir", op, me.Message)
	case 1007: // ER_DB_CREATE_EXISTS
		return fmt.Errorf("%s: %s: another run uses that name; run the backup again", op, me.Message)
	case 3634: // ER_CLONE_TOO_MANY_CONCURRENT_CLONES
		return fmt.Errorf("%s: %s: another clone runs on %s; wait for it", op, me.Message, srv)
	}
	if strings.Contains(me.Message, "errno: 13") || strings.Contains(me.Message, "OS errno 13") || strings.Contains(me.Message, "Permission denied") {
		return fmt.Errorf("%s: %s: mysqld cannot create the directory there: set the clone scratch directory to one mysqld can write, on a filesystem with room for the datadir", op, me.Message)
	}
	return mysqlx.TranslateNeed(op, err, "BACKUP_ADMIN: GRANT BACKUP_ADMIN ON *.* TO "+user)
}

// readStatus reads the clone's coordinates from clone_status, checking
// that the row is our clone's and that it completed.
func readStatus(ctx context.Context, c *sql.Conn, dir string) (*v1.ConsistencyPoint, error) {
	var state, dest, errMsg, file, gtid, end sql.NullString
	var errNo sql.NullInt64
	var pos sql.NullInt64
	err := c.QueryRowContext(ctx, "SELECT STATE, DESTINATION, ERROR_NO, ERROR_MESSAGE, BINLOG_FILE, BINLOG_POSITION, GTID_EXECUTED, END_TIME FROM performance_schema.clone_status").
		Scan(&state, &dest, &errNo, &errMsg, &file, &pos, &gtid, &end)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errors.New("performance_schema.clone_status has no row after the clone: cannot read its binlog coordinates")
	}
	if err != nil {
		return nil, mysqlx.Translate("reading performance_schema.clone_status", err)
	}
	if filepath.Clean(dest.String) != filepath.Clean(dir) {
		return nil, fmt.Errorf("performance_schema.clone_status describes a clone into %s, not ours into %s (another clone ran meanwhile): cannot tell our coordinates; run the backup again", dest.String, dir)
	}
	if state.String != "Completed" {
		return nil, fmt.Errorf("the clone into %s is %q in performance_schema.clone_status (error %d: %s)", dir, state.String, errNo.Int64, errMsg.String)
	}
	cp := &v1.ConsistencyPoint{
		BinlogFile: file.String, BinlogPosition: uint64(max(pos.Int64, 0)),
		GtidSet: strings.ReplaceAll(gtid.String, "\n", ""),
	}
	if t, ok := parseTime(end.String); ok {
		cp.Time = timestamppb.New(t)
	}
	return cp, nil
}

// parseTime reads a TIMESTAMP read in a +00:00 session.
func parseTime(s string) (time.Time, bool) {
	for _, layout := range []string{"2006-01-02 15:04:05.999999", "2006-01-02 15:04:05", time.RFC3339Nano} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}
