package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/reconcile"
	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/binlog/apply"
	"github.com/tidemark-backup/tidemark/engines/logical"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/engines/selection"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// engines returns the binary's engines: the wiring's, or the logical
// engine alone.
func (s *streams) engines() *engines.Registry {
	if s.wiring.Engines != nil {
		return s.wiring.Engines
	}
	return engines.NewRegistry(logical.New())
}

// engineByName returns the engine a standalone command runs; the manifest
// names the engine a restore must use.
func (s *streams) engineByName(name string) (engines.Engine, error) {
	e, err := s.engines().Get(name)
	if err != nil {
		return nil, &UserError{Msg: err.Error()}
	}
	return e, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func newBackupCmd(s *streams) *cobra.Command {
	var (
		rf           repoFlags
		dsn          string
		engine       string
		instance     string
		parallel     int
		compress     string
		level        int
		databases    string
		includeUsers bool
		includeSys   bool
		output       string
		controller   string
		wait         bool
		textfile     string
		logicalBelow uint64
		history      bool
	)
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Back up a MySQL or MariaDB server into a repository",
		Long: `Back up a server directly into a repository, with no controller. The new
backup's id is printed alone on the last line of stdout (-o json: a summary).

Through a controller (--controller, or TIDEMARK_CONTROLLER with --instance
and no --mysql): submit a backup job for the catalog instance --instance.
Without --wait the job id is printed; with --wait the job's progress is drawn
on stderr and the backup id printed alone on the last line of stdout, and the
exit status is non-zero, with the reason, when the job failed.

System-versioned tables (MariaDB): a logical backup holds their current rows
only, with a warning naming each, unless --history, which keeps every row
version with its period. Restoring that history needs MariaDB ≥ 10.11 with
a secure_timestamp that lets the restoring user set a row's time (NO; or
SUPER/REPLICATION and a user with SUPER or BINLOG REPLAY); a restore onto
any other server is refused before it writes anything. Physical engines copy
the history with the data files either way.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			ctx := cmd.Context()
			if err := checkOutput(output); err != nil {
				return err
			}
			if textfile != "" && viaController(controller, dsn == "" && instance != "") {
				return &UserError{Msg: "--metrics-textfile is for a standalone backup (--mysql); through a controller the agent's metrics count the job"}
			}
			if viaController(controller, dsn == "" && instance != "") {
				if dsn != "" {
					return &UserError{Code: ExitUsage, Msg: "--mysql is for a standalone backup; through a controller name the catalog instance with --instance"}
				}
				if !cmd.Flags().Changed("engine") {
					engine = "auto"
				}
				return controllerBackup(ctx, s, controller, instance, engine, parallel, history, wait, output)
			}
			if dsn == "" {
				return &UserError{Code: ExitUsage, Msg: "--mysql DSN is required, e.g. --mysql 'user@tcp(127.0.0.1:3306)/' (password in TIDEMARK_MYSQL_PASSWORD)"}
			}
			if err := refuseArgvDSN(cmd, "mysql", dsn); err != nil {
				return err
			}
			parsed, err := mysqlx.ParseDSN(dsn)
			if err != nil {
				return userErr(err)
			}
			if parallel < 0 {
				return &UserError{Code: ExitUsage, Msg: "--parallel must be at least 1"}
			}
			switch compress {
			case "zstd", "none":
			default:
				return &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--compress %q: use zstd or none", compress)}
			}
			var (
				eng       engines.Engine
				fallbacks []string
				meta      = map[string]string{}
			)
			if engine == "auto" {
				// Engine selection from a probe of the server from here.
				caps, warnings, err := probeLocal(ctx, dsn, 15*time.Second)
				if err != nil {
					return err
				}
				for _, w := range warnings {
					fmt.Fprintln(s.err, "warning: probe:", w)
				}
				d, err := selection.Decide(caps, selection.Preferences{Available: s.engines().Names(), SmallBytes: logicalBelow})
				if err != nil {
					return userErr(err)
				}
				v, rest, err := d.Choose()
				if err != nil {
					return &UserError{Msg: fmt.Sprintf("--engine auto: %v", err)}
				}
				fmt.Fprintf(s.err, "engine auto: %s\n", v.Reason)
				if eng, err = s.engineByName(v.Engine); err != nil {
					return err
				}
				fallbacks, meta[selection.MetaReason] = rest, v.Reason
			} else if eng, err = s.engineByName(engine); err != nil {
				return err
			}
			if instance == "" {
				instance = parsed.Addr()
			}
			var (
				res *engines.BackupResult
				m   *v1.Manifest
			)
			if textfile != "" {
				start := time.Now()
				defer func() { recordStandaloneBackup(s, textfile, instance, eng.Name(), start, m, err) }()
			}
			repo, closeRepo, err := rf.open(ctx)
			if err != nil {
				return err
			}
			defer closeRepo()

			p := newProgress(s.err, "backup")
			run := func(eng engines.Engine) (*v1.Manifest, error) {
				return repo.WithBackup(ctx, archive.BackupOptions{
					Instance: instance, Engine: eng.Name(), Compression: compress, CompressionLevel: level,
				}, func(ctx context.Context, b *archive.Backup) error {
					fmt.Fprintf(s.err, "backup %s of %s (%s) into %s with engine %s\n", b.ID(), instance, parsed, rf.redacted(), eng.Name())
					sink := engines.ArchiveSink(b)
					for k, v := range meta {
						sink.SetEngineMetadata(k, v)
					}
					var err error
					res, err = eng.Backup(ctx, engines.BackupParams{
						DSN: dsn, Parallel: parallel, Databases: splitList(databases),
						IncludeUsers: includeUsers, IncludeSystem: includeSys, History: history,
						Sink: sink,
						Progress: func(pr engines.Progress) {
							p.bytes(pr.Phase, pr.BytesDone, pr.BytesTotal, pr.RowsDone)
						},
					})
					return err
				})
			}
			m, err = run(eng)
			if err != nil && errors.Is(err, engines.ErrCapability) && len(fallbacks) > 0 && ctx.Err() == nil {
				// As the agent does: one retry with the next usable engine.
				next, nerr := s.engineByName(fallbacks[0])
				if nerr != nil {
					return nerr
				}
				why := fmt.Sprintf("%s failed for a capability reason, fell back to %s: %v", eng.Name(), next.Name(), err)
				fmt.Fprintln(s.err, "warning:", why)
				meta[selection.MetaFallback] = why
				eng = next
				m, err = run(next)
			}
			p.done()
			if err != nil {
				return userErr(err)
			}
			for _, w := range res.Warnings {
				fmt.Fprintln(s.err, "warning:", w)
			}
			sum := summarize(m)
			if output == "json" {
				sum["tables"], sum["rows"] = res.Tables, res.Rows
				if res.Files > 0 {
					sum["files"] = res.Files
				}
				return json.NewEncoder(s.out).Encode(sum)
			}
			what := fmt.Sprintf("%d tables, %d rows", res.Tables, res.Rows)
			if res.Files > 0 {
				what = fmt.Sprintf("%d files", res.Files)
			}
			fmt.Fprintf(s.out, "backup complete: %s, %s logical, %s stored (%s new), lock held %s, took %s\n",
				what, humanBytes(int64(m.LogicalBytes)), humanBytes(int64(m.StoredBytes)),
				humanBytes(int64(m.NewStoredBytes)), m.LockDuration.AsDuration().Round(time.Millisecond),
				m.FinishedAt.AsTime().Sub(m.StartedAt.AsTime()).Round(time.Millisecond))
			if c := m.Consistency; c != nil {
				fmt.Fprintf(s.out, "consistent at binlog %s:%d gtid %q\n", c.BinlogFile, c.BinlogPosition, c.GtidSet)
			}
			_, err = fmt.Fprintln(s.out, m.BackupId)
			return err
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&dsn, "mysql", "", "server to back up, go-sql-driver DSN: user:pass@tcp(host:port)/ or user@unix(/path)/ (password may come from TIDEMARK_MYSQL_PASSWORD)")
	cmd.Flags().StringVar(&engine, "engine", "logical", "backup engine: logical; snapshot (a filesystem snapshot of the server's Btrfs/LVM/ZFS volume), mariabackup (mariabackup/xtrabackup streamed) or clone (MySQL ≥ 8.0.17's clone plugin, CLONE LOCAL), all run on the server's host; auto: the first usable engine that 'tidemark engines explain --mysql DSN' ranks (through a controller auto is the default)")
	cmd.Flags().StringVar(&instance, "instance", "", "instance name recorded in the backup (default: the server's address); through a controller: the catalog instance to back up")
	controllerFlag(cmd, &controller)
	cmd.Flags().BoolVar(&wait, "wait", false, "through a controller: follow the job to its end and print the backup id")
	cmd.Flags().IntVar(&parallel, "parallel", 0, "worker connections (default: engine's choice for this machine)")
	cmd.Flags().StringVar(&compress, "compress", "zstd", "compression: zstd or none")
	cmd.Flags().IntVar(&level, "compress-level", archive.DefaultCompressionLevel, "zstd level, 1 (fastest) to 22")
	cmd.Flags().StringVar(&databases, "databases", "", "only these databases, comma-separated (default: all but system schemas)")
	cmd.Flags().BoolVar(&includeUsers, "include-users", false, "also back up accounts and grants")
	cmd.Flags().BoolVar(&includeSys, "include-system", false, "also back up the mysql and sys schemas")
	cmd.Flags().BoolVar(&history, "history", false, "logical engine: keep the whole history of system-versioned tables (every row version and its period; restores onto MariaDB ≥ 10.11 only); default: their current rows, with a warning")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.Flags().StringVar(&textfile, "metrics-textfile", "", "standalone: record the run (end time, duration, outcome, last success, sizes) in this Prometheus text file, for node_exporter's textfile collector")
	logicalBelowFlag(cmd, &logicalBelow)
	return cmd
}

func (f *repoFlags) redacted() string { return location.Redact(f.uri) }

// summarize is the JSON shape of one backup in listings and after a backup;
// the same field names as the controller's listing.
func summarize(m *v1.Manifest) map[string]any {
	ts := func(t *timestamppb.Timestamp) any {
		if t == nil {
			return nil
		}
		return t.AsTime().UTC().Format(time.RFC3339Nano)
	}
	out := map[string]any{
		"id":               m.BackupId,
		"instance":         m.Instance,
		"engine":           m.Engine,
		"status":           "complete",
		"started_at":       ts(m.StartedAt),
		"finished_at":      ts(m.FinishedAt),
		"size_bytes":       m.LogicalBytes,
		"stored_bytes":     m.StoredBytes,
		"new_stored_bytes": m.NewStoredBytes,
		"lock_ms":          m.LockDuration.AsDuration().Milliseconds(),
		"streams":          len(m.Streams),
		"tool_version":     m.ToolVersion,
	}
	if c := m.Consistency; c != nil {
		out["consistency"] = map[string]any{
			"binlog_file": c.BinlogFile, "binlog_position": c.BinlogPosition,
			"gtid_set": c.GtidSet, "time": ts(c.Time),
		}
	}
	if sv := m.Server; sv != nil {
		out["server"] = map[string]any{"flavor": sv.Flavor, "version": sv.Version, "server_id": sv.ServerId}
	}
	return out
}

func newBackupsCmd(s *streams) *cobra.Command {
	var (
		rf         repoFlags
		instance   string
		output     string
		controller string
		pg         pageFlags
		stale      bool
	)
	cmd := &cobra.Command{
		Use:   "backups",
		Short: "List the complete backups in a repository",
		Long: `List the complete backups in a repository (--repo), or, through a controller
(--controller, or TIDEMARK_CONTROLLER without --repo), the catalog's backups
with their status. -o json gives the same fields either way.

With --repo and a controller (--controller or TIDEMARK_CONTROLLER), each manifest
also says what it is to the catalog (column CATALOG; json "catalog" and
"catalog_note"): the catalog's backup, a live attempt, a superseded attempt
("status": "superseded" until 'tidemark repo reconcile' removes it) or unknown
to the catalog. A controller that does not answer is a warning; the listing
goes on without it.

Through a controller, every page of the listing is fetched unless --limit
bounds it; when more remain, the token that continues the listing is printed
on stderr for --page-token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if rf.uri == "" && viaController(controller, true) {
				return controllerBackups(cmd.Context(), s, controller, instance, output, pg, stale)
			}
			if pg.limit > 0 || pg.token != "" {
				return userErr(fmt.Errorf("--limit and --page-token page through the controller's catalog: not with --repo"))
			}
			if stale {
				return &UserError{Code: ExitUsage, Msg: "--stale is for a listing through a controller; a repository (--repo) is read as it is"}
			}
			repo, closeRepo, err := rf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeRepo()
			ms, err := repo.Manifests(cmd.Context())
			if err != nil {
				return userErr(err)
			}
			ms = slices.DeleteFunc(ms, func(m *v1.Manifest) bool { return instance != "" && m.Instance != instance })
			// With a controller at hand, each manifest says what it is to
			// the catalog: a superseded attempt's lists as such until
			// `repo reconcile` (or the leader's sweep) removes it.
			verdicts := catalogVerdicts(cmd.Context(), s, controller, ms)
			if output == "json" {
				list := make([]map[string]any, 0, len(ms))
				for i, m := range ms {
					e := summarize(m)
					if verdicts != nil {
						v := verdicts[i]
						if v.State == reconcile.Superseded || v.State == reconcile.Grace {
							e["status"] = "superseded"
						}
						e["catalog"], e["catalog_note"] = v.State.String(), v.Reason
					}
					list = append(list, e)
				}
				return json.NewEncoder(s.out).Encode(list)
			}
			tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
			head := "ID\tINSTANCE\tENGINE\tSTARTED\tDURATION\tSIZE\tSTORED\tBINLOG POSITION\tGTID"
			if verdicts != nil {
				head += "\tCATALOG"
			}
			fmt.Fprintln(tw, head)
			for i, m := range ms {
				pos, gtid := "", ""
				if c := m.Consistency; c != nil {
					pos, gtid = fmt.Sprintf("%s:%d", c.BinlogFile, c.BinlogPosition), c.GtidSet
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", m.BackupId, m.Instance, m.Engine,
					m.StartedAt.AsTime().UTC().Format(time.DateTime), m.FinishedAt.AsTime().Sub(m.StartedAt.AsTime()).Round(time.Second),
					humanBytes(int64(m.LogicalBytes)), humanBytes(int64(m.StoredBytes)), pos, gtid)
				if verdicts != nil {
					fmt.Fprintf(tw, "\t%s", verdicts[i].State)
				}
				fmt.Fprintln(tw)
			}
			return tw.Flush()
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&instance, "instance", "", "only backups of this instance")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	pg.register(cmd, "backups")
	controllerFlag(cmd, &controller)
	cmd.Flags().BoolVar(&stale, "stale", false, "through a controller: read the catalog of the first controller that answers, without going through the leader (it may miss recent writes; a line on stderr says how far behind it was)")
	return cmd
}

func newRestoreCmd(s *streams) *cobra.Command {
	var (
		rf           repoFlags
		dsn          string
		parallel     int
		databases    string
		tables       string
		renames      []string
		dropExisting bool
		noBinlog     bool
		verify       bool
		resume       bool
		includeUsers bool
		controller   string
		toInstance   string
		noWait       bool
		source       string
		fromBackup   string
		toTime       string
		toGTID       string
		toPosition   string
		// point in time, run here
		applyParallel int
		applyMethod   string
		serveAddr     string
		thenReplicate string
		serveTLS      apply.SourceTLS // point in time, here or through the controller
		// physical, into a datadir
		toDatadir   string
		mysqld      string
		mariabackup string
		mysqldArgs  []string
		output      string
		repoPref    string
	)
	cmd := &cobra.Command{
		Use:               "restore [BACKUP_ID]",
		ValidArgsFunction: completeBackupIDs(s),
		Short:             "Restore a backup into a MySQL or MariaDB server",
		Long: `Restore a backup into a server (--to-mysql DSN), reading the repository here.

Through a controller: --to-instance NAME submits a restore job that the
instance's agent runs (with the same filters), and follows it to its end
(--no-wait: print the job id). With --controller and --to-mysql the controller
only tells where the backup is (its repository URI, unless --repo is given)
and the restore runs here: the agents cannot restore onto a server that is
not a catalog instance.

Point in time, here: --repo URI --instance NAME --to-mysql DSN with one of
--to-time, --to-gtid or --to-position (below). The base backup is restored,
then the instance's archived binlog is rolled forward from exactly the
backup's consistency point through the target's own replication applier
(Tidemark serves the archive as a replication source on --serve-addr; the
target connects to it), or through mariadb-binlog | mariadb when the target
cannot replicate (--apply-method sql forces it). Every refusal (no base, an
archive that starts after the base, a gap, a point past the archive) comes
before anything is written. --then-replicate-from DSN leaves the server
replicating from a live source from the restored GTID position.

Point in time, through the controller: --instance NAME with one of
--to-time 'YYYY-MM-DD HH:MM:SS' (UTC unless the value has an offset, e.g.
'2026-12-03 10:00:00+02:00'; RFC 3339 too), --to-gtid G or --to-position
FILE:POS, and --to-instance TARGET. The controller picks the newest complete
backup of NAME consistent at or before the target (or --from-backup ID, or
BACKUP_ID) and the target's agent restores it, then replays NAME's archived
binlog up to the point: --to-time includes every transaction at or before
it, --to-gtid includes that GTID, --to-position stops before the event at
that position. After a failover two servers may have written files of the
same name: the restore then asks for FILE:POS@SERVER_ID (the server id that
wrote the file, as mariadb-binlog prints it).

Physical backups (engines snapshot, mariabackup, clone) restore into a
directory, not onto a running server: BACKUP_ID --repo URI --to-datadir DIR
writes the server's files into DIR (new or empty; refused if non-empty, used
by a running process, holding an unfinished restore, or too small), after
checking that the backup is of the flavor and major version of --mysqld
(default mariadbd from PATH), then prepares it: mariabackup --prepare, or,
for a crash-consistent snapshot (and a clone, where it is a check), one
start of a temporary server (crash recovery) and a clean shutdown. DIR holds .tidemark-restore-in-progress
until it is ready. With --to-time, --to-gtid or --to-position (and
--instance NAME, or BACKUP_ID as the base) the temporary server (no TCP
port, a private socket) is rolled forward from the backup's point before
its shutdown. --to-instance NAME --to-datadir DIR runs the same as a
restore job on NAME's agent, writing DIR on that agent's host.

-o json: a restore run here prints one object (backup_id, tables and rows,
or files and bytes, the durations in seconds, the point reached); a restore
job prints the final job as "jobs -o json" does (also when it failed), or
{"job_id": ...} with --no-wait.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := checkOutput(output); err != nil {
				return err
			}
			pitr := &v1.RestoreParams{SourceInstance: source, TargetInstance: toInstance}
			isPITR, err := pitrTarget(pitr, toTime, toGTID, toPosition)
			if err != nil {
				return err
			}
			if err := serveTLSParams(pitr, serveTLS, isPITR, toInstance != ""); err != nil {
				return err
			}
			if len(args) == 1 {
				if fromBackup != "" && fromBackup != args[0] {
					return &UserError{Code: ExitUsage, Msg: fmt.Sprintf("give the base backup once: %s or --from-backup %s", args[0], fromBackup)}
				}
				fromBackup = args[0]
			}
			if toDatadir != "" {
				if dsn != "" {
					return &UserError{Code: ExitUsage, Msg: "give --to-datadir DIR (a physical backup written into a new datadir) or --to-mysql DSN (a logical backup loaded into a running server), not both"}
				}
				if databases != "" || tables != "" || len(renames) > 0 || includeUsers || dropExisting || thenReplicate != "" || noBinlog || verify || resume {
					return &UserError{Code: ExitUsage, Msg: "a physical restore writes the whole server's files: --databases, --tables, --rename-db, --include-users, --drop-existing, --no-binlog, --verify, --resume and --then-replicate-from do not apply to --to-datadir"}
				}
				if !isPITR && source != "" {
					return &UserError{Code: ExitUsage, Msg: "--instance NAME restores NAME to a point in time: give --to-time, --to-gtid or --to-position"}
				}
				if !isPITR && fromBackup == "" {
					return &UserError{Code: ExitUsage, Msg: "BACKUP_ID is required (or --instance NAME with --to-time, --to-gtid or --to-position)"}
				}
				if isPITR && source == "" && fromBackup == "" {
					return &UserError{Code: ExitUsage, Msg: "--instance NAME or BACKUP_ID is required: the instance whose backup and binlog archive to restore"}
				}
				if toInstance != "" {
					if !filepath.IsAbs(toDatadir) {
						return &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--to-datadir %q: give an absolute path; the agent writes it on its own host", toDatadir)}
					}
					if mysqld != "" || mariabackup != "" || len(mysqldArgs) > 0 {
						return &UserError{Code: ExitUsage, Msg: "--mysqld, --mariabackup and --mysqld-arg are for a restore run here; the agent uses the programs on its host's PATH"}
					}
					params := pitr
					params.BackupId, params.TargetDatadir = fromBackup, toDatadir
					params.Parallelism = uint32(max(parallel, 0))
					return controllerRestore(ctx, s, controller, toInstance, !noWait, params, output)
				}
				if controller != "" && rf.uri == "" && fromBackup != "" {
					uri, err := backupRepo(ctx, s, controller, fromBackup)
					if err != nil {
						return err
					}
					rf.uri = uri
				}
				dp := datadirParams{backupID: fromBackup, instance: source, dir: toDatadir, mysqld: mysqld, mariabackup: mariabackup,
					serverArgs: mysqldArgs, parallel: parallel, applyParallel: applyParallel, method: applyMethod, serveAddr: serveAddr, serveTLS: serveTLS, output: output}
				if isPITR {
					dp.stop = pitr
				}
				return restoreDatadir(ctx, s, &rf, dp)
			}
			if isPITR || source != "" {
				if verify {
					return &UserError{Code: ExitUsage, Msg: "--verify compares a restore with its backup's row checksums; a point-in-time restore goes on past the backup, so there is nothing to compare it with"}
				}
				if resume {
					return &UserError{Code: ExitUsage, Msg: "--resume goes on with an interrupted plain restore; a point-in-time restore starts over (drop what the interrupted one created, or restore with --drop-existing)"}
				}
				if !isPITR {
					return &UserError{Code: ExitUsage, Msg: "--instance NAME restores NAME to a point in time: give --to-time, --to-gtid or --to-position"}
				}
				if toInstance != "" && dsn != "" {
					return &UserError{Code: ExitUsage, Msg: "give --to-instance TARGET (a restore job on its agent) or --to-mysql DSN (a restore run here), not both"}
				}
				if dsn != "" {
					return localPITR(ctx, s, &rf, localPITRParams{
						dsn: dsn, instance: source, fromBackup: fromBackup, stop: pitr,
						parallel: parallel, applyParallel: applyParallel, dropExisting: dropExisting, noBinlog: noBinlog,
						method: applyMethod, serveAddr: serveAddr, serveTLS: serveTLS, thenReplicate: thenReplicate, output: output,
						filtered: databases != "" || tables != "" || len(renames) > 0 || includeUsers,
					})
				}
				if toInstance == "" {
					return &UserError{Code: ExitUsage, Msg: "give --to-mysql DSN (restore here from --repo) or --to-instance TARGET (a restore job through the controller)"}
				}
				if source == "" && fromBackup == "" {
					return &UserError{Code: ExitUsage, Msg: "--instance NAME is required: the instance whose backup and binlog archive to restore"}
				}
				rename, err := parseRenames(renames)
				if err != nil {
					return err
				}
				pitr.BackupId = fromBackup
				pitr.Parallelism = uint32(max(parallel, 0))
				pitr.Databases, pitr.Tables, pitr.RenameDatabases = splitList(databases), splitList(tables), rename
				pitr.DropExisting, pitr.IncludeUsers, pitr.NoBinlog = dropExisting, includeUsers, noBinlog
				return controllerRestore(ctx, s, controller, toInstance, !noWait, pitr, output)
			}
			if len(args) == 0 && fromBackup != "" {
				args = []string{fromBackup}
			}
			if len(args) == 0 {
				return &UserError{Code: ExitUsage, Msg: "BACKUP_ID is required (or --instance NAME with --to-time, --to-gtid or --to-position for a point-in-time restore)"}
			}
			if toInstance != "" {
				if dsn != "" {
					return &UserError{Code: ExitUsage, Msg: "give --to-instance NAME (a restore job on its agent) or --to-mysql DSN (a restore run here), not both"}
				}
				rename, err := parseRenames(renames)
				if err != nil {
					return err
				}
				repo, err := restoreRepoThere(ctx, s, controller, args[0], splitList(repoPref))
				if err != nil {
					return err
				}
				return controllerRestore(ctx, s, controller, toInstance, !noWait, &v1.RestoreParams{
					BackupId: args[0], TargetInstance: toInstance, Parallelism: uint32(max(parallel, 0)), RepositoryUri: repo,
					Databases: splitList(databases), Tables: splitList(tables), RenameDatabases: rename,
					DropExisting: dropExisting, IncludeUsers: includeUsers, NoBinlog: noBinlog, Verify: verify,
				}, output)
			}
			if dsn == "" {
				return &UserError{Code: ExitUsage, Msg: "--to-mysql DSN (restore here) or --to-instance NAME (restore job through the controller) is required"}
			}
			if err := restoreRepoHere(ctx, s, &rf, controller, args[0], splitList(repoPref)); err != nil {
				return err
			}
			repo, closeRepo, m, rename, err := openForTarget(ctx, cmd, &rf, dsn, args[0], renames)
			if err != nil {
				return err
			}
			defer closeRepo()
			if physical.IsPhysical(m) {
				return physicalUsage(m)
			}
			eng, err := s.engineByName(m.Engine)
			if err != nil {
				return &UserError{Msg: fmt.Sprintf("backup %s was written by engine %q, which this tidemark cannot restore", m.BackupId, m.Engine)}
			}
			p := newProgress(s.err, "restore")
			start := time.Now()
			res, err := eng.Restore(ctx, engines.RestoreParams{
				DSN: dsn, Parallel: parallel, Source: engines.ArchiveSource(repo, m),
				Databases: splitList(databases), Tables: splitList(tables), RenameDB: rename,
				DropExisting: dropExisting, IncludeUsers: includeUsers, NoBinlog: noBinlog, Resume: resume,
				Progress: func(pr engines.Progress) { p.bytes(pr.Phase, pr.BytesDone, pr.BytesTotal, pr.RowsDone) },
			})
			p.done()
			if err != nil {
				if errors.Is(err, logical.ErrTargetNotEmpty) {
					return &UserError{Msg: err.Error() + "; restore into an empty server, use --rename-db, or pass --drop-existing", Err: err}
				}
				return userErr(fmt.Errorf("restore of backup %s: %w", m.BackupId, err))
			}
			for _, w := range res.Warnings {
				fmt.Fprintln(s.err, "warning:", w)
			}
			took := time.Since(start)
			vp := engines.VerifyParams{
				DSN: dsn, Parallel: parallel, Source: engines.ArchiveSource(repo, m),
				Databases: splitList(databases), Tables: splitList(tables), RenameDB: rename,
			}
			if output == "json" {
				out := map[string]any{
					"backup_id": m.BackupId, "instance": m.Instance, "engine": m.Engine,
					"tables": res.Tables, "rows": res.Rows, "duration_seconds": took.Seconds(), "warnings": nonNilStrings(res.Warnings),
				}
				if verify {
					v, err := verifyRestore(ctx, s, eng, m.BackupId, vp, true)
					if err != nil {
						return err
					}
					out["verified"] = map[string]any{"tables": v.Tables, "rows": v.Rows}
				}
				return json.NewEncoder(s.out).Encode(out)
			}
			if _, err = fmt.Fprintf(s.out, "restored backup %s: %d tables, %d rows in %s\n", m.BackupId, res.Tables, res.Rows, took.Round(time.Millisecond)); err != nil || !verify {
				return err
			}
			_, err = verifyRestore(ctx, s, eng, m.BackupId, vp, false)
			return err
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&dsn, "to-mysql", "", "server to restore into, go-sql-driver DSN (password may come from TIDEMARK_MYSQL_PASSWORD)")
	cmd.Flags().IntVar(&parallel, "parallel", 0, "loader connections (default: engine's choice)")
	cmd.Flags().StringVar(&databases, "databases", "", "only these databases, comma-separated")
	cmd.Flags().StringVar(&tables, "tables", "", "only these tables, comma-separated db.table")
	cmd.Flags().StringArrayVar(&renames, "rename-db", nil, "restore database old as new (old:new; repeatable)")
	cmd.Flags().BoolVar(&dropExisting, "drop-existing", false, "drop tables on the target that the restore would create")
	cmd.Flags().BoolVar(&resume, "resume", false, "logical restores here: go on with an interrupted restore of the same backup, selection and renames (its progress is recorded on the target in _tidemark_restore)")
	cmd.Flags().BoolVar(&verify, "verify", false, "logical restores: afterwards read the restored tables back and compare them with the backup's row checksums (see verify-restore)")
	cmd.Flags().BoolVar(&noBinlog, "no-binlog", false, "keep the restore out of the target's binary log (sql_log_bin=0; needs BINLOG ADMIN): for a target without replicas, faster")
	cmd.Flags().BoolVar(&includeUsers, "include-users", false, "also restore accounts and grants")
	controllerFlag(cmd, &controller)
	cmd.Flags().StringVar(&toInstance, "to-instance", "", "restore through the controller onto this catalog instance (its agent runs the job)")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "with --to-instance: print the job id and return instead of following the job")
	cmd.Flags().StringVar(&source, "instance", "", "point in time: the instance whose backup and binlog archive to restore")
	cmd.Flags().StringVar(&fromBackup, "from-backup", "", "point in time: the base backup (default: the newest complete one at or before the target)")
	cmd.Flags().StringVar(&toTime, "to-time", "", "point in time: 'YYYY-MM-DD HH:MM:SS' (UTC unless it has an offset) or RFC 3339")
	cmd.Flags().StringVar(&toGTID, "to-gtid", "", "point in time: up to and including this GTID (MariaDB 0-1-100, MySQL uuid:1-100)")
	cmd.Flags().StringVar(&toPosition, "to-position", "", "point in time: up to (not including) the event at FILE:POS (FILE:POS@SERVER_ID when two servers wrote a FILE of that name)")
	cmd.Flags().IntVar(&applyParallel, "apply-parallel", 0, "point in time, here: replication applier threads on the target during the roll-forward (default: the server's setting)")
	cmd.Flags().StringVar(&applyMethod, "apply-method", "", "point in time, here: replication (the target's applier, fed by Tidemark) or sql (mariadb-binlog | mariadb); default: replication, sql if the target refuses")
	cmd.Flags().StringVar(&serveAddr, "serve-addr", "", "point in time, here: HOST:PORT the target connects to for the archived binlog (default 127.0.0.1:0, a target on this host)")
	cmd.Flags().StringVar(&serveTLS.Mode, "serve-tls", "auto", "point in time: TLS on the target's connection to --serve-addr: auto (when the target's DSN uses TLS, or a certificate is given), on (a plaintext replica is refused) or off")
	cmd.Flags().StringVar(&serveTLS.CertFile, "serve-tls-cert", "", "point in time: the replication source's certificate (PEM, leaf first; default: an ephemeral self-signed one per restore)")
	cmd.Flags().StringVar(&serveTLS.KeyFile, "serve-tls-key", "", "point in time: the private key of --serve-tls-cert")
	cmd.Flags().StringVar(&serveTLS.CAFile, "serve-tls-ca", "", "point in time: path ON THE TARGET'S HOST of the CA that signed --serve-tls-cert; the target then verifies the source (chain and host name); default: an ephemeral certificate is verified when --serve-addr is loopback, else not")
	cmd.Flags().StringVar(&toDatadir, "to-datadir", "", "physical backups: write the server's files into this new or empty directory and prepare it as a datadir (with --to-time/--to-gtid/--to-position: rolled forward on a temporary server)")
	cmd.Flags().StringVar(&mysqld, "mysqld", "", "with --to-datadir: the server binary that will run the datadir (default: mariadbd, else mysqld, from PATH); the backup must be of its flavor and major version")
	cmd.Flags().StringVar(&mariabackup, "mariabackup", "", "with --to-datadir: mariabackup for backups it must prepare (default: from PATH)")
	cmd.Flags().StringArrayVar(&mysqldArgs, "mysqld-arg", nil, "with --to-datadir: an extra argument of the temporary server (repeatable), e.g. --mysqld-arg=--innodb-buffer-pool-size=4G")
	outputFlag(cmd, &output)
	cmd.Flags().StringVar(&repoPref, "repo-preference", "", "repositories to restore BACKUP_ID from, in order (URI,URI): the first that opens and holds it is used, so a copy serves when the primary is unreachable; through a controller: the first the catalog lists the backup in (its own or a copy)")
	cmd.Flags().StringVar(&thenReplicate, "then-replicate-from", "", "point in time, here: afterwards, replicate from this live source (DSN) from the restored GTID position")
	return cmd
}

// parseRenames reads --rename-db values: old:new pairs, comma-separated or
// repeated.
func parseRenames(renames []string) (map[string]string, error) {
	rename := map[string]string{}
	for _, r := range renames {
		for _, pair := range splitList(r) {
			from, to, ok := strings.Cut(pair, ":")
			if !ok || from == "" || to == "" {
				return nil, &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--rename-db %q: use old:new", pair)}
			}
			rename[from] = to
		}
	}
	return rename, nil
}
