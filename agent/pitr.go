package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/agent/runner"
	"github.com/tidemark-backup/tidemark/internal/archive"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// PITRRestorer runs a point-in-time restore: the base backup onto the
// target server, then the source's archived binlog replayed up to the
// stop point (engines/binlog/apply), wired in by the binary.
//
// Contract: ctx is the job's life; cancelling it stops the restore and the
// call returns (the target is then partly restored, which the job's error
// says). Progress may be called often and from any goroutine; the agent
// throttles what it sends. It returns an error naming what failed (the
// base restore, or the replay with how far it got) or the result.
type PITRRestorer func(ctx context.Context, p PITRParams) (*PITRResult, error)

// PITRParams are a point-in-time restore's inputs.
type PITRParams struct {
	// DSN is the target server (the job's instance, as configured here).
	DSN  string
	Repo *archive.Repo
	// BackupID is the base backup; SourceInstance the binlog archive's
	// name in the repository.
	BackupID       string
	SourceInstance string
	// Exactly one is set: the stop point, with the contract's semantics
	// (--to-time includes every transaction at or before it, --to-gtid
	// includes it, --to-position stops before the event at that position).
	StopTime     time.Time
	StopGTID     string
	StopFile     string
	StopPos      uint64
	StopServerID uint32 // the server that wrote StopFile, when two did
	// Parallel is the restore's workers; 0 the engine's choice.
	Parallel int
	// Datadir, when set, restores a physical base into this new directory
	// on the agent's host and rolls it forward on a temporary server there;
	// DSN's server is not touched.
	Datadir string
	// Logical restore filters, as for a plain restore.
	Databases    []string
	Tables       []string
	RenameDB     map[string]string
	DropExisting bool
	NoBinlog     bool // keep the restore out of the target's binlog
	// ServeTLS is TLS on the target's connection to the roll-forward's
	// replication source: "" (auto: when DSN uses TLS), "on" or "off";
	// the certificate and key are paths here, the CA a path on the
	// target's host (apply.SourceTLS).
	ServeTLS                                  string
	ServeTLSCert, ServeTLSKey, ServeTLSCAFile string
	Progress                                  func(phase string, done, total int64)
	Logger                                    *slog.Logger
}

// PITRResult is how a point-in-time restore went.
type PITRResult struct {
	BackupID string
	Tables   int
	Rows     int64
	// Transactions replayed from the binlog, and where the replay stopped.
	Transactions int64
	ReachedGTID  string
	ReachedTime  time.Time
	Warnings     []string
	// ServeTLS describes the roll-forward's replication connection when
	// it ran over TLS (e.g. "TLS 1.3, source verified by the target"), ""
	// otherwise.
	ServeTLS string
}

// ErrNoPITR is the error of a point-in-time restore job on an agent built
// without a PITRRestorer.
var ErrNoPITR = errors.New("this agent has no binlog engine wired in for point-in-time restores (Config.PITRRestorer is nil)")

// runPITR runs a restore job that has a stop point through the
// PITRRestorer.
func (a *Agent) runPITR(ctx context.Context, j *job, dsn string, progress func(*v1.JobProgress), log *slog.Logger) (*runner.Result, error) {
	rp := j.job.GetRestore()
	if a.cfg.PITRRestorer == nil {
		return nil, fmt.Errorf("restore job %s: %w", j.id, ErrNoPITR)
	}
	p := PITRParams{
		DSN: dsn, BackupID: rp.GetBackupId(), SourceInstance: rp.GetSourceInstance(),
		Parallel: parallel(rp.GetParallelism(), a.cfg.Parallel), Databases: rp.GetDatabases(), Tables: rp.GetTables(),
		RenameDB: rp.GetRenameDatabases(), DropExisting: rp.GetDropExisting(), NoBinlog: rp.GetNoBinlog(), Logger: log, Datadir: rp.GetTargetDatadir(),
		ServeTLS: serveTLSMode(rp.GetServeTls()), ServeTLSCert: rp.GetServeTlsCertFile(), ServeTLSKey: rp.GetServeTlsKeyFile(), ServeTLSCAFile: rp.GetServeTlsCaFile(),
		Progress: func(phase string, done, total int64) {
			progress(&v1.JobProgress{Phase: phase, BytesDone: uint64(max(done, 0)), BytesTotal: uint64(max(total, 0)), UpdatedAt: timestamppb.Now()})
		},
	}
	switch st := rp.GetStopAt().(type) {
	case *v1.RestoreParams_StopAtTime:
		p.StopTime = st.StopAtTime.AsTime()
	case *v1.RestoreParams_StopAtGtidSet:
		p.StopGTID = st.StopAtGtidSet
	case *v1.RestoreParams_StopAtPosition:
		p.StopFile, p.StopPos, p.StopServerID = st.StopAtPosition.GetFile(), st.StopAtPosition.GetPosition(), st.StopAtPosition.GetServerId()
	}
	if p.SourceInstance == "" {
		return nil, fmt.Errorf("restore job %s: no source instance for the binlog replay", j.id)
	}
	repo, closeRepo, err := a.openRepo(ctx, rp.GetRepositoryUri())
	if err != nil {
		return nil, err
	}
	defer closeRepo()
	p.Repo = repo
	res, err := a.cfg.PITRRestorer(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("point-in-time restore of %s (backup %s) onto %s: %w", p.SourceInstance, p.BackupID, j.job.GetInstance(), err)
	}
	log.Info("point-in-time restore done", "backup", res.BackupID, "transactions", res.Transactions,
		"reached_gtid", res.ReachedGTID, "reached_time", res.ReachedTime, "serve_tls", res.ServeTLS)
	return &runner.Result{BackupID: res.BackupID, Engine: "binlog", Tables: res.Tables, Rows: res.Rows, Warnings: res.Warnings}, nil
}

// serveTLSMode is a job's serve TLS mode in PITRParams' terms.
func serveTLSMode(m v1.ServeTLS) string {
	switch m {
	case v1.ServeTLS_SERVE_TLS_ON:
		return "on"
	case v1.ServeTLS_SERVE_TLS_OFF:
		return "off"
	}
	return ""
}

func parallel(job uint32, dflt int) int {
	if job > 0 {
		return int(job)
	}
	return dflt
}
