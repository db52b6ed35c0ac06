package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

func newBinlogCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "binlog",
		Short: "Archive binary logs continuously and read the archive back",
	}
	cmd.AddCommand(newBinlogStreamCmd(s), newBinlogStatusCmd(s), newBinlogFetchCmd(s))
	cmd.AddCommand(newBinlogFleetCmds(s)...)
	return cmd
}

func newBinlogStreamCmd(s *streams) *cobra.Command {
	var (
		rf                  repoFlags
		dsns, instance      string
		p                   binlog.StreamParams
		logLevel, logFormat string
	)
	cmd := &cobra.Command{
		Use:   "stream",
		Short: "Stream a server's binlog into the repository until SIGINT/SIGTERM (then flush and exit 0)",
		Long: `Connects to the server as a replica and archives its binary log into the
repository in native binlog segments, durable at most --flush after each
event. With several --mysql servers (a replication group) it streams the
primary and follows a failover at the same GTID position. Stopped and started
again, it resumes where the archive ends, with no gap and no duplicate.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(s, logLevel, logFormat)
			if err != nil {
				return err
			}
			if err := refuseArgvDSN(cmd, "mysql", dsns); err != nil {
				return err
			}
			p.DSNs = splitList(dsns)
			if len(p.DSNs) == 0 {
				return &UserError{Code: ExitUsage, Msg: "--mysql is required: one DSN, or the replication group's DSNs separated by commas"}
			}
			if instance == "" {
				d, err := mysqlx.ParseDSN(p.DSNs[0])
				if err != nil {
					return userErr(err)
				}
				// The same default as `tidemark backup`, so a point-in-time
				// restore pairs the two without --instance.
				instance = d.Addr()
			}
			p.Instance, p.Logger = instance, log
			if os.Getenv("GOMEMLIMIT") == "" {
				debug.SetMemoryLimit(binlog.MemoryLimit)
			}
			repo, closeRepo, err := rf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeRepo()
			p.Repo = repo
			log.Info("binlog streaming", "instance", instance, "repo", rf.redacted(), "servers", len(p.DSNs), "flush", p.Flush)
			if err := binlog.Stream(cmd.Context(), p); err != nil {
				return userErr(err)
			}
			log.Info("binlog streaming stopped; everything received is durable", "instance", instance)
			return nil
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&dsns, "mysql", "", "server DSN, or the replication group's DSNs separated by commas: user:pass@tcp(host:port)/ (password may come from TIDEMARK_MYSQL_PASSWORD)")
	cmd.Flags().StringVar(&instance, "instance", "", "instance name in the repository (default: the first server's address)")
	cmd.Flags().DurationVar(&p.Flush, "flush", time.Second, "longest time an event waits before it is durable in the repository")
	cmd.Flags().Uint32Var(&p.ServerID, "server-id", 0, "replica server id to register with (default: derived from the instance name)")
	cmd.Flags().BoolVar(&p.PurgeArchived, "purge-archived", false, "purge the server's binlogs once archived (PURGE BINARY LOGS), for servers with their own expiry off")
	cmd.Flags().IntVar(&p.PurgeKeep, "purge-keep", 2, "with --purge-archived, archived binlog files to keep on the server")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
	return cmd
}

// openArchive opens an instance's archive, naming the known instances when
// the name is unknown.
func openArchive(ctx context.Context, repo *archive.Repo, instance string) (*binlog.Archive, error) {
	a, err := binlog.OpenArchive(ctx, repo, instance)
	if errors.Is(err, binlog.ErrUnknownInstance) {
		names, lerr := binlog.Instances(ctx, repo)
		known := "none"
		if lerr == nil && len(names) > 0 {
			known = strings.Join(names, ", ")
		}
		return nil, &UserError{Msg: fmt.Sprintf("instance %q: the repository holds no binlog archive for it (instances with one: %s)", instance, known), Err: err}
	}
	if err != nil {
		return nil, userErr(err)
	}
	return a, nil
}

func statusJSON(st binlog.Status) map[string]any {
	gaps := make([]map[string]any, len(st.Gaps))
	for i, g := range st.Gaps {
		gaps[i] = map[string]any{"after": g.After, "before": g.Before, "from_time": rfc3339(g.FromTime), "to_time": rfc3339(g.ToTime), "reason": g.Reason}
	}
	return map[string]any{
		"instance":         st.Instance,
		"segments":         st.Segments,
		"bytes":            st.Bytes,
		"first_gtid":       st.FirstGTID,
		"first_event_time": rfc3339(st.FirstTime),
		"last_event_time":  rfc3339(st.LastEventTime),
		"gtid_position":    st.GTIDPosition,
		"file":             st.File,
		"position":         st.Position,
		"server_id":        st.ServerID,
		"rpo_seconds":      st.RPO.Seconds(),
		"durable_at":       rfc3339(st.DurableAt),
		"gaps":             gaps,
	}
}

func rfc3339(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339)
}

func newBinlogStatusCmd(s *streams) *cobra.Command {
	var (
		rf       repoFlags
		instance string
		f        fleetFlags
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Per instance: the archived range, last event time, GTID position, file/position, RPO and gaps",
		Long: `With --repo, reads the archive straight from the repository (no controller
needed): every instance, or --instance NAME. Without --repo, asks the
controller (--controller or TIDEMARK_CONTROLLER) about --instance NAME: the
stream job, its durable watermark and RPO, and the archived range and gaps
when this tidemark can open the stream's repository.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			output := f.output
			if err := checkOutput(output); err != nil {
				return err
			}
			ctx := cmd.Context()
			if rf.uri == "" {
				if f.controller == "" && os.Getenv(client.EnvController) == "" {
					return &UserError{Code: ExitUsage, Msg: "give --repo URI (read the archive directly) or --controller ADDR / TIDEMARK_CONTROLLER (ask the fleet)"}
				}
				return fleetBinlogStatus(ctx, s, &f, instance)
			}
			repo, closeRepo, err := rf.open(ctx)
			if err != nil {
				return err
			}
			defer closeRepo()
			names := []string{instance}
			if instance == "" {
				if names, err = binlog.Instances(ctx, repo); err != nil {
					return userErr(err)
				}
			}
			var sts []binlog.Status
			for _, n := range names {
				a, err := openArchive(ctx, repo, n)
				if err != nil {
					return err
				}
				sts = append(sts, a.Status())
			}
			if output == "json" {
				out := make([]map[string]any, len(sts))
				for i, st := range sts {
					out[i] = statusJSON(st)
				}
				return json.NewEncoder(s.out).Encode(out)
			}
			return statusText(s.out, sts)
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&instance, "instance", "", "only this instance (default with --repo: every instance in the repository)")
	f.registerRead(s, cmd)
	return cmd
}

func statusText(w io.Writer, sts []binlog.Status) error {
	if len(sts) == 0 {
		_, err := fmt.Fprintln(w, "no binlog archives in this repository")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tFROM\tLAST EVENT\tGTID POSITION\tFILE:POS\tRPO\tSEGMENTS\tSIZE\tGAPS")
	for _, st := range sts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s:%d\t%s\t%d\t%s\t%d\n", st.Instance, tsOrDash(st.FirstTime), tsOrDash(st.LastEventTime),
			dash(st.GTIDPosition), st.File, st.Position, st.RPO, st.Segments, humanBytes(st.Bytes), len(st.Gaps))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, st := range sts {
		for _, g := range st.Gaps {
			fmt.Fprintf(w, "GAP %s: after %s (%s) until %s (%s): %s\n", st.Instance, g.After, tsOrDash(g.FromTime), g.Before, tsOrDash(g.ToTime), g.Reason)
		}
	}
	return nil
}

func tsOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func newBinlogFetchCmd(s *streams) *cobra.Command {
	var (
		rf            repoFlags
		instance, to  string
		fromS, untilS string
		output        string
	)
	cmd := &cobra.Command{
		Use:   "fetch",
		Short: "Write an instance's archived binlog segments as plain binlog files (readable by mariadb-binlog/mysqlbinlog)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if instance == "" || to == "" {
				return &UserError{Code: ExitUsage, Msg: "--instance and --to are required"}
			}
			from, err := parseTimeFlag("--from", fromS)
			if err != nil {
				return err
			}
			until, err := parseTimeFlag("--until", untilS)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			repo, closeRepo, err := rf.open(ctx)
			if err != nil {
				return err
			}
			defer closeRepo()
			a, err := openArchive(ctx, repo, instance)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(to, 0o750); err != nil {
				return userErr(err)
			}
			var written []map[string]any
			for _, seg := range a.Segments() {
				if !from.IsZero() && seg.LastTime.Before(from) || !until.IsZero() && seg.FirstTime.After(until) {
					continue
				}
				path := filepath.Join(to, seg.Name)
				if err := writeSegment(ctx, a, seg, path); err != nil {
					return userErr(err)
				}
				written = append(written, map[string]any{"path": path, "file": seg.File, "server_id": seg.ServerID,
					"start_pos": seg.StartPos, "end_pos": seg.EndPos, "first_gtid": seg.FirstGTID, "last_gtid": seg.LastGTID,
					"first_time": rfc3339(seg.FirstTime), "last_time": rfc3339(seg.LastTime)})
				if output != "json" {
					fmt.Fprintf(s.out, "%s\t%s:%d-%d\t%s..%s\n", path, seg.File, seg.StartPos, seg.EndPos, dash(seg.FirstGTID), dash(seg.LastGTID))
				}
			}
			for _, g := range a.Gaps() {
				fmt.Fprintf(s.err, "warning: the archive has a gap after %s until %s: %s\n", g.After, g.Before, g.Reason)
			}
			if output == "json" {
				if written == nil {
					written = []map[string]any{}
				}
				return json.NewEncoder(s.out).Encode(written)
			}
			if len(written) == 0 {
				fmt.Fprintln(s.err, "no segment in the range")
			}
			return nil
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&instance, "instance", "", "instance name in the repository")
	cmd.Flags().StringVar(&to, "to", "", "directory to write the binlog files into (created if missing)")
	cmd.Flags().StringVar(&fromS, "from", "", "only segments with events at or after this time (RFC 3339)")
	cmd.Flags().StringVar(&untilS, "until", "", "only segments with events at or before this time (RFC 3339)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func parseTimeFlag(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return t, &UserError{Msg: fmt.Sprintf("%s %q: use RFC 3339, e.g. 2026-12-03T14:00:00Z", name, v)}
	}
	return t, nil
}

func writeSegment(ctx context.Context, a *binlog.Archive, seg binlog.SegmentInfo, path string) (err error) {
	rc, err := a.Open(ctx, seg)
	if err != nil {
		return err
	}
	defer func() { _ = rc.Close() }()
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		_ = f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
