package runner

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/logical"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/engines/selection"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// RepoOpener opens the repository at uri ("" means the agent's own). The
// caller calls the returned close function when done with the Repo.
type RepoOpener func(ctx context.Context, uri string) (*archive.Repo, func(), error)

// Params are one job's inputs.
type Params struct {
	Job   *v1.Job
	Lease *v1.LeaseToken
	// DSN is the job's instance's server, as configured on the agent.
	DSN      string
	OpenRepo RepoOpener
	// Parallel is used when the job does not set its parallelism.
	Parallel int
	// Progress receives the job's progress, from many goroutines and often;
	// the caller throttles.
	Progress func(*v1.JobProgress)
	// Engines are the engines this agent runs; nil means the logical
	// engine alone.
	Engines *engines.Registry
}

// Result is how a job that ran to the end went.
type Result struct {
	BackupID string
	// Engine ran the backup, or wrote the backup a restore read.
	Engine      string
	ManifestKey string
	// Manifest is the stored manifest of a backup job.
	Manifest *v1.Manifest
	Tables   int
	Rows     int64
	Warnings []string
}

// engineFor returns the engine a job asks for. The controller resolves
// "auto" by engine selection before it assigns a backup; "" (or "auto")
// reaching here means it had no capabilities to decide from, and the
// registry's default runs.
func engineFor(p Params, name string) (engines.Engine, error) {
	reg := p.Engines
	if reg == nil {
		reg = engines.NewRegistry(logical.New())
	}
	e, err := reg.Get(name)
	if err != nil {
		return nil, fmt.Errorf("on this agent: %w", err)
	}
	return e, nil
}

// Run runs the job to its end. ctx is the job's life: cancelling it stops
// the engine, and no manifest is written after that.
func Run(ctx context.Context, p Params) (*Result, error) {
	switch p.Job.GetKind() {
	case v1.JobKind_JOB_KIND_BACKUP:
		return backup(ctx, p)
	case v1.JobKind_JOB_KIND_RESTORE:
		return restore(ctx, p)
	case v1.JobKind_JOB_KIND_EXPIRE:
		return expire(ctx, p)
	case v1.JobKind_JOB_KIND_COPY:
		return copyBackup(ctx, p)
	case v1.JobKind_JOB_KIND_RECONCILE:
		return reconcile(ctx, p)
	default:
		return nil, fmt.Errorf("job %s: kind %s is not supported by this agent", p.Job.GetId(), p.Job.GetKind())
	}
}

func parallel(job uint32, dflt int) int {
	if job > 0 {
		return int(job)
	}
	return dflt
}

func progress(p Params) func(engines.Progress) {
	if p.Progress == nil {
		return nil
	}
	return func(pr engines.Progress) {
		p.Progress(&v1.JobProgress{
			BytesDone: uint64(max(pr.BytesDone, 0)), BytesTotal: uint64(max(pr.BytesTotal, 0)),
			RowsDone: uint64(max(pr.RowsDone, 0)), Phase: pr.Phase, UpdatedAt: timestamppb.Now(),
		})
	}
}

func backup(ctx context.Context, p Params) (*Result, error) {
	bp := p.Job.GetBackup()
	if bp == nil {
		return nil, fmt.Errorf("backup job %s carries no backup params", p.Job.GetId())
	}
	if bp.GetBackupId() == "" {
		// The controller names each attempt's backup, so that the catalog
		// knows the id before the manifest exists.
		return nil, fmt.Errorf("backup job %s carries no backup id", p.Job.GetId())
	}
	eng, err := engineFor(p, bp.GetEngine())
	if err != nil {
		return nil, err
	}
	repo, closeRepo, err := p.OpenRepo(ctx, bp.GetRepositoryUri())
	if err != nil {
		return nil, err
	}
	defer closeRepo()
	id := bp.GetBackupId()
	if done, err := claimBackupID(ctx, repo, id, p.Lease); err != nil || done != nil {
		return done, err
	}
	if p.Progress != nil {
		p.Progress(&v1.JobProgress{Phase: "starting", UpdatedAt: timestamppb.Now()})
	}
	run := func(eng engines.Engine, meta map[string]string) (*v1.Manifest, *engines.BackupResult, error) {
		var res *engines.BackupResult
		m, err := repo.WithBackup(ctx, archive.BackupOptions{
			ID: id, Instance: p.Job.GetInstance(), Engine: eng.Name(), Labels: bp.GetLabels(), Fence: p.Lease,
		}, func(ctx context.Context, b *archive.Backup) error {
			sink := engines.ArchiveSink(b)
			for k, v := range meta {
				sink.SetEngineMetadata(k, v)
			}
			var err error
			res, err = eng.Backup(ctx, engines.BackupParams{
				DSN: p.DSN, Parallel: parallel(bp.GetParallelism(), p.Parallel), History: bp.GetHistory(),
				Sink: sink, Progress: progress(p),
			})
			return err
		})
		return m, res, err
	}
	meta := map[string]string{}
	if r := bp.GetEngineReason(); r != "" {
		meta[selection.MetaReason] = r
	}
	m, res, err := run(eng, meta)
	if err != nil && errors.Is(err, engines.ErrCapability) && len(bp.GetFallbackEngines()) > 0 && ctx.Err() == nil {
		// Engine selection's fallback: the chosen engine found it cannot
		// run here after all (its volume full, its tool mismatched). One
		// retry with the next usable engine, under the same backup id (the
		// failed run wrote no manifest); any other failure keeps its engine.
		next, ferr := engineFor(p, bp.GetFallbackEngines()[0])
		if ferr != nil {
			return nil, errors.Join(err, fmt.Errorf("fallback: %w", ferr))
		}
		why := fmt.Sprintf("%s failed for a capability reason, fell back to %s: %v", eng.Name(), next.Name(), err)
		meta[selection.MetaFallback] = why
		var ferr2 error
		m, res, ferr2 = run(next, meta)
		if ferr2 != nil {
			return nil, fmt.Errorf("%s; the fallback %s failed too: %w", why, next.Name(), ferr2)
		}
		res.Warnings = append(res.Warnings, why)
		err = nil
	}
	if err != nil {
		return nil, err
	}
	return &Result{BackupID: m.GetBackupId(), Engine: m.GetEngine(), ManifestKey: archive.ManifestKey(m.GetBackupId()), Manifest: m,
		Tables: res.Tables, Rows: res.Rows, Warnings: res.Warnings}, nil
}

// claimBackupID looks for a manifest already stored under the job's backup
// id. The controller gives each attempt its own id, so one written under
// this very lease means the assignment was repeated after the attempt
// finished (e.g. to a restarted agent): the backup is done and is returned.
// Any other manifest there belongs to another backup, and the job fails
// rather than overwrite or adopt it.
func claimBackupID(ctx context.Context, repo *archive.Repo, id string, lease *v1.LeaseToken) (*Result, error) {
	m, err := repo.LoadManifest(ctx, id)
	if errors.Is(err, archive.ErrBackupMissing) || errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("backup %s: checking for an earlier run: %w", id, err)
	}
	if proto.Equal(m.GetFence(), lease) {
		return &Result{BackupID: id, Engine: m.GetEngine(), ManifestKey: archive.ManifestKey(id), Manifest: m}, nil
	}
	return nil, fmt.Errorf("backup %s already exists in the repository (written under lease %s, this job holds %s)", id, fenceString(m.GetFence()), fenceString(lease))
}

// Older reports whether lease a was granted before b: tokens are ordered by
// (term, index).
func Older(a, b *v1.LeaseToken) bool {
	if a.GetTerm() != b.GetTerm() {
		return a.GetTerm() < b.GetTerm()
	}
	return a.GetIndex() < b.GetIndex()
}

func fenceString(f *v1.LeaseToken) string {
	if f == nil {
		return "none"
	}
	return fmt.Sprintf("%s@%d/%d", f.GetJobId(), f.GetTerm(), f.GetIndex())
}

func restore(ctx context.Context, p Params) (*Result, error) {
	rp := p.Job.GetRestore()
	if rp == nil {
		return nil, fmt.Errorf("restore job %s carries no restore params", p.Job.GetId())
	}
	if rp.GetStopAt() != nil {
		return nil, fmt.Errorf("restore job %s asks for point-in-time recovery, which needs the binlog engine, not available on this agent", p.Job.GetId())
	}
	repo, closeRepo, err := p.OpenRepo(ctx, rp.GetRepositoryUri())
	if err != nil {
		return nil, err
	}
	defer closeRepo()
	m, err := repo.LoadManifest(ctx, rp.GetBackupId())
	if err != nil {
		return nil, err
	}
	if rp.GetTargetDatadir() != "" {
		return restoreDatadir(ctx, p, repo, m, rp)
	}
	if physical.IsPhysical(m) {
		return nil, fmt.Errorf("backup %s is a physical (%s) backup: it restores into an empty datadir on the agent's host, not onto the running server of %s; submit it with --to-datadir DIR", m.GetBackupId(), m.GetEngine(), p.Job.GetInstance())
	}
	eng, err := engineFor(p, m.GetEngine())
	if err != nil {
		return nil, fmt.Errorf("backup %s was written by engine %q: %w", m.GetBackupId(), m.GetEngine(), err)
	}
	params := engines.RestoreParams{
		DSN: p.DSN, Parallel: parallel(rp.GetParallelism(), p.Parallel),
		Source: engines.ArchiveSource(repo, m), Progress: progress(p),
		Databases: rp.GetDatabases(), Tables: rp.GetTables(), RenameDB: rp.GetRenameDatabases(),
		DropExisting: rp.GetDropExisting(), IncludeUsers: rp.GetIncludeUsers(), NoBinlog: rp.GetNoBinlog(),
		// A later attempt goes on with what an interrupted one left (an
		// agent killed, a lease lost), rather than refusing its tables.
		Resume: p.Job.GetAttempt() > 1,
	}
	res, err := eng.Restore(ctx, params)
	if params.Resume && errors.Is(err, engines.ErrNothingToResume) {
		params.Resume = false
		res, err = eng.Restore(ctx, params)
	}
	if err != nil {
		return nil, fmt.Errorf("restore of backup %s onto %s: %w", m.GetBackupId(), p.Job.GetInstance(), err)
	}
	if rp.GetVerify() {
		v, ok := eng.(engines.Verifier)
		if !ok {
			return nil, fmt.Errorf("backup %s was written by engine %q, which records no row checksums to verify the restore against", m.GetBackupId(), m.GetEngine())
		}
		vr, err := v.Verify(ctx, engines.VerifyParams{
			DSN: p.DSN, Parallel: parallel(rp.GetParallelism(), p.Parallel), Source: engines.ArchiveSource(repo, m), Progress: progress(p),
			Databases: rp.GetDatabases(), Tables: rp.GetTables(), RenameDB: rp.GetRenameDatabases(),
		})
		if err != nil {
			return nil, fmt.Errorf("restore of backup %s onto %s: verify: %w", m.GetBackupId(), p.Job.GetInstance(), err)
		}
		res.Warnings = append(res.Warnings, vr.Warnings...)
	}
	return &Result{BackupID: m.GetBackupId(), Engine: m.GetEngine(), Tables: res.Tables, Rows: res.Rows, Warnings: res.Warnings}, nil
}

// restoreDatadir writes a physical backup into a new datadir on this host
// and prepares it (physical.Restore: the same checks, before anything is
// written, as the standalone command). The job's instance names the agent;
// its running server is not touched.
func restoreDatadir(ctx context.Context, p Params, repo *archive.Repo, m *v1.Manifest, rp *v1.RestoreParams) (*Result, error) {
	if !physical.IsPhysical(m) {
		return nil, fmt.Errorf("backup %s is a %s backup: it restores onto a running server, not into a datadir; submit it without a target datadir", m.GetBackupId(), m.GetEngine())
	}
	if len(rp.GetDatabases()) > 0 || len(rp.GetTables()) > 0 || len(rp.GetRenameDatabases()) > 0 {
		return nil, fmt.Errorf("a physical restore writes the whole server's files: database, table and rename filters do not apply")
	}
	pr := progress(p)
	_, err := physical.Restore(ctx, physical.RestoreParams{
		Source: engines.ArchiveSource(repo, m), Dirs: map[string]string{physical.RootDatadir: rp.GetTargetDatadir()},
		Parallel: parallel(rp.GetParallelism(), p.Parallel),
		Progress: func(phase string, done, total int64) {
			if pr != nil {
				pr(engines.Progress{Phase: phase, BytesDone: done, BytesTotal: total})
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("restore of backup %s into %s on the host of %s: %w", m.GetBackupId(), rp.GetTargetDatadir(), p.Job.GetInstance(), err)
	}
	return &Result{BackupID: m.GetBackupId(), Engine: m.GetEngine()}, nil
}
