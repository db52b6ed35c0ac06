package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/tidemark-backup/tidemark/agent"
	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/engines/binlog/apply"
	"github.com/tidemark-backup/tidemark/engines/clone"
	"github.com/tidemark-backup/tidemark/engines/logical"
	"github.com/tidemark-backup/tidemark/engines/mariabackup"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/engines/pitr"
	"github.com/tidemark-backup/tidemark/engines/snapshot"
)

// EngineWiring is the binary's Wiring: the binlog engine behind the agent's
// stream and point-in-time jobs and behind `binlog status` through the
// controller.
func EngineWiring() Wiring {
	// The clone engine's scratch parent comes from the environment for
	// now (TIDEMARK_CLONE_SCRATCH_DIR, default the datadir's parent): an
	// agent or a standalone run on the server's host reads it.
	cl := clone.New()
	cl.ScratchParent = os.Getenv("TIDEMARK_CLONE_SCRATCH_DIR")
	reg := engines.NewRegistry(logical.New(), snapshot.New(), mariabackup.New(), cl)
	return Wiring{
		Engines: reg,
		BinlogStreamer: func(ctx context.Context, p agent.BinlogStreamParams) error {
			return binlog.Stream(ctx, binlog.StreamParams{
				DSNs: p.DSNs, Repo: p.Repo, Instance: p.Instance, Flush: p.Flush,
				ServerID: p.ServerID, PurgeArchived: p.PurgeArchived, Logger: p.Logger,
				OnGap: func(g binlog.Gap) {
					if p.OnGap != nil {
						p.OnGap(agent.BinlogGap{
							After: g.After, Before: g.Before, AfterGTID: g.AfterGTID, BeforeGTID: g.BeforeGTID,
							FromTime: g.FromTime, ToTime: g.ToTime, Reason: g.Reason, DetectedAt: g.DetectedAt,
						})
					}
				},
				OnWatermark: func(w binlog.Watermark) {
					if p.OnWatermark != nil {
						p.OnWatermark(agent.BinlogWatermark{
							Instance: w.Instance, GTID: w.GTID, File: w.File, Position: w.Position,
							LastEventTime: w.LastEventTime, DurableAt: w.DurableAt,
						})
					}
				},
			})
		},
		PITRRestorer: func(ctx context.Context, p agent.PITRParams) (*agent.PITRResult, error) {
			if len(p.Databases) > 0 || len(p.Tables) > 0 || len(p.RenameDB) > 0 {
				return nil, fmt.Errorf("a point-in-time restore brings back the whole instance: database, table and rename filters cannot be combined with a stop point (the binlog replays every database)")
			}
			if p.Datadir != "" {
				return datadirPITR(ctx, p)
			}
			res, err := pitr.Restore(ctx, pitr.Params{
				Repo: p.Repo, Instance: p.SourceInstance, DSN: p.DSN, FromBackup: p.BackupID,
				Target:   pitr.Target{Time: p.StopTime, GTID: p.StopGTID, File: p.StopFile, Pos: p.StopPos, ServerID: p.StopServerID},
				Parallel: p.Parallel, DropExisting: p.DropExisting, NoBinlog: p.NoBinlog, Engine: reg.Get, Logger: p.Logger,
				ServeTLS: agentServeTLS(p),
				Progress: func(phase string, pr engines.Progress) {
					if p.Progress != nil {
						p.Progress(phase, pr.BytesDone, pr.BytesTotal)
					}
				},
			})
			if err != nil {
				return nil, err
			}
			out := &agent.PITRResult{BackupID: res.Base.BackupId, Warnings: res.RestoreWarnings}
			if a := res.Applied; a != nil {
				out.Transactions = int64(a.Transactions)
				out.ReachedGTID, out.ReachedTime = a.EndGTID, a.Last.Time
				out.Warnings = append(out.Warnings, a.Warnings...)
				out.ServeTLS = a.TLS.String()
			}
			return out, nil
		},
		BinlogArchiveStatus: func(ctx context.Context, uri, instance string) (*ArchiveStatus, error) {
			rf := repoFlags{uri: uri, keyFile: os.Getenv("TIDEMARK_KEY_FILE"), passphraseFile: os.Getenv("TIDEMARK_PASSPHRASE_FILE")}
			repo, closeRepo, err := rf.open(ctx)
			if err != nil {
				return nil, err
			}
			defer closeRepo()
			a, err := binlog.OpenArchive(ctx, repo, instance)
			if err != nil {
				return nil, err
			}
			st := a.Status()
			out := &ArchiveStatus{
				FirstEventTime: st.FirstTime, LastEventTime: st.LastEventTime, FirstGTID: st.FirstGTID,
				GTIDPosition: st.GTIDPosition, File: st.File, Position: st.Position, Segments: st.Segments, Bytes: st.Bytes,
			}
			for _, g := range st.Gaps {
				out.Gaps = append(out.Gaps, ArchiveGap{After: g.After, Before: g.Before, FromTime: g.FromTime, ToTime: g.ToTime, Reason: g.Reason, DetectedAt: g.DetectedAt})
			}
			return out, nil
		},
	}
}

// datadirPITR is the agent's point-in-time restore into a new datadir on
// its host: a physical base, rolled forward on a temporary server. The
// caller has refused filters.
func datadirPITR(ctx context.Context, p agent.PITRParams) (*agent.PITRResult, error) {
	res, err := pitr.RestoreDatadir(ctx, pitr.DatadirParams{
		Repo: p.Repo, Instance: p.SourceInstance, FromBackup: p.BackupID, Dirs: map[string]string{physical.RootDatadir: p.Datadir},
		Target:   pitr.Target{Time: p.StopTime, GTID: p.StopGTID, File: p.StopFile, Pos: p.StopPos, ServerID: p.StopServerID},
		Parallel: p.Parallel, Logger: p.Logger, ServeTLS: agentServeTLS(p),
		Progress: func(phase string, pr engines.Progress) {
			if p.Progress != nil {
				p.Progress(phase, pr.BytesDone, pr.BytesTotal)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	out := &agent.PITRResult{BackupID: res.Base.BackupId}
	if a := res.Applied; a != nil {
		out.Transactions = int64(a.Transactions)
		out.ReachedGTID, out.ReachedTime = a.EndGTID, a.Last.Time
		out.Warnings = append(out.Warnings, a.Warnings...)
		out.ServeTLS = a.TLS.String()
	}
	return out, nil
}

// agentServeTLS is a restore job's serve TLS settings in the engine's form.
func agentServeTLS(p agent.PITRParams) apply.SourceTLS {
	return apply.SourceTLS{Mode: p.ServeTLS, CertFile: p.ServeTLSCert, KeyFile: p.ServeTLSKey, CAFile: p.ServeTLSCAFile}
}
