package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tidemark-backup/tidemark/agent"
	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/engines"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// ArchiveStatus is an instance's binlog archive as the repository holds it:
// what engines/binlog's Archive.Status reports. The CLI asks for it through
// BinlogArchiveStatus when it can reach the stream's repository.
type ArchiveStatus struct {
	FirstEventTime, LastEventTime time.Time
	FirstGTID, GTIDPosition       string
	File                          string
	Position                      uint64
	Segments                      int
	Bytes                         int64
	Gaps                          []ArchiveGap
}

// ArchiveGap is a hole in an archive: engines/binlog's Gap.
type ArchiveGap struct {
	After, Before    string
	FromTime, ToTime time.Time
	Reason           string
	DetectedAt       time.Time
}

// Wiring is the engine code the binary links into the command tree
// (cmd/tidemark passes it to MainWith): the binlog engine's entry points,
// which the agent, the controller side and the CLI reach only through these
// consumer-side shapes. A nil field makes the commands that need it say so
// (a stream job keeps retrying with "no binlog engine wired in" as its
// error; a point-in-time restore job fails).
type Wiring struct {
	// BinlogStreamer runs the agent's binlog stream jobs
	// (engines/binlog.Stream).
	BinlogStreamer agent.BinlogStreamer
	// PITRRestorer runs the agent's point-in-time restore jobs (a base
	// restore, then engines/binlog/apply).
	PITRRestorer agent.PITRRestorer
	// BinlogArchiveStatus reads an instance's archive from the repository
	// at uri (engines/binlog.OpenArchive, then Status); `tidemark binlog
	// status` uses it for the archived range and the gaps.
	BinlogArchiveStatus func(ctx context.Context, uri, instance string) (*ArchiveStatus, error)
	// Engines are the backup engines of the standalone commands and the
	// agent; nil means the logical engine alone.
	Engines *engines.Registry
}

// newBinlogFleetCmds are `tidemark binlog start|stop` through the
// controller; `binlog status` without --repo asks the controller too
// (fleetBinlogStatus).
func newBinlogFleetCmds(s *streams) []*cobra.Command {
	return []*cobra.Command{newBinlogStartCmd(s), newBinlogStopCmd(s)}
}

func newBinlogStartCmd(s *streams) *cobra.Command {
	var (
		f             fleetFlags
		instance      string
		flush         time.Duration
		repo          string
		serverID      uint32
		purgeArchived bool
	)
	cmd := &cobra.Command{
		Use:   "start --instance NAME",
		Short: "Start the continuous binlog stream of an instance (through the controller)",
		Long: `Submit the continuous binlog stream job of an instance. It runs on the
instance's agent until "tidemark binlog stop": a lost agent, a restart or a
leader change resume it, a failing stream is retried with backoff (its last
error shows in "tidemark jobs"). One stream per instance, and per "cluster"
label group: the stream covers the group and follows its primary. A stream
runs beside backups. Prints the job id.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if instance == "" {
				return &UserError{Code: ExitUsage, Msg: "--instance NAME is required: the catalog instance to stream (see tidemark instances)"}
			}
			if flush < 10*time.Millisecond || flush > 10*time.Minute {
				return &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--flush %s: must be between 10ms and 10m (how often the stream makes what it received durable)", flush)}
			}
			return f.call(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				r, err := c.Control.StartBinlogStream(ctx, &v1.StartBinlogStreamRequest{
					Instance: instance, Flush: durationpb.New(flush), RepositoryUri: repo, ServerId: serverID, PurgeArchived: purgeArchived,
				})
				if err != nil {
					return rpcErr(err)
				}
				j := r.GetJob()
				if f.output == "json" {
					return json.NewEncoder(s.out).Encode(jobJSON(j))
				}
				if cl := j.GetBinlogStream().GetCluster(); cl != "" {
					fmt.Fprintf(s.err, "binlog stream of instance %s (cluster %s) submitted\n", instance, cl)
				} else {
					fmt.Fprintf(s.err, "binlog stream of instance %s submitted\n", instance)
				}
				_, err = fmt.Fprintln(s.out, j.GetId())
				return err
			})
		},
	}
	f.register(s, cmd)
	cmd.Flags().StringVar(&instance, "instance", "", "catalog instance to stream")
	cmd.Flags().DurationVar(&flush, "flush", time.Second, "how often the stream makes what it received durable in the repository")
	cmd.Flags().StringVar(&repo, "repo-uri", "", "repository for the segments (no credentials); default: the controller's --repo, else the agent's own")
	cmd.Flags().Uint32Var(&serverID, "server-id", 0, "replica server id the stream uses (default: derived)")
	cmd.Flags().BoolVar(&purgeArchived, "purge-archived", false, "purge the server's binary logs once they are archived")
	return cmd
}

func newBinlogStopCmd(s *streams) *cobra.Command {
	var (
		f        fleetFlags
		instance string
	)
	cmd := &cobra.Command{
		Use:   "stop --instance NAME",
		Short: "Stop the binlog stream of an instance or its cluster group",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if instance == "" {
				return &UserError{Code: ExitUsage, Msg: "--instance NAME is required: the instance (or any member of its cluster group) whose stream to stop"}
			}
			return f.call(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				r, err := c.Control.StopBinlogStream(ctx, &v1.StopBinlogStreamRequest{Instance: instance, Reason: "binlog stream stopped with tidemark binlog stop"})
				if err != nil {
					return rpcErr(err)
				}
				if f.output == "json" {
					return json.NewEncoder(s.out).Encode(jobJSON(r.GetJob()))
				}
				_, err = fmt.Fprintf(s.out, "binlog stream job %s of instance %s stopped\n", r.GetJob().GetId(), r.GetJob().GetInstance())
				return err
			})
		},
	}
	f.register(s, cmd)
	cmd.Flags().StringVar(&instance, "instance", "", "instance whose stream to stop")
	return cmd
}

// rpo is now - the last durable event's server time, or why there is none.
func rpo(st *v1.BinlogStream, active bool, now time.Time) (string, any) {
	if !active {
		return "no stream", nil
	}
	t := st.GetWatermark().GetLastEventTime()
	if t == nil {
		return "pending", nil
	}
	d := max(now.Sub(t.AsTime()), 0)
	return d.Round(100 * time.Millisecond).String(), d.Seconds()
}

// binlogStatusJSON is the JSON shape of `binlog status`: the standalone
// status's fields, plus the controller's.
func binlogStatusJSON(instance string, r *v1.GetBinlogStatusResponse, arch *ArchiveStatus, archErr error, now time.Time) map[string]any {
	st := r.GetStream()
	wm := st.GetWatermark()
	_, rpoSec := rpo(st, r.GetJob() != nil, now)
	out := map[string]any{
		"instance": instance, "stream": st.GetInstance(), "streaming": r.GetJob() != nil,
		"last_event_time": tsJSON(wm.GetLastEventTime()), "durable_at": tsJSON(wm.GetDurableAt()),
		"gtid_position": wm.GetGtid(), "file": wm.GetFile(), "position": wm.GetPosition(),
		"rpo_seconds": rpoSec, "cluster": st.GetCluster(), "repository_uri": st.GetRepositoryUri(),
		"last_error": st.GetLastError(), "last_error_at": tsJSON(st.GetLastErrorAt()), "failures": st.GetFailures(),
		"range": nil, "gaps": nil, "source": "controller",
	}
	// The gaps the agents reported, as the controller recorded them (with
	// when, and whether the binlog_gap alert went out); the repository's
	// own list replaces them below when this tidemark can read it.
	reported := make([]map[string]any, 0, len(st.GetGaps()))
	for _, g := range st.GetGaps() {
		reported = append(reported, map[string]any{"after": g.GetAfter(), "before": g.GetBefore(),
			"after_gtid": g.GetAfterGtid(), "before_gtid": g.GetBeforeGtid(),
			"from_time": tsJSON(g.GetFromTime()), "to_time": tsJSON(g.GetToTime()), "reason": g.GetReason(),
			"detected_at": tsJSON(g.GetDetectedAt()), "recorded_at": tsJSON(g.GetRecordedAt()), "alerted_at": tsJSON(g.GetAlertedAt())})
	}
	out["gaps"], out["reported_gaps"] = reported, reported
	if j := r.GetJob(); j != nil {
		out["job_id"], out["state"], out["agent"], out["attempt"] = j.GetId(), jobState(j.GetState()), j.GetAgent(), j.GetAttempt()
	}
	srcs := make([]map[string]any, 0, len(r.GetSources()))
	for _, s := range r.GetSources() {
		srcs = append(srcs, map[string]any{"instance": s.GetInstance(), "agent": s.GetAgent(), "address": s.GetAddress()})
	}
	out["sources"] = srcs
	if archErr != nil {
		out["repository_error"] = archErr.Error()
	}
	if arch != nil {
		out["source"] = "repository"
		out["range"] = map[string]any{"from": timeJSON(arch.FirstEventTime), "to": timeJSON(arch.LastEventTime), "first_gtid": arch.FirstGTID}
		gaps := make([]map[string]any, 0, len(arch.Gaps))
		for _, g := range arch.Gaps {
			gaps = append(gaps, map[string]any{"after": g.After, "before": g.Before, "from_time": timeJSON(g.FromTime), "to_time": timeJSON(g.ToTime),
				"reason": g.Reason, "detected_at": timeJSON(g.DetectedAt)})
		}
		out["gaps"] = gaps
		out["segments"], out["bytes"] = arch.Segments, arch.Bytes
		// The repository is the truth for what is archived; the agent's
		// report may be newer by one heartbeat.
		if wm == nil || arch.LastEventTime.After(wm.GetLastEventTime().AsTime()) {
			out["last_event_time"], out["gtid_position"], out["file"], out["position"] = timeJSON(arch.LastEventTime), arch.GTIDPosition, arch.File, arch.Position
		}
	}
	return out
}

func timeJSON(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339)
}

// fleetBinlogStatus is `tidemark binlog status --instance NAME` through the
// controller: the durable position (GTID, file and position), the last
// event's time (RFC 3339, UTC), the RPO (now minus that time), the stream job
// and its last error, the servers of its cluster group. The archived range
// and the gaps come from the repository when this tidemark can open it (the
// stream's repository URI, credentials from the environment); otherwise only
// what the agents reported is shown.
func fleetBinlogStatus(ctx context.Context, s *streams, f *fleetFlags, instance string) error {
	if instance == "" {
		return &UserError{Code: ExitUsage, Msg: "--instance NAME is required through the controller (or give --repo URI to read the archive directly)"}
	}
	return f.read(ctx, func(ctx context.Context, c *client.Conn) error {
		r, err := c.Control.GetBinlogStatus(ctx, &v1.GetBinlogStatusRequest{Instance: instance, Stale: f.stale})
		if err != nil {
			return rpcErr(err)
		}
		f.noteRead(r.GetRead())
		if r.GetStream() == nil && r.GetJob() == nil {
			return &UserError{Msg: fmt.Sprintf("instance %s has never streamed its binlog: start with tidemark binlog start --instance %s", instance, instance)}
		}
		var (
			arch    *ArchiveStatus
			archErr error
		)
		if uri := r.GetStream().GetRepositoryUri(); s.wiring.BinlogArchiveStatus != nil && uri != "" {
			arch, archErr = s.wiring.BinlogArchiveStatus(ctx, uri, r.GetStream().GetInstance())
		}
		out := binlogStatusJSON(instance, r, arch, archErr, time.Now())
		if f.output == "json" {
			return json.NewEncoder(s.out).Encode(out)
		}
		return printBinlogStatus(s, r, out)
	})
}

func printBinlogStatus(s *streams, r *v1.GetBinlogStatusResponse, out map[string]any) error {
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	row := func(k string, v any) {
		if v == nil || v == "" {
			v = "-"
		}
		fmt.Fprintf(tw, "%s\t%v\n", k, v)
	}
	rpoText, _ := rpo(r.GetStream(), r.GetJob() != nil, time.Now())
	row("instance", out["instance"])
	row("stream", out["stream"])
	if j := r.GetJob(); j != nil {
		row("job", fmt.Sprintf("%s (%s, attempt %d on agent %s)", j.GetId(), jobState(j.GetState()), j.GetAttempt(), dash(j.GetAgent())))
	} else {
		row("job", "none: stopped")
	}
	row("rpo", rpoText)
	row("last event time", out["last_event_time"])
	row("gtid position", out["gtid_position"])
	if f, _ := out["file"].(string); f != "" {
		row("file/position", fmt.Sprintf("%s:%v", f, out["position"]))
	} else {
		row("file/position", nil)
	}
	row("durable at", out["durable_at"])
	gaps, _ := out["gaps"].([]map[string]any)
	if rg, ok := out["range"].(map[string]any); ok {
		row("archived range", fmt.Sprintf("%v .. %v", rg["from"], rg["to"]))
	}
	orDash := func(v any) any {
		if v == nil {
			return "-"
		}
		return v
	}
	switch {
	case len(gaps) > 0:
	case out["source"] == "repository":
		row("gaps", "none")
	default:
		row("gaps", "none reported by the agents")
	}
	for _, g := range gaps {
		row("gap", fmt.Sprintf("after %v, before %v (%v .. %v): %v", g["after"], g["before"], orDash(g["from_time"]), orDash(g["to_time"]), g["reason"]))
	}
	if _, ok := out["range"].(map[string]any); !ok {
		why := "the binlog engine is not linked into this tidemark"
		if e, ok := out["repository_error"].(string); ok {
			why = "repository: " + e
		} else if s.wiring.BinlogArchiveStatus != nil {
			why = "no repository recorded for the stream"
		}
		row("archived range", "unknown ("+why+")")
	}
	if e := r.GetStream().GetLastError(); e != "" {
		row("last error", fmt.Sprintf("%s (at %s, %d failure(s) in a row)", e, tsText(r.GetStream().GetLastErrorAt()), r.GetStream().GetFailures()))
	}
	var srcs []string
	for _, src := range r.GetSources() {
		srcs = append(srcs, src.GetInstance()+"@"+dash(src.GetAddress()))
	}
	if len(srcs) > 0 {
		row("servers", strings.Join(srcs, ", "))
	}
	return tw.Flush()
}
