package physical

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// ErrInUse is returned when a running process uses a target directory.
var ErrInUse = errors.New("the target directory is in use")

// RestoreParams are Restore's inputs.
type RestoreParams struct {
	Source engines.Source
	// Dirs maps roots to target directories (ExtractParams.Dirs); the
	// datadir is required.
	Dirs map[string]string
	// Mysqld is the server binary that will run on the datadir (and runs
	// the temporary server); "": mariadbd or mysqld from PATH. The backup
	// must be of its flavor and major version.
	Mysqld string
	// Mariabackup prepares backups with physical.prepare=mariabackup; "":
	// mariabackup from PATH.
	Mariabackup string
	// ServerArgs are extra arguments of the temporary server.
	ServerArgs []string
	Parallel   int
	Progress   func(phase string, done, total int64)
	// RollForward, when set, runs while a temporary server is up on the
	// prepared datadir, reached at dsn: the point-in-time roll-forward.
	// The server is shut down cleanly afterwards, whatever it returns.
	RollForward func(ctx context.Context, dsn string) error
}

// RestoreResult reports a restore and the time of its parts.
type RestoreResult struct {
	Files       int
	Bytes       int64
	Mysqld      *Binary
	Extract     time.Duration
	Prepare     time.Duration
	RollForward time.Duration
}

// checked is what Check learned.
type checked struct {
	mysqld, mariabackup *Binary
	prepare             string
}

// Check runs every check that precedes writing: the backup is physical and
// of a layout this code reads, the server binary (and mariabackup, when the
// backup needs it) is of the backup's flavor and major version, no running
// server uses a target, every target is empty or absent and its
// filesystem has room.
func Check(ctx context.Context, p RestoreParams) error {
	_, err := check(ctx, withBinlogDir(p))
	return err
}

// withBinlogDir restores a crash image's binlogs kept outside its datadir
// into the datadir, unless Dirs names a place for them: crash recovery
// decides the transactions prepared at the snapshot by them.
// It also makes every directory absolute: the server, mariabackup and the
// binlog index get paths that do not depend on their working directory.
func withBinlogDir(p RestoreParams) RestoreParams {
	dirs := map[string]string{}
	for k, v := range p.Dirs {
		if a, err := filepath.Abs(v); err == nil && v != "" {
			v = a
		}
		dirs[k] = v
	}
	p.Dirs = dirs
	if p.Source == nil || p.Source.Manifest().GetEngineMetadata()[MetaPrepare] != PrepareCrashRecovery || p.Dirs[RootBinlog] != "" || p.Dirs[RootDatadir] == "" {
		return p
	}
	dirs[RootBinlog] = dirs[RootDatadir]
	return p
}

func check(ctx context.Context, p RestoreParams) (*checked, error) {
	if p.Source == nil {
		return nil, errors.New("physical: no backup to restore")
	}
	m := p.Source.Manifest()
	md := m.GetEngineMetadata()
	if md[MetaFormat] == "" {
		return nil, fmt.Errorf("backup %s is a %s backup, not a physical one: restore it onto a running server with `tidemark restore %s --to-mysql DSN`", m.GetBackupId(), m.GetEngine(), m.GetBackupId())
	}
	if md[MetaFormat] != FormatVersion && md[MetaFormat] != FormatSparse {
		return nil, fmt.Errorf("backup %s has physical layout version %q; this tidemark reads versions %s and %s: use a newer tidemark", m.GetBackupId(), md[MetaFormat], FormatVersion, FormatSparse)
	}
	c := &checked{prepare: md[MetaPrepare]}
	switch c.prepare {
	case PrepareCrashRecovery, PrepareMariabackup:
	default:
		return nil, fmt.Errorf("backup %s: unknown %s %q (this tidemark knows %s and %s)", m.GetBackupId(), MetaPrepare, c.prepare, PrepareCrashRecovery, PrepareMariabackup)
	}
	path, err := FindMysqld(p.Mysqld)
	if err != nil {
		return nil, err
	}
	if c.mysqld, err = MysqldVersion(ctx, path); err != nil {
		return nil, err
	}
	if err := checkVersion("the server binary", m.GetServer(), c.mysqld); err != nil {
		return nil, fmt.Errorf("backup %s: %w", m.GetBackupId(), err)
	}
	if c.prepare == PrepareMariabackup {
		mb := p.Mariabackup
		if mb == "" {
			mb = "mariabackup"
		}
		mbPath, err := exec.LookPath(mb)
		if err != nil {
			return nil, fmt.Errorf("backup %s is prepared by mariabackup, which is not found (%w): install it or give --mariabackup PATH", m.GetBackupId(), err)
		}
		if c.mariabackup, err = MariabackupVersion(ctx, mbPath); err != nil {
			return nil, err
		}
		if err := checkVersion("mariabackup", m.GetServer(), c.mariabackup); err != nil {
			return nil, fmt.Errorf("backup %s: %w", m.GetBackupId(), err)
		}
	}
	for _, d := range p.Dirs {
		if err := notInUse(d); err != nil {
			return nil, err
		}
	}
	if err := CheckExtract(ExtractParams{Source: p.Source, Dirs: p.Dirs}); err != nil {
		return nil, err
	}
	return c, nil
}

// Restore writes a physical backup into empty directories and makes them a
// datadir a server starts on: Check, Extract (the in-progress marker
// stays), prepare by the backup's physical.prepare, the roll-forward when
// asked, and only then the marker's removal. A failure at any step leaves
// the marker: the directory is never mistaken for a usable one.
//
// Prepare. mariabackup's output gets `mariabackup --prepare`. A
// crash-consistent image is started once on a temporary server, which
// runs InnoDB's crash recovery, and shut down cleanly, rather than leaving
// recovery to the operator's first start: a recovery failure is reported
// now, with the server's log, not when the datadir is needed; recovery
// runs with the image's own binlog, which decides transactions that were
// prepared at the snapshot (a first start without --log-bin refuses to
// start over them); and removing the marker then means what it says.
func Restore(ctx context.Context, p RestoreParams) (*RestoreResult, error) {
	p = withBinlogDir(p)
	c, err := check(ctx, p)
	if err != nil {
		return nil, err
	}
	m := p.Source.Manifest()
	res := &RestoreResult{Mysqld: c.mysqld}
	t0 := time.Now()
	er, err := Extract(ctx, ExtractParams{
		Source: p.Source, Dirs: p.Dirs, Parallel: p.Parallel, KeepMarker: true,
		Progress: func(done, total int64) {
			if p.Progress != nil {
				p.Progress("extract", done, total)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("restoring backup %s: %w (what was written is marked unfinished by %s: remove the directory and restore again)", m.GetBackupId(), err, InProgressMarker)
	}
	res.Files, res.Bytes, res.Extract = er.Files, er.Bytes, time.Since(t0)
	datadir := p.Dirs[RootDatadir]

	t1 := time.Now()
	if p.Progress != nil {
		p.Progress("prepare", 0, 0)
	}
	if c.prepare == PrepareMariabackup {
		if err := mariabackupPrepare(ctx, c.mariabackup.Path, datadir); err != nil {
			return res, fmt.Errorf("restoring backup %s: %w (the directory keeps its %s marker)", m.GetBackupId(), err, InProgressMarker)
		}
	}
	// The crash-consistent image starts here in any case; a prepared
	// mariabackup directory only when there is something to roll forward.
	if c.prepare == PrepareCrashRecovery || p.RollForward != nil {
		logBin := ""
		if c.prepare == PrepareCrashRecovery {
			if logBin, err = binlogBase(p.Dirs[RootBinlog], datadir, m.GetConsistency()); err != nil {
				return res, err
			}
		}
		ts, err := StartTempServer(ctx, TempServerParams{Mysqld: c.mysqld.Path, Datadir: datadir, LogBin: logBin, Args: append(redoArgs(p.Dirs), p.ServerArgs...)})
		if err != nil {
			return res, fmt.Errorf("restoring backup %s: %w (the directory keeps its %s marker)", m.GetBackupId(), err, InProgressMarker)
		}
		res.Prepare = time.Since(t1)
		var rollErr error
		if p.RollForward != nil {
			t2 := time.Now()
			if p.Progress != nil {
				p.Progress("roll-forward", 0, 0)
			}
			rollErr = p.RollForward(ctx, ts.DSN)
			res.RollForward = time.Since(t2)
		}
		stopErr := ts.Stop(context.WithoutCancel(ctx))
		if rollErr != nil {
			return res, fmt.Errorf("restoring backup %s: %w (the directory keeps its %s marker)", m.GetBackupId(), rollErr, InProgressMarker)
		}
		if stopErr != nil {
			return res, fmt.Errorf("restoring backup %s: %w (the directory keeps its %s marker)", m.GetBackupId(), stopErr, InProgressMarker)
		}
	} else {
		res.Prepare = time.Since(t1)
	}
	if err := FinishRestore(er.Dirs); err != nil {
		return res, err
	}
	return res, nil
}

// redoArgs points the temporary server at redo and undo restored outside
// the datadir.
func redoArgs(dirs map[string]string) []string {
	var out []string
	if d := dirs[RootRedo]; d != "" {
		out = append(out, "--innodb-log-group-home-dir="+d)
	}
	if d := dirs[RootUndo]; d != "" {
		out = append(out, "--innodb-undo-directory="+d)
	}
	return out
}

// mariabackupPrepare applies mariabackup's redo to the files in dir.
func mariabackupPrepare(ctx context.Context, bin, dir string) error {
	out, err := exec.CommandContext(ctx, bin, "--prepare", "--target-dir="+dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s --prepare --target-dir=%s: %w; its output ends:\n%s", bin, dir, err, tail(string(out), 30))
	}
	return nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// notInUse refuses a directory a running process has as its working
// directory (mysqld changes into its datadir) or names with --datadir. It
// sees the processes /proc shows this user.
func notInUse(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("physical: %w", err)
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	ents, _ := os.ReadDir("/proc") // none (not Linux): the emptiness check still holds
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		uses := err == nil && filepath.Clean(cwd) == abs
		if !uses {
			cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil {
				continue
			}
			for _, a := range strings.Split(string(cmd), "\x00") {
				if v, ok := strings.CutPrefix(a, "--datadir="); ok && filepath.Clean(v) == abs {
					uses = true
				}
			}
		}
		if uses {
			comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
			return fmt.Errorf("%w: %s is used by a running process (pid %d, %s): stop it, or restore into another directory", ErrInUse, dir, pid, strings.TrimSpace(string(comm)))
		}
	}
	return nil
}

// IsPhysical reports whether m is a physical backup (restored with
// Restore into a directory, not onto a running server).
func IsPhysical(m *v1.Manifest) bool { return m.GetEngineMetadata()[MetaFormat] != "" }
