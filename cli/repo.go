package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/humanize"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
)

// repoFlags are the flags every command that opens a repository takes.
type repoFlags struct {
	uri            string
	keyFile        string
	passphraseFile string
	// cmd is where storage retries are reported (its stderr).
	cmd *cobra.Command
}

func (f *repoFlags) register(cmd *cobra.Command) {
	f.cmd = cmd
	cmd.Flags().StringVar(&f.uri, "repo", os.Getenv("TIDEMARK_REPO"), "repository URI: file:///path or s3://bucket/prefix?endpoint=host:port (env TIDEMARK_REPO)")
	cmd.Flags().StringVar(&f.keyFile, "key-file", os.Getenv("TIDEMARK_KEY_FILE"), "file holding the repository key (at least 32 random bytes) (env TIDEMARK_KEY_FILE)")
	cmd.Flags().StringVar(&f.passphraseFile, "passphrase-file", os.Getenv("TIDEMARK_PASSPHRASE_FILE"), "file holding the repository passphrase (env TIDEMARK_PASSPHRASE_FILE)")
}

func (f *repoFlags) secret() (archive.Secret, error) {
	s, err := archive.ReadSecret(f.keyFile, f.passphraseFile)
	if err != nil {
		return s, &UserError{Msg: err.Error(), Err: err}
	}
	return s, nil
}

func (f *repoFlags) store(ctx context.Context, create bool) (storage.Storage, error) {
	if f.uri == "" {
		return nil, &UserError{Code: ExitUsage, Msg: "--repo is required (or set TIDEMARK_REPO): file:///path or s3://bucket/prefix?endpoint=host:port"}
	}
	opts := location.Options{Create: create}
	if f.cmd != nil {
		// A standalone run has no daemon log: each retry of the store is
		// one warning line on stderr, with its reason.
		opts.Retry.Logger = slog.New(slog.NewTextHandler(f.cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	st, err := location.Open(ctx, f.uri, opts)
	if err != nil {
		if !create && errors.Is(err, storage.ErrNotFound) {
			return nil, &UserError{Msg: err.Error() + "; to create a repository there: tidemark repo init --repo " + location.Redact(f.uri), Err: err}
		}
		return nil, userErr(err)
	}
	return st, nil
}

// open opens the repository named by the flags.
func (f *repoFlags) open(ctx context.Context) (*archive.Repo, func(), error) {
	sec, err := f.secret()
	if err != nil {
		return nil, nil, err
	}
	st, err := f.store(ctx, false)
	if err != nil {
		return nil, nil, err
	}
	repo, err := archive.Open(ctx, st, sec)
	if err != nil {
		_ = st.Close()
		return nil, nil, userErr(err)
	}
	return repo, func() { repo.Close(); _ = st.Close() }, nil
}

// refuseArgvDSN refuses a DSN of --flag, given on the command line, that
// holds a password: the process list shows it to every user. The same DSN
// from a config file or the environment is accepted.
func refuseArgvDSN(cmd *cobra.Command, flag, dsn string) error {
	if !cmd.Flags().Changed(flag) {
		return nil
	}
	// binlog stream's --mysql is a comma-separated list.
	for _, d := range append([]string{dsn}, strings.Split(dsn, ",")...) {
		if err := mysqlx.ArgvPasswordError("--"+flag, d); err != nil {
			return &UserError{Msg: err.Error(), Err: err}
		}
	}
	return nil
}

// userErr marks an error from the layers below as meant for the user: they
// already name the object and the fix.
func userErr(err error) error {
	var ue *UserError
	if errors.As(err, &ue) {
		return err
	}
	return &UserError{Msg: err.Error(), Err: err}
}

func newRepoCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repo",
		Short: "Create, verify, clean and inspect backup repositories",
	}
	cmd.AddCommand(newRepoInitCmd(s), newRepoVerifyCmd(s), newRepoGCCmd(s), newRepoStatsCmd(s), newRepoKeyCmd(s), newRepoCopyCmd(s), newRepoReconcileCmd(s))
	return cmd
}

func newRepoInitCmd(s *streams) *cobra.Command {
	var (
		rf       repoFlags
		encrypt  bool
		opts     archive.InitOptions
		output   string
		lockDays int
		lockMode string
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a repository (refuses a location that already holds one)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			sec, err := rf.secret()
			if err != nil {
				return err
			}
			if encrypt && sec.KeyFile.IsZero() && sec.Passphrase.IsZero() {
				return &UserError{Code: ExitUsage, Msg: "--encrypt needs --key-file or --passphrase-file"}
			}
			opts.Encrypt, opts.Secret = encrypt, sec
			if lockDays < 0 {
				return &UserError{Code: ExitUsage, Msg: "--object-lock must be a number of days, at least 1"}
			}
			if lockDays > 0 {
				opts.ObjectLock = &archive.ObjectLock{Days: lockDays, Mode: lockMode}
			} else if cmd.Flags().Changed("object-lock-mode") {
				return &UserError{Code: ExitUsage, Msg: "--object-lock-mode needs --object-lock DAYS"}
			}
			st, err := rf.store(cmd.Context(), true)
			if err != nil {
				return err
			}
			defer func() { _ = st.Close() }()
			repo, err := archive.Init(cmd.Context(), st, opts)
			if err != nil {
				return userErr(err)
			}
			defer repo.Close()
			cfg := repo.Config()
			if output == "json" {
				return json.NewEncoder(s.out).Encode(map[string]any{
					"id": cfg.ID, "repo": location.Redact(rf.uri), "encryption": cfg.Encryption,
					"compression": cfg.Compression, "chunk_size": cfg.ChunkSize, "object_lock": cfg.ObjectLock,
				})
			}
			lock := ""
			if l := cfg.ObjectLock; l != nil {
				lock = fmt.Sprintf(", object lock %d days %s", l.Days, l.Mode)
			}
			_, err = fmt.Fprintf(s.out, "created repository %s at %s (encryption %s, compression %s level %d, chunks %d MiB%s)\n",
				cfg.ID, location.Redact(rf.uri), cfg.Encryption, cfg.Compression, cfg.CompressionLevel, cfg.ChunkSize>>20, lock)
			return err
		},
	}
	rf.register(cmd)
	cmd.Flags().BoolVar(&encrypt, "encrypt", false, "encrypt chunks and manifests with AES-256-GCM (needs --key-file or --passphrase-file)")
	cmd.Flags().IntVar(&opts.ChunkSize, "chunk-size", archive.DefaultChunkSize, "chunk size in bytes")
	cmd.Flags().StringVar(&opts.Compression, "compress", archive.DefaultCompression, "default compression: zstd or none")
	cmd.Flags().IntVar(&opts.CompressionLevel, "compress-level", archive.DefaultCompressionLevel, "zstd level, 1 (fastest) to 22")
	cmd.Flags().IntVar(&lockDays, "object-lock", 0, "write chunks and manifests under S3 Object Lock retention for this many days (the bucket must have been created with Object Lock)")
	cmd.Flags().StringVar(&lockMode, "object-lock-mode", storage.RetentionGovernance, "retention mode: governance (s3:BypassGovernanceRetention can still delete) or compliance (no one can)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func newRepoVerifyCmd(s *streams) *cobra.Command {
	var (
		rf     repoFlags
		opts   archive.VerifyOptions
		output string
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check that every backup's chunks are present (and, with --read-data, intact)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			repo, closeRepo, err := rf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeRepo()
			p := newProgress(s.err, "verify")
			opts.Progress = func(done, total int64) { p.update(done, total, "chunks") }
			rep, err := repo.Verify(cmd.Context(), opts)
			p.done()
			if err != nil {
				return userErr(err)
			}
			if output == "json" {
				if err := json.NewEncoder(s.out).Encode(rep); err != nil {
					return err
				}
			} else {
				mode := "structure"
				if opts.ReadData {
					mode = "all data"
				}
				fmt.Fprintf(s.out, "checked %s of %d backups, %d chunks, %s read\n", mode, rep.Backups, rep.Chunks, humanBytes(rep.BytesRead))
				if rep.Objects > 0 {
					fmt.Fprintf(s.out, "checked %d binlog objects (segments, pieces, index entries)\n", rep.Objects)
				}
				for _, o := range rep.BadObjects {
					fmt.Fprintf(s.out, "object %s: damaged (does not decode to its checksum)\n", o)
				}
				for _, b := range rep.BadManifests {
					fmt.Fprintf(s.out, "backup %s: manifest unreadable\n", b)
				}
				for _, pr := range rep.Problems {
					fmt.Fprintf(s.out, "chunk %s: %s; needed by backups %s\n", pr.Chunk, pr.Problem, strings.Join(pr.Backups, ", "))
				}
			}
			if !rep.OK() {
				return &UserError{Code: ExitDamaged, Msg: fmt.Sprintf("repository damaged: %d chunk problems, backups affected: %s; %d damaged binlog objects", len(rep.Problems), strings.Join(rep.DamagedBackup, ", "), len(rep.BadObjects))}
			}
			if output != "json" {
				fmt.Fprintln(s.out, "no problems found")
			}
			return nil
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&opts.BackupID, "backup", "", "verify only this backup")
	cmd.Flags().BoolVar(&opts.ReadData, "read-data", false, "read and check every byte, not only presence and size")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func newRepoGCCmd(s *streams) *cobra.Command {
	var (
		rf     repoFlags
		opts   archive.GCOptions
		output string
	)
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Condemn chunks no backup references, delete those condemned by an earlier run",
		Long: `gc works in two phases and never stops a backup, a binlog stream, a copy or a restore.
Each run first deletes the chunks of earlier condemnation records that every running
backup has acknowledged (backups do so within their lock refresh interval, 2m), sparing
any chunk referenced again since, then condemns the chunks that no backup references
and that are older than --grace. So a chunk goes at the second run after it became
unreferenced and older than --grace. Only two gc runs exclude each other.
--dry-run -o json lists every condemnation record: since when, its state, what it
waits for and when it becomes deletable.

--max-rate bounds the requests a run sends to the store per second (every get, stat,
put and delete, and every 1,000 objects listed), so that backups and binlog streams
sharing the store keep its capacity: the default, 200/s, lets a sweep delete about
100,000 chunks in 8 minutes. 0 removes the bound (a sweep then deletes as fast as
--workers and the store allow); the run's own lock refreshes are never held back.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if opts.Grace < 0 {
				return &UserError{Code: ExitUsage, Msg: "--grace must not be negative"}
			}
			if opts.Workers < 1 {
				return &UserError{Code: ExitUsage, Msg: "--workers must be at least 1"}
			}
			if !(opts.MaxRate >= 0) || math.IsInf(opts.MaxRate, 1) {
				return &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--max-rate %v: want requests per second, a positive number, or 0 for no bound", opts.MaxRate)}
			}
			repo, closeRepo, err := rf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeRepo()
			rep, err := repo.GC(cmd.Context(), opts)
			if err != nil {
				return userErr(err)
			}
			if output == "json" {
				return json.NewEncoder(s.out).Encode(rep)
			}
			printGCReport(s, rep, opts)
			return nil
		},
	}
	rf.register(cmd)
	cmd.Flags().BoolVar(&opts.DryRun, "dry-run", false, "report what would be deleted, delete nothing")
	cmd.Flags().DurationVar(&opts.Grace, "grace", time.Hour, "do not condemn unreferenced chunks younger than this")
	cmd.Flags().IntVar(&opts.Workers, "workers", 16, "deletes in flight; fewer spare a store that binlog streams upload to")
	cmd.Flags().Float64Var(&opts.MaxRate, "max-rate", archive.DefaultGCMaxRate, "requests per second to the store at most (a list page of 1,000 objects is one); 0: no bound")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func newRepoStatsCmd(s *streams) *cobra.Command {
	var (
		rf     repoFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Backups, chunks, stored and logical bytes, dedup ratio",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			repo, closeRepo, err := rf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeRepo()
			st, err := repo.Stats(cmd.Context())
			if err != nil {
				return userErr(err)
			}
			if output == "json" {
				return json.NewEncoder(s.out).Encode(st)
			}
			tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "backups\t%d\n", st.Backups)
			fmt.Fprintf(tw, "chunks\t%d\n", st.Chunks)
			fmt.Fprintf(tw, "stored\t%s\n", humanBytes(st.StoredBytes))
			fmt.Fprintf(tw, "logical\t%s\n", humanBytes(st.LogicalBytes))
			fmt.Fprintf(tw, "dedup+compression ratio\t%.2f\n", st.DedupRatio)
			fmt.Fprintf(tw, "encryption\t%s\n", st.Encryption)
			fmt.Fprintf(tw, "compression\t%s\n", st.Compression)
			return tw.Flush()
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func checkOutput(o string) error {
	if o != "text" && o != "json" {
		return &UserError{Code: ExitUsage, Msg: fmt.Sprintf("unknown output format %q: use text or json", o)}
	}
	return nil
}

// humanBytes prints n for the CLI's summaries.
func humanBytes(n int64) string { return humanize.Bytes(n) }

func printGCReport(s *streams, rep *archive.GCReport, opts archive.GCOptions) {
	deleted, condemned := "deleted", "condemned"
	if opts.DryRun {
		deleted, condemned = "would delete", "would condemn"
	}
	fmt.Fprintf(s.out, "%d backups reference %d of %d chunks; %s %d chunks (%s); %s %d chunks (%s); %d unreferenced chunks kept within the %s grace period\n",
		rep.Backups, rep.ChunksReferred, rep.ChunksTotal, deleted, rep.ChunksDeleted, humanBytes(rep.BytesDeleted),
		condemned, rep.ChunksCondemned, humanBytes(rep.BytesCondemned), rep.ChunksInGrace, opts.Grace)
	if rep.ChunksRetained > 0 {
		until := ""
		if !rep.RetainedUntil.IsZero() {
			until = ", the last until " + rep.RetainedUntil.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(s.out, "%d unreferenced chunks kept under Object Lock retention%s; a later gc deletes them\n", rep.ChunksRetained, until)
	}
	if rep.ChunksRescued > 0 {
		fmt.Fprintf(s.out, "%d condemned chunks were referenced again and kept\n", rep.ChunksRescued)
	}
	if len(rep.BackupsFenced) > 0 {
		fmt.Fprintf(s.out, "backups whose lock went stale, fenced (they cannot commit): %s\n", strings.Join(rep.BackupsFenced, ", "))
	}
	if len(rep.Records) > 0 {
		tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "RECORD\tCONDEMNED AT\tCHUNKS\tSIZE\tSTATE\tDELETABLE AT\tWAITING FOR")
		for _, r := range rep.Records {
			waiting := strings.Join(r.WaitingFor, ",")
			if waiting == "" {
				waiting = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Record, r.CondemnedAt.UTC().Format(time.RFC3339), r.Chunks, humanBytes(r.Bytes),
				r.State, r.DeletableAt.UTC().Format(time.RFC3339), waiting)
		}
		_ = tw.Flush()
	}
	if rep.MissingReferred > 0 {
		fmt.Fprintf(s.out, "warning: %d referenced chunks are missing: run `tidemark repo verify`\n", rep.MissingReferred)
	}
}
