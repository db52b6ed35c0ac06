package pitr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/engines/binlog/apply"
	"github.com/tidemark-backup/tidemark/engines/binlog/gtid"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// DatadirParams are a point-in-time restore into a new datadir from a
// physical base backup.
type DatadirParams struct {
	Repo *archive.Repo
	// Instance is the instance whose archive is rolled forward; "" takes
	// the base's (then FromBackup is required).
	Instance string
	// Dirs are the target directories (physical.RestoreParams.Dirs).
	Dirs   map[string]string
	Target Target
	// FromBackup names the base; "" picks the newest complete physical
	// backup of the instance at or before the target.
	FromBackup string
	// Mysqld, Mariabackup, ServerArgs: see physical.RestoreParams.
	Mysqld      string
	Mariabackup string
	ServerArgs  []string
	Parallel    int // files written at once
	// ApplyParallel, Method, ServeAddr, ServeTLS: see Params. The
	// temporary server's DSN is a socket without TLS, so ServeTLS is off
	// unless asked for.
	ApplyParallel int
	Method        string
	ServeAddr     string
	ServeTLS      apply.SourceTLS
	Progress      func(phase string, p engines.Progress)
	Logger        *slog.Logger
}

// DatadirResult reports a point-in-time datadir restore.
type DatadirResult struct {
	Base    *v1.Manifest
	Restore *physical.RestoreResult
	Plan    *apply.PlanResult
	Applied *apply.Result
}

// RestoreDatadir writes a physical base backup into p.Dirs, prepares it,
// starts a temporary server on it (no TCP listener; its replica connects
// out to the roll-forward's source on loopback), rolls the instance's
// archived binlog forward from the base's consistency point to p.Target,
// and shuts the server down cleanly. Every refusal of Restore (target,
// base, archive coverage, gaps, the stop point) and of physical.Restore
// (version, directories, space) comes before anything is written; a
// failure later leaves the directory's in-progress marker.
func RestoreDatadir(ctx context.Context, p DatadirParams) (*DatadirResult, error) {
	if p.Target.kinds() != 1 {
		return nil, fmt.Errorf("give exactly one of a time, a GTID or a FILE:POS position to restore to")
	}
	if p.Target.GTID != "" {
		if gtid.IsMySQLSet(p.Target.GTID) {
			return nil, fmt.Errorf("target GTID %s is MySQL's: a restore into a datadir rolls forward with a temporary MariaDB server, which cannot apply MySQL's binlog; restore onto a running MySQL server instead (without a datadir)", p.Target.GTID)
		}
		if _, err := binlog.ParsePosition(p.Target.GTID); err != nil {
			return nil, fmt.Errorf("target %w (a MariaDB GTID such as 0-1-100, one per domain)", err)
		}
	}
	if p.Instance == "" {
		if p.FromBackup == "" {
			return nil, fmt.Errorf("the instance whose archive to roll forward is required, or the base backup (its instance is then used)")
		}
		m, err := p.Repo.LoadManifest(ctx, p.FromBackup)
		if err != nil {
			return nil, err
		}
		p.Instance = m.Instance
	}
	pp := Params{Repo: p.Repo, Instance: p.Instance, Target: p.Target, FromBackup: p.FromBackup}
	base, err := pickBaseWhere(ctx, pp, physical.IsPhysical)
	if err != nil {
		return nil, err
	}
	if !physical.IsPhysical(base) {
		return nil, fmt.Errorf("backup %s is a %s backup, which restores onto a running server: use --to-mysql DSN instead of a datadir", base.BackupId, base.Engine)
	}
	pr := physical.RestoreParams{
		Source: engines.ArchiveSource(p.Repo, base), Dirs: p.Dirs, Mysqld: p.Mysqld, Mariabackup: p.Mariabackup,
		ServerArgs: p.ServerArgs, Parallel: p.Parallel,
	}
	// The directory and version checks are quick; the plan reads every
	// binlog file from the base on: refuse a wrong directory first.
	if err := physical.Check(ctx, pr); err != nil {
		return nil, err
	}
	arch, err := binlog.OpenArchive(ctx, p.Repo, p.Instance)
	if err != nil {
		return nil, err
	}
	files, err := filesFrom(arch, base, p.Target)
	if err != nil {
		return nil, err
	}
	ap := apply.Params{
		Files: files, StartGTID: base.Consistency.GtidSet, StartTime: base.Consistency.Time.AsTime().Truncate(time.Second),
		Stop:   apply.Stop{GTID: p.Target.GTID, File: p.Target.File, ServerID: p.Target.ServerID, Pos: p.Target.Pos, Time: p.Target.Time},
		Method: p.Method, Parallel: p.ApplyParallel, ServeAddr: p.ServeAddr, TLS: p.ServeTLS, Logger: p.Logger,
		Progress: func(pr apply.Progress) {
			if p.Progress != nil {
				p.Progress("roll-forward", engines.Progress{Phase: pr.Phase, BytesDone: pr.BytesSent, BytesTotal: pr.Bytes})
			}
		},
	}
	plan, err := apply.Plan(ctx, ap)
	if errors.Is(err, apply.ErrUnreachable) {
		return nil, fmt.Errorf("%w: instance %s to %s from backup %s: %w", ErrUnreachable, p.Instance, p.Target, base.BackupId, err)
	}
	if err != nil {
		return nil, fmt.Errorf("instance %s to %s from backup %s: %w", p.Instance, p.Target, base.BackupId, err)
	}
	ap.Planned = plan
	res := &DatadirResult{Base: base, Plan: plan}
	pr.Progress = func(phase string, done, total int64) {
		if p.Progress != nil {
			p.Progress("base "+phase, engines.Progress{Phase: phase, BytesDone: done, BytesTotal: total})
		}
	}
	pr.RollForward = func(ctx context.Context, dsn string) error {
		ap.DSN = dsn
		applied, err := apply.Apply(ctx, ap)
		res.Applied = applied
		if err != nil {
			return fmt.Errorf("rolling forward from backup %s to %s: %w", base.BackupId, p.Target, err)
		}
		return recordPosition(ctx, dsn, applied.EndGTID)
	}
	rr, err := physical.Restore(ctx, pr)
	res.Restore = rr
	if err != nil {
		return res, err
	}
	return res, nil
}

// recordPosition makes the restored server's GTID position the one its
// data is at. The replication method leaves it in gtid_slave_pos and a
// binlogging server in its binlog, but the sql method on a server without
// a binlog (mariabackup's output has none) records it nowhere: the
// restored server would start at an empty or the base's position, and a
// replica of it, or the next roll-forward, would start at the wrong place.
func recordPosition(ctx context.Context, dsn, end string) error {
	if end == "" {
		return nil
	}
	d, err := mysqlx.ParseDSN(dsn)
	if err != nil {
		return err
	}
	db, err := d.Open(nil)
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()
	var cur string
	if err := db.QueryRowContext(ctx, "SELECT @@gtid_current_pos").Scan(&cur); err != nil {
		return fmt.Errorf("reading the restored server's GTID position: %w", err)
	}
	if cur == end {
		return nil
	}
	if _, err := db.ExecContext(ctx, "SET GLOBAL gtid_slave_pos = ?", end); err != nil {
		return fmt.Errorf("recording the restored GTID position %s (the server says %s): %w", end, cur, err)
	}
	return nil
}
