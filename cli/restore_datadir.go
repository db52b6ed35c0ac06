package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/engines/binlog/apply"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/engines/pitr"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// datadirParams are `tidemark restore --to-datadir DIR`'s inputs.
type datadirParams struct {
	backupID, instance  string
	dir                 string
	stop                *v1.RestoreParams // nil: the backup's own point
	mysqld, mariabackup string
	serverArgs          []string
	parallel            int
	applyParallel       int
	method, serveAddr   string
	serveTLS            apply.SourceTLS
	output              string
}

// physicalUsage is the error for a physical backup given to a restore onto
// a running server.
func physicalUsage(m *v1.Manifest) error {
	return &UserError{Msg: fmt.Sprintf("backup %s is a physical (%s) backup: it restores into an empty directory that becomes a server's datadir, not onto a running server; use `tidemark restore %s --to-datadir DIR`",
		m.GetBackupId(), m.GetEngine(), m.GetBackupId())}
}

// logicalUsage is the error for a logical backup given to --to-datadir.
func logicalUsage(m *v1.Manifest) error {
	return &UserError{Msg: fmt.Sprintf("backup %s is a %s backup: it restores onto a running server, not into a datadir; use `tidemark restore %s --to-mysql DSN` (or --to-instance NAME)",
		m.GetBackupId(), m.GetEngine(), m.GetBackupId())}
}

// datadirErr turns the physical restore's refusals into user errors that
// say what to do.
func datadirErr(err error) error {
	switch {
	case errors.Is(err, pitr.ErrUnreachable), errors.Is(err, apply.ErrUnreachable):
		return &UserError{Msg: err.Error() + "; nothing was written", Err: err}
	case errors.Is(err, physical.ErrNotEmpty), errors.Is(err, physical.ErrNoSpace), errors.Is(err, physical.ErrVersionMismatch), errors.Is(err, physical.ErrInUse):
		return &UserError{Msg: err.Error() + "; nothing was written", Err: err}
	}
	return userErr(err)
}

// restoreDatadir is `tidemark restore [ID] --repo URI --to-datadir DIR
// [--to-time|--to-gtid|--to-position]`, run here.
func restoreDatadir(ctx context.Context, s *streams, rf *repoFlags, dp datadirParams) error {
	switch dp.method {
	case apply.MethodAuto, apply.MethodReplication, apply.MethodSQL:
	default:
		return &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--apply-method %q: use replication or sql", dp.method)}
	}
	repo, closeRepo, err := rf.open(ctx)
	if err != nil {
		return err
	}
	defer closeRepo()
	dirs := map[string]string{physical.RootDatadir: dp.dir}
	p := newProgress(s.err, "restore")
	progress := func(phase string, done, total int64) { p.bytes(phase, done, total, 0) }
	start := time.Now()

	if dp.stop != nil {
		if dp.backupID != "" {
			m, err := repo.LoadManifest(ctx, dp.backupID)
			if err != nil {
				return userErr(err)
			}
			if !physical.IsPhysical(m) {
				return logicalUsage(m)
			}
			if dp.instance == "" {
				dp.instance = m.Instance // its own archive
			}
		}
		res, err := pitr.RestoreDatadir(ctx, pitr.DatadirParams{
			Repo: repo, Instance: dp.instance, Dirs: dirs, Target: stopTarget(dp.stop), FromBackup: dp.backupID,
			Mysqld: dp.mysqld, Mariabackup: dp.mariabackup, ServerArgs: dp.serverArgs, Parallel: dp.parallel,
			ApplyParallel: dp.applyParallel, Method: dp.method, ServeAddr: dp.serveAddr, ServeTLS: dp.serveTLS,
			Progress: func(phase string, pr engines.Progress) { progress(phase, pr.BytesDone, pr.BytesTotal) },
		})
		p.done()
		if err != nil {
			if errors.Is(err, binlog.ErrUnknownInstance) {
				if _, aerr := openArchive(ctx, repo, dp.instance); aerr != nil {
					return aerr
				}
			}
			return datadirErr(err)
		}
		a, r := res.Applied, res.Restore
		for _, w := range a.Warnings {
			fmt.Fprintln(s.err, "warning:", w)
		}
		if dp.output == "json" {
			return json.NewEncoder(s.out).Encode(map[string]any{
				"instance": res.Base.Instance, "target": stopTarget(dp.stop).String(), "datadir": dp.dir,
				"backup_id": res.Base.BackupId, "engine": res.Base.Engine, "files": r.Files, "bytes": r.Bytes,
				"extract_seconds": r.Extract.Seconds(), "prepare_seconds": r.Prepare.Seconds(),
				"transactions": a.Transactions, "apply_method": a.Method, "roll_forward_seconds": r.RollForward.Seconds(), "serve_tls": serveTLSJSON(a.TLS),
				"last": pointJSON(a.Last), "duration_seconds": time.Since(start).Seconds(), "warnings": nonNilStrings(a.Warnings),
			})
		}
		_, err = fmt.Fprintf(s.out, "restored %s to %s into %s: backup %s (%s; %d files, %s, written in %s, prepared in %s) then %d transactions through %s (%s), ending at %s; total %s\n",
			res.Base.Instance, stopTarget(dp.stop), dp.dir, res.Base.BackupId, res.Base.Engine, r.Files, humanBytes(r.Bytes),
			r.Extract.Round(time.Millisecond), r.Prepare.Round(time.Millisecond), a.Transactions, methodText(a),
			r.RollForward.Round(time.Millisecond), a.Last, time.Since(start).Round(time.Millisecond))
		return err
	}

	m, err := repo.LoadManifest(ctx, dp.backupID)
	if err != nil {
		return userErr(err)
	}
	if !physical.IsPhysical(m) {
		return logicalUsage(m)
	}
	r, err := physical.Restore(ctx, physical.RestoreParams{
		Source: engines.ArchiveSource(repo, m), Dirs: dirs, Mysqld: dp.mysqld, Mariabackup: dp.mariabackup,
		ServerArgs: dp.serverArgs, Parallel: dp.parallel, Progress: progress,
	})
	p.done()
	if err != nil {
		return datadirErr(err)
	}
	if dp.output == "json" {
		out := map[string]any{
			"backup_id": m.BackupId, "engine": m.Engine, "datadir": dp.dir, "files": r.Files, "bytes": r.Bytes,
			"extract_seconds": r.Extract.Seconds(), "prepare_seconds": r.Prepare.Seconds(),
			"server": r.Mysqld.Flavor + " " + r.Mysqld.Major, "consistency": nil,
		}
		if c := m.Consistency; c != nil {
			out["consistency"] = map[string]any{"binlog_file": c.BinlogFile, "binlog_position": c.BinlogPosition, "gtid_set": c.GtidSet, "time": tsJSON(c.Time)}
		}
		return json.NewEncoder(s.out).Encode(out)
	}
	_, err = fmt.Fprintf(s.out, "restored backup %s (%s) into %s: %d files, %s, written in %s, prepared in %s; start %s on it (the files belong to the user that ran the restore)\n",
		m.BackupId, m.Engine, dp.dir, r.Files, humanBytes(r.Bytes), r.Extract.Round(time.Millisecond), r.Prepare.Round(time.Millisecond),
		r.Mysqld.Flavor+" "+r.Mysqld.Major)
	if err == nil && m.Consistency != nil {
		// mariabackup's output has no binlog: the position is nowhere in
		// the datadir's GTID state, and a replica set up from it needs it.
		_, err = fmt.Fprintf(s.out, "its data is at GTID %q, binlog %s:%d; to replicate into it from the source: SET GLOBAL gtid_slave_pos = '%s'\n",
			m.Consistency.GtidSet, m.Consistency.BinlogFile, m.Consistency.BinlogPosition, m.Consistency.GtidSet)
	}
	return err
}
