package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/engines/binlog/apply"
	"github.com/tidemark-backup/tidemark/engines/logical"
	"github.com/tidemark-backup/tidemark/engines/pitr"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

type localPITRParams struct {
	dsn, instance, fromBackup string
	stop                      *v1.RestoreParams
	parallel, applyParallel   int
	dropExisting, filtered    bool
	noBinlog                  bool
	method, serveAddr         string
	serveTLS                  apply.SourceTLS
	thenReplicate             string
	output                    string
}

// stopTarget converts a restore job's stop point to the engine's form.
func stopTarget(p *v1.RestoreParams) pitr.Target {
	var t pitr.Target
	switch {
	case p.GetStopAtTime() != nil:
		t.Time = p.GetStopAtTime().AsTime()
	case p.GetStopAtGtidSet() != "":
		t.GTID = p.GetStopAtGtidSet()
	case p.GetStopAtPosition() != nil:
		t.File, t.Pos, t.ServerID = p.GetStopAtPosition().GetFile(), p.GetStopAtPosition().GetPosition(), p.GetStopAtPosition().GetServerId()
	}
	return t
}

// localPITR is `tidemark restore --repo URI --instance NAME --to-mysql DSN
// --to-time|--to-gtid|--to-position`, run here.
func localPITR(ctx context.Context, s *streams, rf *repoFlags, lp localPITRParams) error {
	if lp.instance == "" {
		return &UserError{Code: ExitUsage, Msg: "--instance NAME is required: the instance whose backup and archived binlog to restore (`tidemark binlog status --repo URI` lists them)"}
	}
	if lp.filtered {
		return &UserError{Code: ExitUsage, Msg: "a point-in-time restore brings back the whole instance: --databases, --tables, --rename-db and --include-users cannot be combined with --to-time, --to-gtid or --to-position (the binlog replays every database)"}
	}
	switch lp.method {
	case apply.MethodAuto, apply.MethodReplication, apply.MethodSQL:
	default:
		return &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--apply-method %q: use replication or sql", lp.method)}
	}
	if _, err := mysqlx.ParseDSN(lp.dsn); err != nil {
		return userErr(err)
	}
	if lp.thenReplicate != "" {
		if _, err := mysqlx.ParseDSN(lp.thenReplicate); err != nil {
			return userErr(fmt.Errorf("--then-replicate-from: %w", err))
		}
	}
	repo, closeRepo, err := rf.open(ctx)
	if err != nil {
		return err
	}
	defer closeRepo()
	p := newProgress(s.err, "restore")
	start := time.Now()
	res, err := pitr.Restore(ctx, pitr.Params{
		Repo: repo, Instance: lp.instance, DSN: lp.dsn, Target: stopTarget(lp.stop), FromBackup: lp.fromBackup,
		Parallel: lp.parallel, ApplyParallel: lp.applyParallel, DropExisting: lp.dropExisting, NoBinlog: lp.noBinlog,
		Method: lp.method, ServeAddr: lp.serveAddr, ServeTLS: lp.serveTLS, ThenReplicateFrom: lp.thenReplicate,
		Engine: s.engineByName,
		Progress: func(phase string, pr engines.Progress) {
			p.bytes(phase, pr.BytesDone, pr.BytesTotal, pr.RowsDone)
		},
	})
	p.done()
	if err != nil {
		switch {
		case errors.Is(err, binlog.ErrUnknownInstance):
			if _, aerr := openArchive(ctx, repo, lp.instance); aerr != nil {
				return aerr // names the instances the repository holds
			}
			return userErr(err)
		case errors.Is(err, pitr.ErrUnreachable), errors.Is(err, apply.ErrUnreachable):
			return &UserError{Msg: err.Error() + "; nothing was written to the target", Err: err}
		case errors.Is(err, logical.ErrTargetNotEmpty):
			return &UserError{Msg: err.Error() + "; restore into an empty server, or pass --drop-existing", Err: err}
		}
		return userErr(err)
	}
	for _, w := range res.RestoreWarnings {
		fmt.Fprintln(s.err, "warning:", w)
	}
	if res.Applied != nil {
		for _, w := range res.Applied.Warnings {
			fmt.Fprintln(s.err, "warning:", w)
		}
	}
	a := res.Applied
	if lp.output == "json" {
		return json.NewEncoder(s.out).Encode(map[string]any{
			"instance": lp.instance, "target": stopTarget(lp.stop).String(), "backup_id": res.Base.BackupId,
			"base_restore_seconds": res.BaseRestore.Seconds(), "transactions": a.Transactions, "apply_method": a.Method,
			"roll_forward_seconds": res.RollForward.Seconds(), "last": pointJSON(a.Last), "duration_seconds": time.Since(start).Seconds(),
			"serve_tls": serveTLSJSON(a.TLS),
		})
	}
	_, err = fmt.Fprintf(s.out, "restored %s to %s: backup %s (%s) then %d transactions through %s (%s), ending at %s; total %s\n",
		lp.instance, stopTarget(lp.stop), res.Base.BackupId, res.BaseRestore.Round(time.Millisecond),
		a.Transactions, methodText(a), res.RollForward.Round(time.Millisecond), a.Last, time.Since(start).Round(time.Millisecond))
	return err
}

// pointJSON is the last transaction a roll-forward applied, or null when
// it applied none.
func pointJSON(p apply.Point) any {
	if p.FileIndex == 0 {
		return nil
	}
	return map[string]any{"gtid": p.GTID, "file": p.File, "position": p.Pos, "time": p.Time.UTC().Format(time.RFC3339Nano)}
}

// methodText names the roll-forward's method and, for a replication
// connection over TLS, its TLS.
func methodText(a *apply.Result) string {
	if a.TLS == nil {
		return a.Method
	}
	return a.Method + " over " + a.TLS.String()
}

// serveTLSJSON is the roll-forward's replication TLS in -o json, null when
// none was used.
func serveTLSJSON(u *apply.TLSUsed) any {
	if u == nil {
		return nil
	}
	return map[string]any{"version": u.Version, "sessions": u.Sessions, "verified": u.Verified, "ca_file": u.CAFile, "ephemeral": u.Ephemeral}
}

// serveTLSParams checks the --serve-tls* flags and puts them into a
// restore job's params (used by a job through the controller).
func serveTLSParams(p *v1.RestoreParams, st apply.SourceTLS, isPITR, job bool) error {
	given := st.CertFile != "" || st.KeyFile != "" || st.CAFile != ""
	mode := strings.ToLower(st.Mode)
	switch mode {
	case "auto", "":
	case apply.TLSOn:
		p.ServeTls = v1.ServeTLS_SERVE_TLS_ON
	case apply.TLSOff:
		p.ServeTls = v1.ServeTLS_SERVE_TLS_OFF
	default:
		return &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--serve-tls %q: use auto, on or off", st.Mode)}
	}
	if !isPITR && (given || (mode != "auto" && mode != "")) {
		return &UserError{Code: ExitUsage, Msg: "--serve-tls, --serve-tls-cert, --serve-tls-key and --serve-tls-ca protect a point-in-time restore's roll-forward: give --to-time, --to-gtid or --to-position, or leave them out"}
	}
	if job {
		for _, f := range []struct{ flag, path string }{{"--serve-tls-cert", st.CertFile}, {"--serve-tls-key", st.KeyFile}, {"--serve-tls-ca", st.CAFile}} {
			if f.path != "" && !filepath.IsAbs(f.path) {
				return &UserError{Code: ExitUsage, Msg: fmt.Sprintf("%s %q: give an absolute path; the agent reads the certificate and key on its own host, and the target the CA on its", f.flag, f.path)}
			}
		}
	}
	p.ServeTlsCertFile, p.ServeTlsKeyFile, p.ServeTlsCaFile = st.CertFile, st.KeyFile, st.CAFile
	return nil
}
