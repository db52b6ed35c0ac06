package snapshot

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"golang.org/x/sys/unix"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/engines/selection"
	"github.com/tidemark-backup/tidemark/internal/humanize"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Name is the engine's name in manifests and on the command line.
const Name = "snapshot"

// DefaultBlock is the block size files are cut into (see the README for
// the measurement behind it).
const DefaultBlock = 1 << 20

// Engine-metadata keys this engine adds to the physical ones.
const (
	MetaVolume = "snapshot.volume" // what was snapshotted, e.g. "Btrfs subvolume /data"
	// MetaDDLBlocked is how long DDL (and writes to non-transactional
	// tables) were blocked, a Go duration; the manifest's lock duration is
	// the shorter time commits were blocked.
	MetaDDLBlocked = "snapshot.ddl_blocked"
	// MetaReused says how many files were taken over unread from the
	// previous backup (the manifest's parent) because they had not
	// changed.
	MetaReused = "snapshot.reused"
	// MetaRedo says what of the InnoDB redo log was stored: the live
	// window (checkpoint to end), or the whole file and why.
	MetaRedo = "snapshot.redo"
)

// Engine takes backups from a filesystem snapshot of the server's
// volume. The zero value is ready; fields adjust it.
type Engine struct {
	// Runner runs btrfs, lvm, mount and zfs commands; nil: this host's.
	Runner Runner
	// Owner tags our snapshots' names (tidemark-<owner>-<time>) so that
	// leftovers of this instance are recognised and nothing else is
	// touched; default: a hash of the server's datadir path.
	Owner string
	// StateDir holds the per-instance lock file that keeps two backups
	// (or a backup and Cleanup) of one instance apart, and LVM snapshot
	// mount points; default: /run/tidemark-snapshot (when /run is
	// writable), else <os.TempDir()>/tidemark-snapshot.
	StateDir string
	// LVMSnapshotSize is lvcreate --size for the copy-on-write space of an
	// LVM snapshot: room for what the server writes while it is read.
	// Default "1G".
	LVMSnapshotSize string
	// Block is the block size files are cut into; 0: DefaultBlock.
	Block int
	// LockWait bounds the wait for the backup lock behind running
	// statements; 0: 30 s. MySQL: also how long a query already running
	// may keep FLUSH TABLES WITH READ LOCK from being tried.
	LockWait time.Duration
	// WholeRedo stores the whole redo log rather than only the part crash
	// recovery reads (physical.RedoLive); for comparisons.
	WholeRedo bool

	locate locateFunc // tests: a volume behind a command double
}

// New returns the engine with its defaults.
func New() *Engine { return &Engine{} }

// Name implements engines.Engine.
func (e *Engine) Name() string { return Name }

func (e *Engine) runner() Runner {
	if e.Runner != nil {
		return e.Runner
	}
	return ExecRunner{}
}

func (e *Engine) stateDir() string {
	if e.StateDir != "" {
		return e.StateDir
	}
	// One place for every tidemark process on the host (agent, standalone
	// runs), whatever their TMPDIR: the lock file only keeps runs apart if
	// they all see it.
	if fi, err := os.Stat("/run"); err == nil && fi.IsDir() && unix.Access("/run", unix.W_OK) == nil {
		return "/run/tidemark-snapshot"
	}
	return filepath.Join(os.TempDir(), "tidemark-snapshot")
}

func (e *Engine) lockWait() time.Duration {
	if e.LockWait > 0 {
		return e.LockWait
	}
	return 30 * time.Second
}

// Restore implements engines.Engine: a physical backup is not replayed
// into a running server.
func (e *Engine) Restore(context.Context, engines.RestoreParams) (*engines.RestoreResult, error) {
	return nil, errors.New("a snapshot backup holds the server's files, not statements: restore it into an empty directory with `tidemark restore ID --to-datadir DIR` and start a server there")
}

// layout is what discovery found: the roots to copy and the one volume
// holding them.
type layout struct {
	datadir string
	// redoRoot and redoPath name the redo log file in the copy (root,
	// slash path below it): innodb_log_group_home_dir may be the datadir,
	// a directory inside it, or its own root.
	redoRoot, redoPath string
	roots              []physical.Root // paths on the live server
	vol                volume
	tag                string
}

// prefix begins the name of every snapshot of this instance.
func (l *layout) prefix() string { return "tidemark-" + l.tag + "-" }

// session is one pinned connection to the server.
type session struct {
	db       *sql.DB
	conn     *sql.Conn
	srv      *mysqlx.Server
	dsn      *mysqlx.DSN
	sessions *mysqlx.Sessions // the connections' ids, to kill their statements
}

func (s *session) close() {
	if s.conn != nil {
		_ = s.conn.Close()
	}
	_ = s.db.Close() // ends the session: a lock never outlives us
}

func connect(ctx context.Context, dsnStr string) (*session, error) {
	dsn, err := mysqlx.ParseDSN(dsnStr)
	if err != nil {
		return nil, err
	}
	db, sessions, err := dsn.OpenSessions(func(c *mysql.Config) { c.InterpolateParams = true })
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(2) // the pinned one, and one to name a blocking query
	s := &session{db: db, dsn: dsn, sessions: sessions}
	op := "connecting to " + dsn.Addr() + " as " + dsn.User()
	if s.conn, err = db.Conn(ctx); err != nil {
		s.close()
		return nil, mysqlx.Translate(op, err)
	}
	if err := s.conn.PingContext(ctx); err != nil {
		s.close()
		return nil, mysqlx.Translate(op, err)
	}
	if s.srv, err = mysqlx.Detect(ctx, s.conn); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// discover reads where the server keeps its files and finds the volume
// under them. Files on two volumes are refused: one snapshot could not
// hold them at one instant.
func (e *Engine) discover(ctx context.Context, s *session) (*layout, error) {
	var datadir, redo, undo, dataHome string
	var binBase sql.NullString
	if err := s.conn.QueryRowContext(ctx, "SELECT @@datadir, IFNULL(@@innodb_log_group_home_dir, ''), IFNULL(@@innodb_undo_directory, ''), IFNULL(@@innodb_data_home_dir, ''), @@log_bin_basename").
		Scan(&datadir, &redo, &undo, &dataHome, &binBase); err != nil {
		return nil, mysqlx.Translate("reading the server's directories", err)
	}
	abs := func(p string) string {
		if p == "" {
			return filepath.Clean(datadir)
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(datadir, p)
		}
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		return filepath.Clean(p)
	}
	datadir = abs(datadir)
	l := &layout{datadir: datadir, roots: []physical.Root{{Name: physical.RootDatadir, Dir: datadir}}}
	inside := func(p string) bool { return p == datadir || strings.HasPrefix(p, datadir+"/") }
	if p := abs(dataHome); !inside(p) {
		return nil, fmt.Errorf("the system tablespace lives in %s (innodb_data_home_dir), outside the datadir %s: the snapshot engine copies only the datadir, redo, undo and binlog directories; use --engine mariabackup", p, datadir)
	}
	l.redoRoot, l.redoPath = physical.RootRedo, physical.RedoLogName
	if rd := abs(redo); inside(rd) {
		rel, err := filepath.Rel(datadir, filepath.Join(rd, physical.RedoLogName))
		if err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
		l.redoRoot, l.redoPath = physical.RootDatadir, filepath.ToSlash(rel)
	}
	for _, r := range []struct{ name, dir string }{
		{physical.RootRedo, abs(redo)}, {physical.RootUndo, abs(undo)},
	} {
		if !inside(r.dir) {
			l.roots = append(l.roots, physical.Root{Name: r.name, Dir: r.dir})
		}
	}
	if binBase.Valid && binBase.String != "" {
		if d := filepath.Dir(abs(binBase.String)); !inside(d) {
			l.roots = append(l.roots, physical.Root{Name: physical.RootBinlog, Dir: d})
		}
	}
	if err := refuseRemoteTablespaces(datadir); err != nil {
		return nil, err
	}

	loc := e.locate
	if loc == nil {
		loc = locate
	}
	size := e.LVMSnapshotSize
	if size == "" {
		size = "1G"
	}
	var first uint64
	for i, r := range l.roots {
		v, dev, err := loc(ctx, e.runner(), r.Dir, size, filepath.Join(e.stateDir(), "mnt"))
		if err != nil {
			return nil, fmt.Errorf("%s directory: %w", r.Name, err)
		}
		if i == 0 {
			l.vol, first = v, dev
			continue
		}
		if dev != first {
			return nil, fmt.Errorf("%w together: the %s directory %s is on %s, the datadir on %s; one snapshot cannot hold both at one instant: put them on one volume, or use --engine mariabackup", ErrNotSnapshottable, r.Name, r.Dir, v, l.vol)
		}
	}
	l.tag = e.Owner
	if l.tag == "" {
		h := fnv.New32a()
		_, _ = h.Write([]byte(datadir))
		l.tag = fmt.Sprintf("%08x", h.Sum32())
	}
	return l, nil
}

// freeSpacer is a volume whose snapshots take their copy-on-write space
// from the volume's own free space (Btrfs). LVM reserves it at lvcreate
// (--size, refused there when the volume group lacks it); ZFS is not
// checked yet.
type freeSpacer interface {
	freeBytes() (uint64, error)
}

// checkSpace refuses, as a capability failure, a snapshot of a volume with
// less free space than engine selection asks for (SnapshotFreeNeeded of
// the files to copy): every page the server writes while the snapshot is
// held takes new space, and on a volume that runs out the server's own
// writes fail, not the snapshot's. Refused before the lock, the backup can
// fall back to the next engine with the server untouched.
func checkSpace(l *layout) error {
	fsp, ok := l.vol.(freeSpacer)
	if !ok {
		return nil
	}
	free, err := fsp.freeBytes()
	if err != nil {
		return fmt.Errorf("free space of %s: %w", l.vol, err)
	}
	var size uint64
	for _, r := range l.roots {
		n, err := treeBytes(r.Dir)
		if err != nil {
			return fmt.Errorf("sizing the %s directory %s: %w", r.Name, r.Dir, err)
		}
		size += n
	}
	if need := selection.SnapshotFreeNeeded(size); free < need {
		hb := func(n uint64) string { return humanize.Bytes(int64(n)) }
		return fmt.Errorf("%w: snapshot space exhausted: %s has %s free, and a snapshot of %s of server files needs %s for what the server writes while it is held (a tenth of the files, at least %s); free space on the filesystem or use --engine mariabackup",
			engines.ErrCapability, l.vol, hb(free), hb(size), hb(need), hb(selection.MinSnapshotFree))
	}
	return nil
}

// treeBytes is the size of the regular files under dir (our snapshot
// directory excluded).
func treeBytes(dir string) (uint64, error) {
	var n uint64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a file removed while we walk
			}
			return err
		}
		if d.IsDir() && d.Name() == SnapshotDirName {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += uint64(fi.Size())
			}
		}
		return nil
	})
	return n, err
}

// refuseRemoteTablespaces: a table created WITH DATA DIRECTORY has an
// .isl file in its database directory naming where its .ibd lives; such
// files are outside every root a physical backup stores.
func refuseRemoteTablespaces(datadir string) error {
	isl, _ := filepath.Glob(filepath.Join(datadir, "*", "*.isl"))
	if len(isl) == 0 {
		return nil
	}
	b, _ := os.ReadFile(isl[0])
	return fmt.Errorf("%s: a table created WITH DATA DIRECTORY keeps its data in %s, outside the datadir: the snapshot engine does not copy it; use --engine mariabackup or logical", isl[0], strings.TrimSpace(string(b)))
}

// instanceLock keeps two backups (or a backup and Cleanup) of one
// instance apart, so that leftovers are removed only when no run of ours
// is using them. The kernel drops it when the process dies.
func (e *Engine) instanceLock(l *layout) (*os.File, error) {
	if err := os.MkdirAll(e.stateDir(), 0o700); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	p := filepath.Join(e.stateDir(), l.tag+".lock")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another snapshot backup of the server with datadir %s is running (it holds %s); wait for it to finish: %w", l.datadir, p, ErrBusy)
		}
		return nil, fmt.Errorf("snapshot: locking %s: %w", p, err)
	}
	return f, nil
}

// ErrBusy is wrapped when another run of ours holds the instance.
var ErrBusy = errors.New("instance busy")

// removeLeftovers drops every snapshot of ours for this instance: the
// instance lock is held, so none is in use.
func removeLeftovers(ctx context.Context, l *layout) ([]string, error) {
	names, err := l.vol.leftovers(ctx, l.prefix())
	if err != nil {
		return nil, fmt.Errorf("listing leftover snapshots on %s: %w", l.vol, err)
	}
	var removed []string
	for _, n := range names {
		if err := l.vol.drop(ctx, n); err != nil {
			return removed, fmt.Errorf("removing the leftover snapshot %s on %s: %w", n, l.vol, err)
		}
		removed = append(removed, n)
	}
	return removed, nil
}

// CleanupResult says what Cleanup removed.
type CleanupResult struct {
	Removed []string // snapshot names
	Volume  string
	Busy    bool // a backup of ours is running; nothing was touched
}

// Cleanup removes the snapshots a killed run of ours left on the volume of
// the server at dsn (never one whose name does not carry this instance's
// tag, never one a running backup uses). The agent calls it at start
// (CleanLeftovers); a backup does the same before it takes its snapshot.
func (e *Engine) Cleanup(ctx context.Context, dsn string) (*CleanupResult, error) {
	s, err := connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer s.close()
	l, err := e.discover(ctx, s)
	if err != nil {
		return nil, err
	}
	res := &CleanupResult{Volume: l.vol.String()}
	lk, err := e.instanceLock(l)
	if errors.Is(err, ErrBusy) {
		res.Busy = true
		return res, nil
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = lk.Close() }()
	res.Removed, err = removeLeftovers(ctx, l)
	return res, err
}

// CleanLeftovers implements engines.Cleaner: Cleanup, with a server whose
// datadir is not on a volume we can snapshot being nothing to clean.
func (e *Engine) CleanLeftovers(ctx context.Context, dsn string) ([]string, error) {
	res, err := e.Cleanup(ctx, dsn)
	if errors.Is(err, ErrNotSnapshottable) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return res.Removed, nil
}

// Backup implements engines.Engine: discover the volume, lock the server
// only while the snapshot is taken, copy every file from the read-only
// snapshot, drop the snapshot (also on failure).
func (e *Engine) Backup(ctx context.Context, p engines.BackupParams) (res *engines.BackupResult, err error) {
	if p.Sink == nil {
		return nil, errors.New("snapshot backup: no sink")
	}
	if len(p.Databases) > 0 {
		return nil, errors.New("snapshot backup: a filesystem snapshot holds every database; --databases is for the logical engine")
	}
	s, err := connect(ctx, p.DSN)
	if err != nil {
		return nil, err
	}
	defer s.close()
	// A cancelled backup's lock statement waiting on the server
	// (FLUSH TABLES WITH READ LOCK queues every write behind it) is killed
	// before Backup returns, not left to lock_wait_timeout.
	stopKill := s.sessions.KillOnCancel(ctx)
	defer func() { err = mysqlx.JoinKill(err, stopKill(err)) }()
	p.Sink.SetServer(s.srv.Proto())
	l, err := e.discover(ctx, s)
	if err != nil {
		return nil, err
	}
	lk, err := e.instanceLock(l)
	if err != nil {
		return nil, err
	}
	defer func() { _ = lk.Close() }()
	res = &engines.BackupResult{}
	removed, err := removeLeftovers(ctx, l)
	if err != nil {
		return nil, err
	}
	if len(removed) > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("removed %d snapshot(s) an earlier, interrupted backup left on %s: %s", len(removed), l.vol, strings.Join(removed, ", ")))
	}

	if err := checkSpace(l); err != nil {
		return nil, err
	}

	name := l.prefix() + time.Now().UTC().Format("20060102T150405.000Z")
	name = strings.ReplaceAll(name, ".", "_") // LVM and ZFS names: no dots needed
	defer func() {
		// A fresh context: a canceled backup still drops its snapshot.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if derr := l.vol.drop(dctx, name); derr != nil {
			derr = fmt.Errorf("dropping the snapshot %s on %s (the next backup or Cleanup removes it): %w", name, l.vol, derr)
			if err == nil {
				res.Warnings = append(res.Warnings, derr.Error())
			} else {
				err = errors.Join(err, derr)
			}
		}
	}()
	// Write the volume's dirty pages out before the lock, and again once
	// DDL is blocked but commits still flow: a Btrfs snapshot commits the
	// filesystem's transaction and an LVM snapshot freezes the filesystem,
	// both of which would otherwise write them with commits blocked.
	syncVolume(l.vol.Root())
	var takenAt time.Time
	lr, err := e.lockAndSnapshot(ctx, s, func() { syncVolume(l.vol.Root()) }, func(ctx context.Context) error {
		if err := l.vol.create(ctx, name); err != nil {
			return fmt.Errorf("snapshot of %s: %w", l.vol, err)
		}
		takenAt = time.Now()
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.LockDuration = lr.commits
	p.Sink.SetConsistency(lr.cp)
	p.Sink.SetLockDuration(lr.commits)
	p.Sink.SetEngineMetadata(MetaDDLBlocked, lr.ddl.String())

	dir, err := l.vol.open(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("opening the snapshot %s of %s: %w", name, l.vol, err)
	}
	block := e.Block
	if block == 0 {
		block = DefaultBlock
	}
	var roots []physical.Root
	for _, r := range l.roots {
		rel, err := filepath.Rel(l.vol.Root(), r.Dir)
		if err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
		roots = append(roots, physical.Root{Name: r.Name, Dir: filepath.Join(dir, rel)})
	}
	// The end of the redo log in the snapshot is at or before the LSN the
	// server reports now, after the snapshot was taken.
	live := e.redoLive(ctx, s, l, p.Sink)
	p.Sink.SetEngineMetadata(physical.MetaFormat, physical.FormatSparse)
	p.Sink.SetEngineMetadata(physical.MetaBlock, strconv.Itoa(block))
	p.Sink.SetEngineMetadata(physical.MetaPrepare, physical.PrepareCrashRecovery)
	p.Sink.SetEngineMetadata(MetaVolume, l.vol.String())
	cres, err := physical.CopyTree(ctx, physical.CopyParams{
		Sink: p.Sink, Roots: roots, Skip: skip, Parallel: p.Parallel, Block: block,
		// All-zero blocks (never-written pages) and the redo log outside
		// what recovery reads are holes: not read, hashed or stored.
		Sparse: true, Live: live,
		// The snapshot's files are read once: not through the page cache.
		Direct: true,
		// A snapshot's files keep their inode and times until they change:
		// the previous backup's copy of an unchanged one is taken over.
		Reuse: true, TakenAt: takenAt,
		Progress: func(done, total int64) {
			if p.Progress != nil {
				p.Progress(engines.Progress{Phase: "files", BytesDone: done, BytesTotal: total})
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("copying from the snapshot %s: %w", name, err)
	}
	if p.Progress != nil {
		p.Progress(engines.Progress{Phase: "files", BytesDone: cres.Bytes, BytesTotal: cres.Bytes})
	}
	res.Files = cres.Files
	if cres.Reused > 0 {
		p.Sink.SetEngineMetadata(MetaReused, fmt.Sprintf("%d files, %d bytes, from %s", cres.Reused, cres.ReusedBytes, cres.Parent))
	}
	return res, nil
}

// redoLive returns CopyParams.Live for the snapshot's redo log: the
// header and the window from the checkpoint to the server's current LSN
// (read now, after the snapshot, so at or beyond the end of the log in
// it). A log it cannot read with certainty (physical.RedoLive: MySQL's,
// an encrypted one, a bad checksum, ...) is kept whole; the manifest's
// snapshot.redo says which, and why.
func (e *Engine) redoLive(ctx context.Context, s *session, l *layout, sink engines.Sink) func(physical.File, string) []physical.Extent {
	note := func(msg string) {
		sink.SetEngineMetadata(MetaRedo, msg)
		slog.Info("snapshot backup: redo log", "datadir", l.datadir, "stored", msg)
	}
	if e.WholeRedo {
		note("whole file: asked for (Engine.WholeRedo)")
		return nil
	}
	var name string
	var lsn uint64
	if err := s.conn.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Innodb_lsn_current'").Scan(&name, &lsn); err != nil {
		note("whole file: the server's current LSN is unknown (Innodb_lsn_current: " + err.Error() + ")")
		return nil
	}
	return func(f physical.File, path string) []physical.Extent {
		if f.Root != l.redoRoot || f.Path != l.redoPath {
			return nil
		}
		w, err := physical.RedoLive(path, lsn)
		if err != nil {
			note("whole file: " + err.Error())
			return nil
		}
		note(fmt.Sprintf("%d of %d bytes: checkpoint LSN %d to LSN %d + %d", w.LiveBytes(), w.FileSize, w.CheckpointLSN, w.EndLSN, physical.RedoMargin))
		return w.Live
	}
}

// syncVolume is syncfs(2) on the filesystem holding dir; best effort (the
// snapshot is correct without it, the lock only longer).
func syncVolume(dir string) {
	f, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = unix.Syncfs(int(f.Fd()))
	_ = f.Close()
}

// skip leaves out what is not data: our snapshot directory, ZFS's
// snapshot directory, the server's socket and pid files, the temporary
// tablespace (recreated at start) and intermediate tables of an ALTER
// (#sql-*, dropped by crash recovery).
func skip(_, rel string, d fs.DirEntry) bool {
	base := filepath.Base(rel)
	if rel == SnapshotDirName || rel == ".zfs" {
		return true
	}
	if d.IsDir() {
		return false
	}
	switch {
	case strings.HasSuffix(base, ".pid"), strings.HasSuffix(base, ".sock"), strings.HasSuffix(base, ".sock.lock"),
		base == "ibtmp1", strings.HasPrefix(base, "#sql"):
		return true
	}
	return false
}

// blockingQuery names the longest-running statement other than ours, for
// a lock that could not be taken in time.
func blockingQuery(ctx context.Context, db *sql.DB) string {
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var id, secs int64
	var user, info string
	err := db.QueryRowContext(qctx, `SELECT ID, USER, TIME, LEFT(INFO, 200) FROM information_schema.PROCESSLIST
		WHERE INFO IS NOT NULL AND ID <> CONNECTION_ID() AND COMMAND NOT IN ('Sleep', 'Daemon', 'Binlog Dump', 'Binlog Dump GTID')
		AND INFO NOT LIKE 'BACKUP STAGE%' AND INFO NOT LIKE 'FLUSH TABLES WITH READ LOCK%' AND INFO NOT LIKE 'LOCK INSTANCE%'
		ORDER BY TIME DESC LIMIT 1`).Scan(&id, &user, &secs, &info)
	if err != nil {
		return "(could not read the process list: " + err.Error() + ")"
	}
	return fmt.Sprintf("connection %d of %s, running %d s: %s", id, user, secs, info)
}

// lockResult is what lockAndSnapshot measured.
type lockResult struct {
	cp      *v1.ConsistencyPoint
	commits time.Duration // commits blocked: the manifest's lock duration
	ddl     time.Duration // DDL (and non-transactional writes) blocked
}

// lockAndSnapshot takes the shortest lock that gives a consistent point
// with known coordinates, reads them, runs snap and unlocks, on one
// pinned connection. beforeCommits runs once DDL is blocked, just before
// commits are (MariaDB: before BACKUP STAGE BLOCK_COMMIT; MySQL: before
// FLUSH TABLES WITH READ LOCK).
func (e *Engine) lockAndSnapshot(ctx context.Context, s *session, beforeCommits func(), snap func(context.Context) error) (lr *lockResult, err error) {
	waitSecs := max(1, int(e.lockWait().Round(time.Second)/time.Second))
	if _, err := s.conn.ExecContext(ctx, "SET SESSION lock_wait_timeout = "+strconv.Itoa(waitSecs)); err != nil {
		return nil, mysqlx.Translate("setting up the session", err)
	}
	var lockStmts, unlockStmts []string
	var lockName, need string
	// blockFrom is the first statement that blocks anything (MariaDB's
	// FLUSH stage blocks writes to non-transactional tables, BLOCK_DDL
	// DDL; MySQL's LOCK INSTANCE DDL); the last one blocks commits.
	blockFrom := 0
	if s.srv.IsMariaDB() && s.srv.AtLeast(10, 4, 0) {
		// FLUSH closes non-transactional tables, BLOCK_DDL keeps the file
		// set still, BLOCK_COMMIT makes binlog and engines agree.
		lockStmts = []string{"BACKUP STAGE START", "BACKUP STAGE FLUSH", "BACKUP STAGE BLOCK_DDL", "BACKUP STAGE BLOCK_COMMIT"}
		unlockStmts = []string{"BACKUP STAGE END"}
		lockName, need = "BACKUP STAGE", "the RELOAD privilege (GRANT RELOAD ON *.*)"
		blockFrom = 1
	} else {
		if s.srv.IsMariaDB() {
			return nil, fmt.Errorf("%s has no BACKUP STAGE (MariaDB ≥ 10.4): the snapshot engine needs it; use --engine logical", s.srv)
		}
		// The guard: FLUSH TABLES WITH READ LOCK waits for running
		// statements while every new one queues behind it, so a long
		// query stalls the whole server. Wait a bounded time for none to
		// be running long, then try.
		if err := e.waitNoLongQuery(ctx, s); err != nil {
			return nil, err
		}
		lockStmts = []string{"LOCK INSTANCE FOR BACKUP", "FLUSH TABLES WITH READ LOCK"}
		unlockStmts = []string{"UNLOCK TABLES", "UNLOCK INSTANCE"}
		lockName, need = "LOCK INSTANCE FOR BACKUP / FLUSH TABLES WITH READ LOCK", "BACKUP_ADMIN and RELOAD (GRANT BACKUP_ADMIN, RELOAD ON *.*)"
	}
	var ddlStart, commitStart time.Time
	taken := 0
	unlock := func() error {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		var first error
		for _, u := range unlockStmts {
			if _, err := s.conn.ExecContext(rctx, u); err != nil && first == nil {
				first = mysqlx.Translate("releasing the backup lock ("+u+")", err)
			}
		}
		return first
	}
	defer func() {
		if taken > 0 {
			_ = unlock() // err is set; if this fails too, closing the session unlocks
		}
	}()
	for i, st := range lockStmts {
		taken++
		if i == blockFrom {
			ddlStart = time.Now()
		}
		if i == len(lockStmts)-1 {
			beforeCommits()
			commitStart = time.Now()
		}
		if _, err := s.conn.ExecContext(ctx, st); err != nil {
			if n := mysqlx.ServerErrorNumber(err); n == 1205 {
				return nil, fmt.Errorf("taking the backup lock (%s): waited %d s behind %s; run the backup when it is done, or raise the lock wait: %w", st, waitSecs, blockingQuery(ctx, s.db), err)
			}
			return nil, mysqlx.TranslateNeed("taking the backup lock ("+lockName+": "+st+")", err, need)
		}
	}
	lr = &lockResult{}
	if lr.cp, err = readCoordinates(ctx, s.conn, s.srv); err != nil {
		return nil, err
	}
	if err := snap(ctx); err != nil {
		return nil, err
	}
	taken = 0
	if err := unlock(); err != nil {
		return nil, err
	}
	lr.commits, lr.ddl = time.Since(commitStart), time.Since(ddlStart)
	return lr, nil
}

// waitNoLongQuery polls the process list until no statement has run for
// a second or more, for at most LockWait; then it gives up naming the
// statement.
func (e *Engine) waitNoLongQuery(ctx context.Context, s *session) error {
	deadline := time.Now().Add(e.lockWait())
	for {
		var n int
		err := s.conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.PROCESSLIST
			WHERE INFO IS NOT NULL AND ID <> CONNECTION_ID() AND TIME >= 1 AND COMMAND NOT IN ('Sleep', 'Daemon', 'Binlog Dump', 'Binlog Dump GTID')`).Scan(&n)
		if err != nil {
			return mysqlx.TranslateNeed("reading the process list", err, "the PROCESS privilege (GRANT PROCESS ON *.*)")
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not taking FLUSH TABLES WITH READ LOCK: a statement has been running for longer than the %v the backup waits (every new statement would queue behind the lock): %s; run the backup when it is done", e.lockWait(), blockingQuery(ctx, s.db))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// readCoordinates reads the binlog position and GTID state under the lock.
func readCoordinates(ctx context.Context, c *sql.Conn, srv *mysqlx.Server) (*v1.ConsistencyPoint, error) {
	cp := &v1.ConsistencyPoint{}
	need := "BINLOG MONITOR (MariaDB ≥ 10.5) or REPLICATION CLIENT: GRANT BINLOG MONITOR ON *.*"
	if !srv.IsMariaDB() {
		need = "REPLICATION CLIENT: GRANT REPLICATION CLIENT ON *.*"
	}
	if srv.LogBin {
		rows, err := c.QueryContext(ctx, "SHOW MASTER STATUS")
		if err != nil {
			return nil, mysqlx.TranslateNeed("reading the binlog position", err, need)
		}
		cols, _ := rows.Columns()
		if rows.Next() {
			vals := make([]sql.NullString, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				_ = rows.Close()
				return nil, mysqlx.Translate("reading the binlog position", err)
			}
			for i, col := range cols {
				switch strings.ToLower(col) {
				case "file":
					cp.BinlogFile = vals[i].String
				case "position":
					cp.BinlogPosition, _ = strconv.ParseUint(vals[i].String, 10, 64)
				}
			}
		}
		if err := rows.Close(); err != nil {
			return nil, mysqlx.Translate("reading the binlog position", err)
		}
	}
	q := "SELECT @@GLOBAL.gtid_executed"
	if srv.IsMariaDB() {
		q = "SELECT @@GLOBAL.gtid_binlog_pos"
	}
	var gtid sql.NullString
	if err := c.QueryRowContext(ctx, q).Scan(&gtid); err != nil && mysqlx.ServerErrorNumber(err) != 1193 {
		return nil, mysqlx.TranslateNeed("reading the GTID state", err, need)
	}
	cp.GtidSet = strings.ReplaceAll(gtid.String, "\n", "")
	var ts string
	if err := c.QueryRowContext(ctx, "SELECT CONCAT(UNIX_TIMESTAMP(NOW(6)))").Scan(&ts); err == nil {
		if f, err := strconv.ParseFloat(ts, 64); err == nil {
			sec := int64(f)
			cp.Time = timestamppb.New(time.Unix(sec, int64((f-float64(sec))*1e9)).UTC())
		}
	}
	return cp, nil
}
