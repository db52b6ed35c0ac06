package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/engines/selection"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// dialLeader connects to the leader among the controllers named by the
// flag or the environment (any node when the leader cannot be told), with
// one clean error when none answers.
func dialLeader(ctx context.Context, s *streams, flag string) (*client.Conn, error) {
	addrs := client.Addrs(flag)
	if len(addrs) == 0 {
		_, err := client.DialAny(ctx, nil, client.Options{})
		return nil, &UserError{Msg: err.Error(), Err: err, Code: ExitUsage}
	}
	opts, err := s.tls.clientOptions(addrs)
	if err != nil {
		return nil, err
	}
	c, err := client.DialLeader(ctx, addrs, opts)
	if err != nil {
		if len(addrs) == 0 {
			return nil, &UserError{Msg: err.Error(), Err: err}
		}
		return nil, &UserError{Msg: "no Tidemark controller answers: " + strings.ReplaceAll(err.Error(), "\n", "; "), Err: err}
	}
	return c, nil
}

// fleetFlags are the flags of the commands that read the catalog.
type fleetFlags struct {
	s          *streams
	controller string
	output     string
	timeout    time.Duration
	// stale: reads go to any node (registerRead's --stale).
	stale bool
}

func (f *fleetFlags) register(s *streams, cmd *cobra.Command) {
	f.s = s
	controllerFlag(cmd, &f.controller)
	cmd.Flags().StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 10*time.Second, "give up after this long")
}

// call dials a controller and runs fn with a bounded context.
func (f *fleetFlags) call(ctx context.Context, fn func(context.Context, *client.Conn) error) error {
	if err := checkOutput(f.output); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	c, err := dialController(ctx, f.s, f.controller)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	return fn(ctx, c)
}

// callLeader is call through the leader (writes: a follower would forward
// them anyway; the leader answers them first hand).
func (f *fleetFlags) callLeader(ctx context.Context, fn func(context.Context, *client.Conn) error) error {
	if err := checkOutput(f.output); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	c, err := dialLeader(ctx, f.s, f.controller)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	return fn(ctx, c)
}

func tsJSON(t *timestamppb.Timestamp) any {
	if t == nil {
		return nil
	}
	return t.AsTime().UTC().Format(time.RFC3339Nano)
}

func tsText(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format(time.DateTime)
}

// capsJSON is a Capabilities message as a JSON object with the proto field
// names.
func capsJSON(c *v1.Capabilities) json.RawMessage {
	if c == nil {
		return json.RawMessage("null")
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(c)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

func labelsText(l map[string]string) string {
	keys := slices.Sorted(maps.Keys(l))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+l[k])
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

// listAll follows a List call's pages to the end; page gets the token and
// returns one page's items and the next token ("" at the end).
func listAll[T any](page func(tok string) ([]T, string, error)) ([]T, error) {
	var all []T
	tok := ""
	for {
		items, next, err := page(tok)
		if err != nil {
			return nil, rpcErr(err)
		}
		all = append(all, items...)
		if next == "" {
			return all, nil
		}
		tok = next
	}
}

// pageFlags are a listing's --limit and --page-token.
type pageFlags struct {
	limit, size uint32
	token       string
}

func (p *pageFlags) register(cmd *cobra.Command, what string) {
	cmd.Flags().Uint32Var(&p.limit, "limit", 0, "list at most this many "+what+" (0: all); the token to continue is printed on stderr")
	cmd.Flags().StringVar(&p.token, "page-token", "", "continue a listing where a --limit run stopped (the token it printed)")
	cmd.Flags().Uint32Var(&p.size, "page-size", 0, "records per call to the controller (0: its default, 100); the listing is the same")
}

// list follows a List call's pages from --page-token until --limit items
// (all of them without one). Pages may be short (the controller bounds the
// records one call walks), so it asks for exactly what is still wanted and
// stops only on the limit or an empty next token; a stop on the limit with
// more to come prints the token that continues on stderr.
func listPages[T any](s *streams, p pageFlags, page func(tok string, size uint32) ([]T, string, error)) ([]T, error) {
	var all []T
	tok := p.token
	for {
		size := p.size // 0: the controller's default
		if p.limit > 0 && (size == 0 || size > p.limit-uint32(len(all))) {
			size = p.limit - uint32(len(all))
		}
		items, next, err := page(tok, size)
		if err != nil {
			return nil, rpcErr(err)
		}
		all = append(all, items...)
		if next == "" {
			return all, nil
		}
		if p.limit > 0 && uint32(len(all)) >= p.limit {
			fmt.Fprintf(s.err, "more: continue with --page-token %s\n", next)
			return all, nil
		}
		tok = next
	}
}

func nonNilLabels(l map[string]string) map[string]string {
	if l == nil {
		return map[string]string{}
	}
	return l
}

func newAgentsCmd(s *streams) *cobra.Command {
	var f fleetFlags
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "List the agents registered with the controller",
		Long: `List the agents the controller knows: name, labels, whether it holds a live
session, when it was last heard from, and the server it probed. -o json prints
a list of objects with "name", "labels", "capabilities", "last_seen" and
"connected".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.read(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				var info *v1.ReadInfo
				agents, err := listAll(func(tok string) ([]*v1.Agent, string, error) {
					r, err := c.Control.ListAgents(ctx, &v1.ListAgentsRequest{PageToken: tok, Stale: f.stale})
					info = r.GetRead()
					return r.GetAgents(), r.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
				f.noteRead(info)
				if f.output == "json" {
					list := make([]map[string]any, 0, len(agents))
					for _, a := range agents {
						list = append(list, map[string]any{
							"id": a.GetId(), "name": a.GetName(), "labels": nonNilLabels(a.GetLabels()),
							"capabilities": capsJSON(a.GetCapabilities()), "last_seen": tsJSON(a.GetLastSeen()),
							"connected": a.GetConnected(), "address": a.GetAddress(), "registered_at": tsJSON(a.GetRegisteredAt()),
						})
					}
					return json.NewEncoder(s.out).Encode(list)
				}
				tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tCONNECTED\tLAST SEEN\tADDRESS\tSERVER\tLABELS")
				for _, a := range agents {
					cp := a.GetCapabilities()
					server := strings.TrimSpace(cp.GetFlavor() + " " + cp.GetVersion())
					if server == "" {
						server = "-"
					}
					fmt.Fprintf(tw, "%s\t%t\t%s\t%s\t%s\t%s\n", a.GetName(), a.GetConnected(), tsText(a.GetLastSeen()),
						a.GetAddress(), server, labelsText(a.GetLabels()))
				}
				return tw.Flush()
			})
		},
	}
	f.registerRead(s, cmd)
	return cmd
}

func newInstancesCmd(s *streams) *cobra.Command {
	var f fleetFlags
	cmd := &cobra.Command{
		Use:   "instances",
		Short: "List the database instances the agents serve",
		Long: `List the database instances the agents serve, with their server, binlog
format, role, labels and RPO: how far behind now the binlog stream's last
durable event is ("no stream" without one; "pending" before its first flush).
-o json prints a list of objects with "name", "agent", "labels",
"capabilities", "updated_at", "binlog" (null without a stream, else
"stream", "job_id", "rpo_seconds", "last_event_time", "gtid_position",
"file", "position", "durable_at", "last_error"), "engine" (engine
selection's decision: "chosen", "verdicts", "notes", "decided_at"; null
before the first) and "engine_changes" (the latest changes of choice, oldest
first: "at", "old_engine", "new_engine", "old_reason", "new_reason").

The ENGINE column is what a backup with engine auto runs; after a re-probe
changed it, the latest change is listed under the table.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.read(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				var info *v1.ReadInfo
				list, err := listAll(func(tok string) ([]*v1.Instance, string, error) {
					r, err := c.Control.ListInstances(ctx, &v1.ListInstancesRequest{PageToken: tok, Stale: f.stale})
					info = r.GetRead()
					return r.GetInstances(), r.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
				f.noteRead(info)
				now := time.Now()
				if f.output == "json" {
					out := make([]map[string]any, 0, len(list))
					for _, in := range list {
						out = append(out, map[string]any{
							"name": in.GetName(), "agent": in.GetAgent(), "labels": nonNilLabels(in.GetLabels()),
							"capabilities": capsJSON(in.GetCapabilities()), "updated_at": tsJSON(in.GetUpdatedAt()),
							"address": in.GetAddress(), "binlog": instanceStreamJSON(in.GetBinlog(), now),
							"engine": decisionJSON(in.GetEngineDecision()), "engine_changes": changesJSON(in.GetEngineChanges()),
						})
					}
					return json.NewEncoder(s.out).Encode(out)
				}
				tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tAGENT\tSERVER\tBINLOG\tREPLICA\tENGINE\tRPO\tLABELS")
				for _, in := range list {
					cp := in.GetCapabilities()
					binlog := "off"
					if cp.GetBinlogEnabled() {
						binlog = cp.GetBinlogFormat()
					}
					r, _ := rpo(in.GetBinlog(), in.GetBinlog() != nil, now)
					if e := in.GetBinlog().GetLastError(); e != "" && in.GetBinlog().GetFailures() > 0 {
						r += " (failing)"
					}
					eng := "-"
					if d := in.GetEngineDecision(); d != nil {
						eng = d.GetChosen()
						if eng == "" {
							eng = "none usable"
						}
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%s\t%s\t%s\n", in.GetName(), in.GetAgent(),
						strings.TrimSpace(cp.GetFlavor()+" "+cp.GetVersion()), binlog, cp.GetIsReplica(), eng, r, labelsText(in.GetLabels()))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				for _, in := range list {
					chs := in.GetEngineChanges()
					if len(chs) == 0 {
						continue
					}
					ch := chs[len(chs)-1]
					fmt.Fprintf(s.out, "%s: engine %s → %s at %s: %s\n", in.GetName(), orDash(ch.GetOldEngine()), orDash(ch.GetNewEngine()), tsText(ch.GetAt()), ch.GetOldReason())
				}
				return nil
			})
		},
	}
	f.registerRead(s, cmd)
	return cmd
}

// instanceStreamJSON is the "binlog" field of an instance in JSON: the
// stream that covers it, or null.
func instanceStreamJSON(st *v1.BinlogStream, now time.Time) any {
	if st == nil {
		return nil
	}
	wm := st.GetWatermark()
	_, sec := rpo(st, true, now)
	return map[string]any{
		"stream": st.GetInstance(), "job_id": st.GetJobId(), "rpo_seconds": sec,
		"last_event_time": tsJSON(wm.GetLastEventTime()), "gtid_position": wm.GetGtid(), "file": wm.GetFile(),
		"position": wm.GetPosition(), "durable_at": tsJSON(wm.GetDurableAt()), "last_error": st.GetLastError(),
		"failures": st.GetFailures(), "cluster": st.GetCluster(),
	}
}

// lower turns an enum value name into its lower-case short form.
func lower(name, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}

func jobState(st v1.JobState) string { return lower(st.String(), "JOB_STATE_") }
func jobKind(k v1.JobKind) string    { return lower(k.String(), "JOB_KIND_") }

// jobJSON is the JSON shape of one job.
func jobJSON(j *v1.Job) map[string]any {
	out := map[string]any{
		"id": j.GetId(), "kind": jobKind(j.GetKind()), "instance": j.GetInstance(), "state": jobState(j.GetState()),
		"attempt": j.GetAttempt(), "agent": j.GetAgent(), "created_at": tsJSON(j.GetCreatedAt()),
		"updated_at": tsJSON(j.GetUpdatedAt()), "reason": j.GetReason(), "backup_id": j.GetResult().GetBackupId(),
		"error": j.GetResult().GetError(),
	}
	if j.GetPolicy() != "" {
		out["policy"] = j.GetPolicy()
	}
	if t := j.GetScheduledFor(); t != nil {
		out["scheduled_for"] = tsRFC3339(t.AsTime())
	}
	if b := j.GetBackup(); b != nil {
		out["engine"] = b.GetEngine()
		out["engine_reason"] = b.GetEngineReason()
		out["fallback_engines"] = nonNilList(b.GetFallbackEngines())
	}
	if r := j.GetRestore(); r != nil {
		out["restore_backup_id"] = r.GetBackupId()
		switch st := r.GetStopAt().(type) {
		case *v1.RestoreParams_StopAtTime:
			out["to_time"] = tsJSON(st.StopAtTime)
		case *v1.RestoreParams_StopAtGtidSet:
			out["to_gtid"] = st.StopAtGtidSet
		case *v1.RestoreParams_StopAtPosition:
			out["to_position"] = positionString(st.StopAtPosition)
		}
		if r.GetSourceInstance() != "" {
			out["source_instance"] = r.GetSourceInstance()
		}
	}
	if b := j.GetBinlogStream(); b != nil {
		out["cluster"] = b.GetCluster()
		out["flush"] = b.GetFlush().AsDuration().String()
		out["status"] = jobReason(j)
	}
	if p := j.GetProgress(); p != nil {
		out["progress"] = map[string]any{"phase": p.GetPhase(), "bytes_done": p.GetBytesDone(), "bytes_total": p.GetBytesTotal(), "rows_done": p.GetRowsDone()}
	}
	prev := make([]map[string]any, 0, len(j.GetPreviousAttempts()))
	for _, a := range j.GetPreviousAttempts() {
		prev = append(prev, map[string]any{"attempt": a.GetAttempt(), "agent": a.GetAgent(), "backup_id": a.GetBackupId(), "error": a.GetError()})
	}
	out["previous_attempts"] = prev
	return out
}

func newJobsCmd(s *streams) *cobra.Command {
	var (
		f        fleetFlags
		instance string
		pg       pageFlags
	)
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "List the controller's jobs, newest first",
		Long: `List the controller's jobs, newest first (by creation time). Every page is
fetched unless --limit bounds the listing; when more remain, the token that
continues it is printed on stderr for --page-token. Finished jobs are kept
within the controller's --job-history-max and --job-history-age.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.read(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				var info *v1.ReadInfo
				jobs, err := listPages(s, pg, func(tok string, size uint32) ([]*v1.Job, string, error) {
					r, err := c.Control.ListJobs(ctx, &v1.ListJobsRequest{Instance: instance, PageToken: tok, PageSize: size, Stale: f.stale})
					info = r.GetRead()
					return r.GetJobs(), r.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
				f.noteRead(info)
				if f.output == "json" {
					out := make([]map[string]any, 0, len(jobs))
					for _, j := range jobs {
						out = append(out, jobJSON(j))
					}
					return json.NewEncoder(s.out).Encode(out)
				}
				tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tKIND\tINSTANCE\tSTATE\tATTEMPT\tAGENT\tCREATED\tBACKUP\tREASON")
				for _, j := range jobs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", j.GetId(), jobKind(j.GetKind()), j.GetInstance(),
						jobState(j.GetState()), j.GetAttempt(), dash(j.GetAgent()), tsText(j.GetCreatedAt()),
						dash(j.GetResult().GetBackupId()), dash(jobReason(j)))
				}
				return tw.Flush()
			})
		},
	}
	f.registerRead(s, cmd)
	cmd.Flags().StringVar(&instance, "instance", "", "only jobs on this instance")
	pg.register(cmd, "jobs")
	return cmd
}

// jobReason is a job's reason, or for an active binlog stream (never in a
// final state) how it is doing: its position, or its last error and next
// retry.
func jobReason(j *v1.Job) string {
	if j.GetReason() == "" && j.GetKind() == v1.JobKind_JOB_KIND_BINLOG_STREAM && !terminal(j.GetState()) {
		return j.GetProgress().GetPhase()
	}
	return j.GetReason()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newJobCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "job",
		Short: "Follow one controller job",
	}
	cmd.AddCommand(newJobWatchCmd(s), newJobCancelCmd(s))
	return cmd
}

func newJobCancelCmd(s *streams) *cobra.Command {
	var (
		f      fleetFlags
		reason string
	)
	cmd := &cobra.Command{
		Use:   "cancel JOB_ID",
		Short: "Cancel a pending or running job (operator)",
		Long: `Cancel a job: a pending one never starts; a running one is stopped by its
agent (a backup leaves no manifest: the repository holds no backup from it,
and its uploaded chunks are collected by repo gc). The reason is recorded
with the job. A job that already ended is refused, saying how and when it
ended. -o json prints the job after the cancellation, as "jobs -o json"
prints it.`,
		Example: `  tidemark job cancel 20261203T100000Z-c81e49ce --reason "maintenance window"
  tidemark jobs --instance db7 -o json | jq -r '.[] | select(.state=="running") | .id' | xargs -n1 tidemark job cancel`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeJobIDs(s),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.callLeader(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				r, err := c.Control.CancelJob(ctx, &v1.CancelJobRequest{Id: args[0], Reason: reason})
				if err != nil {
					return rpcErr(err)
				}
				if f.output == "json" {
					return json.NewEncoder(s.out).Encode(jobJSON(r.GetJob()))
				}
				_, err = fmt.Fprintf(s.out, "job %s cancelled\n", r.GetJob().GetId())
				return err
			})
		},
	}
	f.register(s, cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded with the job (default \"cancelled\")")
	return cmd
}

func newJobWatchCmd(s *streams) *cobra.Command {
	var (
		controller, output string
		timeout            time.Duration
	)
	cmd := &cobra.Command{
		Use:   "watch JOB_ID",
		Short: "Stream a job's state and progress until it ends",
		Long: `Stream a job's state changes and progress on stderr until it ends. A backup
job's backup id is printed alone on stdout when it succeeds. Exits non-zero,
with the reason, when the job failed or was cancelled. A controller that goes
away mid-watch (killed, a leader change, an election) is replaced by the
leader among --controller, with backoff, until the job ends or --timeout:
a leader change never ends the watch early, and the final state printed is
the committed one.

-o json prints JSON lines on stdout, one object per update the controller
sends (the job's fields, as in "tidemark jobs -o json"), the last one the job
in its final state; nothing is drawn on stderr.`,
		Example: `  tidemark job watch 20261203T100000Z-c81e49ce
  tidemark job watch 20261203T100000Z-c81e49ce -o json | jq -c '{state, progress}'`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeJobIDs(s),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			var each func(*v1.Job)
			if output == "json" {
				enc := json.NewEncoder(s.out)
				each = func(j *v1.Job) { _ = enc.Encode(jobJSON(j)) }
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			j, err := watchJob(ctx, s, controller, args[0], each)
			if err != nil {
				return err
			}
			if output == "json" {
				// Every update, the final one included, is printed.
				return jobFailure(j)
			}
			return jobOutcome(s, j, output)
		},
	}
	controllerFlag(cmd, &controller)
	outputFlag(cmd, &output)
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long, with exit code 5 (0: follow until the job ends; without a controller to serve the watch for 2m, give up then)")
	return cmd
}

// printJobID prints a submitted job's id: alone on a line, or with -o json
// as {"job_id": ID}.
func printJobID(s *streams, id, output string) error {
	if output == "json" {
		return json.NewEncoder(s.out).Encode(map[string]any{"job_id": id})
	}
	_, err := fmt.Fprintln(s.out, id)
	return err
}

// jobOutcome prints a finished job's result (the backup id of a backup
// job; with -o json the whole job, also when it failed) and returns its
// failure.
func jobOutcome(s *streams, j *v1.Job, output string) error {
	if output == "json" {
		if err := json.NewEncoder(s.out).Encode(jobJSON(j)); err != nil {
			return err
		}
		return jobFailure(j)
	}
	if j.GetState() == v1.JobState_JOB_STATE_SUCCEEDED {
		if id := j.GetResult().GetBackupId(); id != "" && j.GetKind() == v1.JobKind_JOB_KIND_BACKUP {
			_, err := fmt.Fprintln(s.out, id)
			return err
		}
		_, err := fmt.Fprintf(s.out, "job %s succeeded\n", j.GetId())
		return err
	}
	return jobFailure(j)
}

// jobFailure is nil for a job that succeeded, else its failure.
func jobFailure(j *v1.Job) error {
	switch j.GetState() {
	case v1.JobState_JOB_STATE_SUCCEEDED:
		return nil
	default:
		reason := j.GetReason()
		if reason == "" {
			reason = j.GetResult().GetError()
		}
		if reason == "" {
			reason = "no reason recorded"
		}
		return &UserError{Msg: fmt.Sprintf("job %s %s: %s", j.GetId(), jobState(j.GetState()), reason)}
	}
}

// watchLost is how long a watch without a --timeout keeps trying after no
// controller served it: far longer than an election (seconds), so a leader
// change never ends a watch, yet a cluster that stays without a quorum does
// not hold a script forever.
const watchLost = 2 * time.Minute

// watchJob follows a job through WatchJob until it reaches a final state,
// drawing progress on stderr, and returns the final job. When the stream
// breaks (the node killed, the leader stepping down, an election) it dials
// the leader among the addresses again, with backoff, and watches again,
// until ctx ends or, when ctx has no deadline, until no controller served
// the watch for watchLost. The final job is as the catalog committed it:
// WatchJob sends the catalog's job (with the leader's progress overlaid),
// and a catalog holds only committed entries, so a final state seen is
// final for every node.
//
// each, when set, gets every update instead (JSON lines; an update a new
// stream repeats is not passed again), and nothing is drawn.
func watchJob(ctx context.Context, s *streams, controller, id string, each func(*v1.Job)) (*v1.Job, error) {
	errw := s.err
	if each != nil {
		errw = io.Discard
	}
	p := newProgress(errw, "job "+id)
	defer p.done()
	var (
		last      *v1.Job
		failSince time.Time
		lostNoted bool
	)
	backoff := 200 * time.Millisecond
	_, bounded := ctx.Deadline()
	for {
		j, err := watchOnce(ctx, s, controller, id, func(j *v1.Job) {
			failSince, lostNoted, backoff = time.Time{}, false, 200*time.Millisecond
			if last != nil && proto.Equal(j, last) {
				return // a new stream starts with the job as it is
			}
			if each != nil {
				each(j)
			}
			if last == nil || last.GetState() != j.GetState() || last.GetAttempt() != j.GetAttempt() {
				p.done()
				line := fmt.Sprintf("job %s: %s", id, jobState(j.GetState()))
				if j.GetAgent() != "" {
					line += fmt.Sprintf(" (attempt %d on agent %s)", j.GetAttempt(), j.GetAgent())
				}
				if n := len(j.GetPreviousAttempts()); n > 0 && (last == nil || len(last.GetPreviousAttempts()) != n) {
					line += "; previous attempt ended: " + j.GetPreviousAttempts()[n-1].GetError()
				}
				fmt.Fprintln(errw, line)
			}
			if pr := j.GetProgress(); pr != nil && j.GetState() == v1.JobState_JOB_STATE_RUNNING && (pr.GetBytesDone() > 0 || pr.GetRowsDone() > 0) {
				p.bytes(pr.GetPhase(), int64(pr.GetBytesDone()), int64(pr.GetBytesTotal()), int64(pr.GetRowsDone()))
			}
			last = j
		})
		if err == nil {
			return j, nil
		}
		if ctx.Err() != nil {
			return nil, watchEnded(ctx, id, last, err)
		}
		var ue *UserError
		if st, ok := status.FromError(err); ok && st.Code() == codes.NotFound {
			return nil, rpcErr(err)
		} else if errors.As(err, &ue) && ue.Code == ExitUsage {
			return nil, err
		} else if errors.As(err, &ue) && failSince.IsZero() && last == nil {
			return nil, err // no controller answered at all
		}
		if failSince.IsZero() {
			failSince = time.Now()
		} else if !bounded && time.Since(failSince) > watchLost {
			return nil, &UserError{Msg: fmt.Sprintf("lost the watch of job %s: no controller served it for %s (last: %v); the job goes on: tidemark job watch %s", id, watchLost, status.Convert(err).Message(), id), Err: err}
		}
		if !lostNoted && last != nil {
			p.done()
			fmt.Fprintf(errw, "job %s: the watch broke (%s); watching again through the leader\n", id, status.Convert(err).Message())
			lostNoted = true
		}
		select {
		case <-ctx.Done():
			return nil, watchEnded(ctx, id, last, err)
		case <-time.After(backoff):
			backoff = min(2*backoff, 2*time.Second)
		}
	}
}

// watchEnded is the error of a watch whose context ended (--timeout, or
// interrupted): what it last saw of the job, which goes on.
func watchEnded(ctx context.Context, id string, last *v1.Job, err error) error {
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ctx.Err()
	}
	seen := "never saw it"
	if last != nil {
		seen = "last saw it " + jobState(last.GetState())
	}
	return &UserError{Msg: fmt.Sprintf("job %s did not end within --timeout (%s; last error: %s); the job goes on: tidemark job watch %s", id, seen, status.Convert(err).Message(), id), Err: ctx.Err(), Code: ExitUnreachable}
}

// watchProbe is how often a quiet watch checks that its node still
// answers, and how long it waits for the answer.
const watchProbe = 2 * time.Second

// watchOnce runs one WatchJob stream; it returns the job once it is final.
func watchOnce(ctx context.Context, s *streams, controller, id string, seen func(*v1.Job)) (*v1.Job, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := dialLeader(dctx, s, controller)
	cancel()
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close() }()
	wctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	stream, err := c.Control.WatchJob(wctx, &v1.WatchJobRequest{Id: id})
	if err != nil {
		return nil, err
	}
	// The stream says nothing while the job does not change, and a node
	// that is stopped (SIGSTOP, a hung host) keeps its connections open:
	// ask it how it is every watchProbe, and watch elsewhere when it does
	// not answer.
	go func() {
		t := time.NewTicker(watchProbe)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
			pctx, cancel := context.WithTimeout(wctx, watchProbe)
			_, err := c.Cluster.NodeStatus(pctx, &v1.NodeStatusRequest{})
			cancel()
			if err != nil && wctx.Err() == nil {
				stop(status.Errorf(codes.Unavailable, "node %s (%s) did not answer within %s", c.NodeID, c.Addr, watchProbe))
				return
			}
		}
	}()
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, status.Error(codes.Unavailable, "watch ended before the job did")
		}
		if err != nil {
			if cause := context.Cause(wctx); ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) {
				return nil, cause
			}
			return nil, err
		}
		j := m.GetJob()
		seen(j)
		if terminal(j.GetState()) {
			return j, nil
		}
	}
}

func terminal(st v1.JobState) bool {
	switch st {
	case v1.JobState_JOB_STATE_SUCCEEDED, v1.JobState_JOB_STATE_FAILED, v1.JobState_JOB_STATE_CANCELLED:
		return true
	}
	return false
}

// backupJSON is the JSON shape of one catalog backup: the fields of the
// standalone listing (summarize) plus the catalog's own.
func backupJSON(b *v1.Backup) map[string]any {
	out := map[string]any{
		"id": b.GetId(), "instance": b.GetInstance(), "engine": b.GetEngine(),
		"status":     lower(b.GetStatus().String(), "BACKUP_STATUS_"),
		"started_at": tsJSON(b.GetStartedAt()), "finished_at": tsJSON(b.GetFinishedAt()),
		"size_bytes": b.GetSizeBytes(), "stored_bytes": b.GetStoredBytes(),
		"job_id": b.GetJobId(), "repository_uri": b.GetRepositoryUri(), "manifest_key": b.GetManifestKey(),
	}
	if b.GetPolicy() != "" {
		out["policy"] = b.GetPolicy()
	}
	if t := b.GetScheduledFor(); t != nil {
		out["scheduled_for"] = tsRFC3339(t.AsTime())
	}
	if r := b.GetFailureReason(); r != "" {
		out["failure_reason"] = r
	}
	retentionJSON(b, out)
	if c := b.GetConsistency(); c != nil {
		out["consistency"] = map[string]any{
			"binlog_file": c.GetBinlogFile(), "binlog_position": c.GetBinlogPosition(),
			"gtid_set": c.GetGtidSet(), "time": tsJSON(c.GetTime()),
		}
	}
	return out
}

// controllerBackup submits a backup job and, with wait, follows it to its
// end: the route of `tidemark backup --instance NAME` with a controller.
//
// -o json: without wait {"job_id": ID}; with wait the final job (jobJSON),
// printed also when the job failed.
func controllerBackup(ctx context.Context, s *streams, controller, instance, engine string, parallel int, history, wait bool, output string) error {
	if instance == "" {
		return &UserError{Code: ExitUsage, Msg: "--instance NAME is required with a controller: the catalog's instance to back up (see tidemark instances)"}
	}
	if engine != "" && engine != "auto" {
		// The agent runs the job with its own registry and the controller
		// refuses an engine the instance cannot run; a name no engine has
		// is refused here rather than as a failed job.
		if err := selection.CheckNames([]string{engine}); err != nil {
			return &UserError{Code: ExitUsage, Msg: "--engine: " + err.Error()}
		}
	}
	if parallel < 0 {
		return &UserError{Code: ExitUsage, Msg: "--parallel must be at least 1"}
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := dialLeader(sctx, s, controller)
	if err != nil {
		return err
	}
	r, err := c.Control.SubmitBackup(sctx, &v1.SubmitBackupRequest{Instance: instance, Engine: engine, Parallelism: uint32(parallel), History: history})
	_ = c.Close()
	if err != nil {
		return rpcErr(err)
	}
	id := r.GetJob().GetId()
	if !wait {
		return printJobID(s, id, output)
	}
	fmt.Fprintf(s.err, "backup job %s submitted for instance %s\n", id, instance)
	j, err := watchJob(ctx, s, controller, id, nil)
	if err != nil {
		return err
	}
	return jobOutcome(s, j, output)
}

// controllerBackups lists the catalog's backups of an instance.
func controllerBackups(ctx context.Context, s *streams, controller, instance, output string, pg pageFlags, stale bool) error {
	f := fleetFlags{s: s, controller: controller, output: output, timeout: 10 * time.Second, stale: stale}
	return f.read(ctx, func(ctx context.Context, c *client.Conn) error {
		var info *v1.ReadInfo
		list, err := listPages(s, pg, func(tok string, size uint32) ([]*v1.Backup, string, error) {
			r, err := c.Control.ListBackups(ctx, &v1.ListBackupsRequest{Instance: instance, PageToken: tok, PageSize: size, Stale: stale})
			info = r.GetRead()
			return r.GetBackups(), r.GetNextPageToken(), err
		})
		if err != nil {
			return err
		}
		f.noteRead(info)
		if output == "json" {
			out := make([]map[string]any, 0, len(list))
			for _, b := range list {
				out = append(out, backupJSON(b))
			}
			return json.NewEncoder(s.out).Encode(out)
		}
		tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tINSTANCE\tENGINE\tSTATUS\tSTARTED\tDURATION\tSIZE\tSTORED\tBINLOG POSITION\tGTID\tNOTE")
		for _, b := range list {
			pos, gtid, dur := "", "", "-"
			if c := b.GetConsistency(); c != nil {
				pos, gtid = fmt.Sprintf("%s:%d", c.GetBinlogFile(), c.GetBinlogPosition()), c.GetGtidSet()
			}
			if b.GetStartedAt() != nil && b.GetFinishedAt() != nil {
				dur = b.GetFinishedAt().AsTime().Sub(b.GetStartedAt().AsTime()).Round(time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.GetId(), b.GetInstance(), b.GetEngine(),
				lower(b.GetStatus().String(), "BACKUP_STATUS_"), tsText(b.GetStartedAt()), dur,
				humanBytes(int64(b.GetSizeBytes())), humanBytes(int64(b.GetStoredBytes())), pos, gtid, backupNote(b))
		}
		return tw.Flush()
	})
}

// controllerRestore submits a restore job onto a catalog instance and
// follows it to its end.
func controllerRestore(ctx context.Context, s *streams, controller, instance string, wait bool, params *v1.RestoreParams, output string) error {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := dialLeader(sctx, s, controller)
	if err != nil {
		return err
	}
	r, err := c.Control.SubmitRestore(sctx, &v1.SubmitRestoreRequest{Params: params})
	_ = c.Close()
	if err != nil {
		return rpcErr(err)
	}
	id := r.GetJob().GetId()
	if !wait {
		return printJobID(s, id, output)
	}
	if params.GetStopAt() != nil {
		rp := r.GetJob().GetRestore()
		fmt.Fprintf(s.err, "point-in-time restore job %s submitted: %s onto instance %s\n", id, pitrDescription(rp), instance)
	} else {
		fmt.Fprintf(s.err, "restore job %s submitted: backup %s onto instance %s\n", id, params.GetBackupId(), instance)
	}
	j, err := watchJob(ctx, s, controller, id, nil)
	if err != nil {
		return err
	}
	return jobOutcome(s, j, output)
}

// viaController decides whether a command goes through a controller: when
// --controller is given, or when implied holds and TIDEMARK_CONTROLLER is
// set.
func viaController(flag string, implied bool) bool {
	return flag != "" || (implied && len(client.Addrs("")) > 0)
}

// backupRepo asks the controller which repository holds a backup.
func backupRepo(ctx context.Context, s *streams, controller, id string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := dialController(ctx, s, controller)
	if err != nil {
		return "", err
	}
	defer func() { _ = c.Close() }()
	r, err := c.Control.GetBackup(ctx, &v1.GetBackupRequest{Id: id})
	if err != nil {
		return "", rpcErr(err)
	}
	b := r.GetBackup()
	if b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE {
		return "", &UserError{Msg: fmt.Sprintf("backup %s is %s, not complete", id, lower(b.GetStatus().String(), "BACKUP_STATUS_"))}
	}
	if b.GetRepositoryUri() == "" {
		return "", &UserError{Msg: fmt.Sprintf("the catalog does not record backup %s's repository (the agent used its own --repo); give --repo", id)}
	}
	return b.GetRepositoryUri(), nil
}

func nonNilList(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// decisionJSON is an instance's engine decision in JSON, null before one.
func decisionJSON(d *v1.EngineDecision) any {
	if d == nil {
		return nil
	}
	verdicts := make([]map[string]any, 0, len(d.GetVerdicts()))
	for _, v := range d.GetVerdicts() {
		verdicts = append(verdicts, map[string]any{"engine": v.GetEngine(), "ok": v.GetOk(), "reason": v.GetReason()})
	}
	return map[string]any{"chosen": d.GetChosen(), "verdicts": verdicts, "notes": nonNilList(d.GetNotes()),
		"decided_at": tsJSON(d.GetDecidedAt()), "probed_at": tsJSON(d.GetProbedAt())}
}

// changesJSON lists an instance's engine change events.
func changesJSON(chs []*v1.EngineChange) []map[string]any {
	out := make([]map[string]any, 0, len(chs))
	for _, ch := range chs {
		out = append(out, map[string]any{"at": tsJSON(ch.GetAt()), "old_engine": ch.GetOldEngine(), "new_engine": ch.GetNewEngine(),
			"old_reason": ch.GetOldReason(), "new_reason": ch.GetNewReason()})
	}
	return out
}
