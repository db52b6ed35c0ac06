package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// verifyRestore compares what a restore of backup id wrote on p.DSN with
// the row checksums the backup recorded, and prints the outcome unless
// quiet. A difference is ExitDamaged.
func verifyRestore(ctx context.Context, s *streams, eng engines.Engine, id string, p engines.VerifyParams, quiet bool) (*engines.VerifyResult, error) {
	v, ok := eng.(engines.Verifier)
	if !ok {
		return nil, &UserError{Msg: fmt.Sprintf("backup %s was written by engine %q, which records no row checksums to verify a restore against", id, eng.Name())}
	}
	pr := newProgress(s.err, "verify")
	p.Progress = func(x engines.Progress) { pr.bytes(x.Phase, x.BytesDone, x.BytesTotal, x.RowsDone) }
	start := time.Now()
	res, err := v.Verify(ctx, p)
	pr.done()
	if errors.Is(err, engines.ErrMismatch) {
		return nil, &UserError{Code: ExitDamaged, Msg: fmt.Sprintf("verify of the restore of backup %s: %v", id, err), Err: err}
	}
	if err != nil {
		return nil, userErr(fmt.Errorf("verify of the restore of backup %s: %w", id, err))
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(s.err, "warning:", w)
	}
	if quiet {
		return res, nil
	}
	_, err = fmt.Fprintf(s.out, "verified: %d tables, %d rows equal to backup %s's row checksums in %s\n", res.Tables, res.Rows, id, time.Since(start).Round(time.Millisecond))
	return res, err
}

func newVerifyRestoreCmd(s *streams) *cobra.Command {
	var (
		rf                     repoFlags
		dsn, databases, tables string
		renames                []string
		parallel               int
		output                 string
	)
	cmd := &cobra.Command{
		Use:   "verify-restore BACKUP_ID --to-mysql DSN",
		Short: "Check a server restored earlier against the backup's row checksums",
		Long: `Reads back the tables a logical restore of BACKUP_ID wrote (with the same
--databases, --tables and --rename-db it was given) through the backup's own
reader, and compares every table's row count and order-independent row checksum
with those recorded at backup time. Every table that differs is named with both
counts and checksums. Run it before the restored server takes writes: a changed
row is reported like a damaged one.`,
		Example: `  TIDEMARK_MYSQL_PASSWORD_FILE=/etc/tidemark/restore.pass \
      tidemark verify-restore 20261203T101500Z-1a2b3c4d --repo s3://backups/prod --to-mysql 'restore@tcp(10.0.0.7:3306)/'
  tidemark verify-restore 20261203T101500Z-1a2b3c4d --repo file:///srv/backups --to-mysql 'root@tcp(127.0.0.1:3307)/' --rename-db shop:shop_copy -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := checkOutput(output); err != nil {
				return err
			}
			if dsn == "" {
				return &UserError{Code: ExitUsage, Msg: "--to-mysql DSN is required: the server the backup was restored into"}
			}
			repo, closeRepo, m, rename, err := openForTarget(ctx, cmd, &rf, dsn, args[0], renames)
			if err != nil {
				return err
			}
			defer closeRepo()
			if physical.IsPhysical(m) {
				return &UserError{Msg: fmt.Sprintf("backup %s is a physical (%s) backup: its restore is checked by the server's own recovery when it starts, not by row checksums", m.BackupId, m.Engine)}
			}
			eng, err := s.engineByName(m.Engine)
			if err != nil {
				return &UserError{Msg: fmt.Sprintf("backup %s was written by engine %q, which this tidemark cannot read", m.BackupId, m.Engine)}
			}
			res, err := verifyRestore(ctx, s, eng, m.BackupId, engines.VerifyParams{
				DSN: dsn, Parallel: parallel, Source: engines.ArchiveSource(repo, m),
				Databases: splitList(databases), Tables: splitList(tables), RenameDB: rename,
			}, output == "json")
			if err != nil || output != "json" {
				return err
			}
			return json.NewEncoder(s.out).Encode(map[string]any{"backup_id": m.BackupId, "tables": res.Tables, "rows": res.Rows, "warnings": nonNilStrings(res.Warnings)})
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&dsn, "to-mysql", "", "the server the backup was restored into, go-sql-driver DSN (password from TIDEMARK_MYSQL_PASSWORD_FILE)")
	cmd.Flags().IntVar(&parallel, "parallel", 0, "reader connections (default: engine's choice)")
	cmd.Flags().StringVar(&databases, "databases", "", "the restore's --databases")
	cmd.Flags().StringVar(&tables, "tables", "", "the restore's --tables")
	cmd.Flags().StringArrayVar(&renames, "rename-db", nil, "the restore's --rename-db (old:new; repeatable)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// openForTarget checks --to-mysql DSN and the renames of a restore (or its
// verification) run here, then opens the repository and backup id's
// manifest. closeRepo must be called unless err.
func openForTarget(ctx context.Context, cmd *cobra.Command, rf *repoFlags, dsn, id string, renames []string) (repo *archive.Repo, closeRepo func(), m *v1.Manifest, rename map[string]string, err error) {
	if err := refuseArgvDSN(cmd, "to-mysql", dsn); err != nil {
		return nil, nil, nil, nil, err
	}
	if _, err := mysqlx.ParseDSN(dsn); err != nil {
		return nil, nil, nil, nil, userErr(err)
	}
	if rename, err = parseRenames(renames); err != nil {
		return nil, nil, nil, nil, err
	}
	if repo, closeRepo, err = rf.open(ctx); err != nil {
		return nil, nil, nil, nil, err
	}
	if m, err = repo.LoadManifest(ctx, id); err != nil {
		closeRepo()
		return nil, nil, nil, nil, userErr(err)
	}
	return repo, closeRepo, m, rename, nil
}
