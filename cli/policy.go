package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/engines/selection"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Policies: `tidemark policy apply|show|delete`, `tidemark policies`,
// `tidemark schedule` and `tidemark status`, all through the controller,
// which parses and validates the documents (so its errors name the file's
// lines).

func protoJSON(m proto.Message) json.RawMessage {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

func newPolicyCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Apply, show and delete fleet policies (label-selected schedules, binlog, retention)",
		Long: `A policy is a YAML document: which instances (a label selector), which
backups when (cron schedules), continuous binlog with an RPO target,
retention, the repository and copies, a start window and a concurrency
limit per label group. Several documents in one file are separated by ---.

  name: prod-db
  selector: env=prod, dc in (a,b), role!=scratch
  priority: 0                 # the higher schedules an instance two policies select
  backups:
    - schedule: "0 30 2 * * *"  # cron, optional seconds first; or @hourly, @every 30m
      engine: auto              # auto | logical | snapshot | mariabackup | clone
      prefer: replica           # replica | primary | any, for a "cluster" label group
      catch_up: 1h              # how late a missed run may still start
  binlog: {enabled: true, flush: 1s, rpo_target: 1m}
  retention: {keep_last: 3, keep_daily: 7, keep_weekly: 4, pitr_window: 7d}
  repository: s3://backups/prod?endpoint=minio:9000
  copies:
    - repository: s3://backups-dr/prod?endpoint=minio-dr:9000
      retention: {keep_daily: 30}
  window: "01:00-05:00"         # UTC hours when scheduled backups may start
  max_concurrent: {by: dc, limit: 2}
  portable: false               # true: backups must restore onto another version
                                # or flavor: logical only (engine auto or logical)
  history: false                # true: logical backups keep the whole history of
                                # system-versioned tables (restores onto MariaDB
                                # >= 10.11 only); false: their current rows

The leader applies retention (and each copy's own) every --retention-interval
and copies every complete backup to each copies repository (--copy-interval);
several policies selecting one instance keep the union of what each keeps.
A policy may have only retention or copies.`,
	}
	cmd.AddCommand(newPolicyApplyCmd(s), newPolicyShowCmd(s), newPolicyDeleteCmd(s))
	return cmd
}

func newPolicyApplyCmd(s *streams) *cobra.Command {
	var (
		f      fleetFlags
		file   string
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Validate a file of policies and apply all of them, or none",
		Long: `Validate every document of FILE (- for stdin) and apply them in one step: an
error in any document applies none. Errors name the file, the line, the policy
and the key. --dry-run prints, per policy, whether it would be created,
updated or left unchanged, the instances it selects and a diff against the
stored version, and applies nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return &UserError{Msg: "-f FILE is required: the policy documents to apply (- for stdin)"}
			}
			var (
				data []byte
				err  error
			)
			if file == "-" {
				data, err = io.ReadAll(s.in)
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return &UserError{Msg: fmt.Sprintf("reading %s: %v", file, err), Err: err}
			}
			return f.call(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				resp, err := c.Control.ApplyPolicies(ctx, &v1.ApplyPoliciesRequest{Yaml: string(data), FileName: file, DryRun: dryRun})
				if err != nil {
					return rpcErr(err)
				}
				if f.output == "json" {
					out := map[string]any{"applied": resp.GetApplied(), "changes": []json.RawMessage{}}
					var chs []json.RawMessage
					for _, ch := range resp.GetChanges() {
						chs = append(chs, protoJSON(ch))
					}
					if chs != nil {
						out["changes"] = chs
					}
					return json.NewEncoder(s.out).Encode(out)
				}
				for _, ch := range resp.GetChanges() {
					verb := map[string]string{"create": "created", "update": "updated", "unchanged": "unchanged"}[ch.GetAction()]
					if dryRun {
						verb = "would be " + verb
						if ch.GetAction() == "unchanged" {
							verb = "unchanged"
						}
					}
					fmt.Fprintf(s.out, "policy %s %s (version %d); selects %d instance(s): %s\n", ch.GetName(), verb, ch.GetVersion(),
						len(ch.GetInstances()), dash(strings.Join(ch.GetInstances(), ", ")))
					for _, w := range ch.GetWarnings() {
						fmt.Fprintf(s.err, "warning: %s\n", w)
					}
					if dryRun && ch.GetDiff() != "" {
						for _, l := range strings.Split(strings.TrimRight(ch.GetDiff(), "\n"), "\n") {
							fmt.Fprintf(s.out, "    %s\n", l)
						}
					}
				}
				if dryRun {
					fmt.Fprintln(s.out, "dry run: nothing applied")
				}
				return nil
			})
		},
	}
	f.register(s, cmd)
	cmd.Flags().StringVarP(&file, "file", "f", "", "file of policy documents (--- separated); - for stdin")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate and show what would change; apply nothing")
	return cmd
}

func newPolicyShowCmd(s *streams) *cobra.Command {
	var f fleetFlags
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a policy: its document, version, history and the instances it selects",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.read(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				resp, err := c.Control.GetPolicy(ctx, &v1.GetPolicyRequest{Name: args[0], Stale: f.stale})
				if err != nil {
					return rpcErr(err)
				}
				f.noteRead(resp.GetRead())
				p := resp.GetPolicy()
				if f.output == "json" {
					return json.NewEncoder(s.out).Encode(map[string]any{"policy": protoJSON(p), "instances": nonNilStrings(resp.GetInstances())})
				}
				fmt.Fprintf(s.out, "policy %s, version %d, updated %s by %s (created %s)\n", p.GetName(), p.GetVersion(),
					tsText(p.GetUpdatedAt()), dash(p.GetUpdatedBy()), tsText(p.GetCreatedAt()))
				if prev := p.GetPrevious(); prev != nil {
					fmt.Fprintf(s.out, "previous version %d, applied %s by %s\n", prev.GetVersion(), tsText(prev.GetUpdatedAt()), dash(prev.GetUpdatedBy()))
				}
				if p.GetSpec().GetPortable() {
					fmt.Fprintf(s.out, "portable: scheduled backups use the logical engine (%s)\n", selection.PortableReason)
				}
				if p.GetSpec().GetHistory() {
					fmt.Fprintln(s.out, "history: scheduled logical backups keep the history of system-versioned tables")
				}
				fmt.Fprintf(s.out, "selects %d instance(s): %s\n---\n%s", len(resp.GetInstances()), dash(strings.Join(resp.GetInstances(), ", ")), p.GetSource())
				return nil
			})
		},
	}
	f.registerRead(s, cmd)
	return cmd
}

func newPolicyDeleteCmd(s *streams) *cobra.Command {
	var f fleetFlags
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a policy: no more scheduled runs; its binlog streams stop unless another policy wants them",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.call(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				resp, err := c.Control.DeletePolicy(ctx, &v1.DeletePolicyRequest{Name: args[0]})
				if err != nil {
					return rpcErr(err)
				}
				if f.output == "json" {
					return json.NewEncoder(s.out).Encode(map[string]any{"deleted": protoJSON(resp.GetPolicy())})
				}
				fmt.Fprintf(s.out, "policy %s deleted (was version %d)\n", resp.GetPolicy().GetName(), resp.GetPolicy().GetVersion())
				return nil
			})
		},
	}
	f.register(s, cmd)
	return cmd
}

func newPoliciesCmd(s *streams) *cobra.Command {
	var f fleetFlags
	cmd := &cobra.Command{
		Use:   "policies",
		Short: "List the fleet policies",
		Long: `List the policies: name, version, selector, schedules, binlog and when they
were last changed. -o json prints a list of the policy records (proto field
names: name, version, spec, source, updated_by, updated_at, previous).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.read(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				resp, err := c.Control.ListPolicies(ctx, &v1.ListPoliciesRequest{Stale: f.stale})
				if err != nil {
					return rpcErr(err)
				}
				f.noteRead(resp.GetRead())
				if f.output == "json" {
					list := make([]json.RawMessage, 0, len(resp.GetPolicies()))
					for _, p := range resp.GetPolicies() {
						list = append(list, protoJSON(p))
					}
					return json.NewEncoder(s.out).Encode(list)
				}
				tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tVERSION\tSELECTOR\tSCHEDULES\tBINLOG\tUPDATED")
				for _, p := range resp.GetPolicies() {
					var sch []string
					for _, b := range p.GetSpec().GetBackups() {
						sch = append(sch, b.GetCron())
					}
					bl := "-"
					if b := p.GetSpec().GetBinlog(); b.GetEnabled() {
						bl = "on"
						if t := b.GetRpoTarget(); t != nil {
							bl += " (rpo " + t.AsDuration().String() + ")"
						}
					}
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", p.GetName(), p.GetVersion(), dash(p.GetSpec().GetSelector()),
						dash(strings.Join(sch, "; ")), bl, tsText(p.GetUpdatedAt()))
				}
				return tw.Flush()
			})
		},
	}
	f.registerRead(s, cmd)
	return cmd
}

func newScheduleCmd(s *streams) *cobra.Command {
	var (
		f        fleetFlags
		instance string
		next     uint32
	)
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Show the next scheduled runs of the policies, and the runs recorded as skipped",
		Long: `Show the next run of every policy schedule and run key (an instance, or a
"cluster:NAME" group whose run goes to one member), soonest first: when it is
scheduled for, when it starts (moved into the window and spread per
instance), on which instance and the job id it will get. Then the runs that
were recorded as skipped (missed beyond the catch-up window, superseded) with
the reason. -o json prints {"runs": [...], "skipped": [...]}; times are
RFC 3339.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.call(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				resp, err := c.Control.GetSchedule(ctx, &v1.GetScheduleRequest{Instance: instance, PerRunKey: next})
				if err != nil {
					return rpcErr(err)
				}
				if f.output == "json" {
					runs := make([]map[string]any, 0, len(resp.GetRuns()))
					for _, r := range resp.GetRuns() {
						runs = append(runs, map[string]any{
							"policy": r.GetPolicy(), "schedule_index": r.GetScheduleIndex(), "schedule": r.GetCron(), "run_key": r.GetRunKey(),
							"instance": r.GetInstance(), "scheduled_for": tsRFC3339(r.GetScheduledFor().AsTime()),
							"due_at": tsRFC3339(r.GetDueAt().AsTime()), "job_id": r.GetJobId(), "engine": r.GetEngine(),
							"held": r.GetHeld(),
						})
					}
					skipped := make([]map[string]any, 0, len(resp.GetSkipped()))
					for _, k := range resp.GetSkipped() {
						skipped = append(skipped, map[string]any{
							"policy": k.GetPolicy(), "schedule_index": k.GetScheduleIndex(), "run_key": k.GetRunKey(),
							"first": tsRFC3339(k.GetFirst().AsTime()), "last": tsRFC3339(k.GetLast().AsTime()), "count": k.GetCount(),
							"reason": k.GetReason(), "recorded_at": tsRFC3339(k.GetRecordedAt().AsTime()),
						})
					}
					return json.NewEncoder(s.out).Encode(map[string]any{"runs": runs, "skipped": skipped})
				}
				tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "DUE\tSCHEDULED FOR\tPOLICY\tSCHEDULE\tRUN\tINSTANCE\tJOB\tHELD")
				for _, r := range resp.GetRuns() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d %s\t%s\t%s\t%s\t%s\n", tsText(r.GetDueAt()), tsText(r.GetScheduledFor()), r.GetPolicy(),
						r.GetScheduleIndex(), r.GetCron(), r.GetRunKey(), r.GetInstance(), r.GetJobId(), dash(r.GetHeld()))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if len(resp.GetSkipped()) > 0 {
					fmt.Fprintln(s.out, "\nskipped:")
					for _, k := range resp.GetSkipped() {
						fmt.Fprintf(s.out, "  %s %d %s: %d run(s) %s .. %s: %s\n", k.GetPolicy(), k.GetScheduleIndex(), k.GetRunKey(), k.GetCount(),
							tsText(k.GetFirst()), tsText(k.GetLast()), k.GetReason())
					}
				}
				return nil
			})
		},
	}
	f.register(s, cmd)
	cmd.Flags().StringVar(&instance, "instance", "", "only the runs of this instance (or of its cluster group)")
	cmd.Flags().Uint32Var(&next, "next", 1, "runs to show per schedule and run key")
	return cmd
}

func tsRFC3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func newStatusCmd(s *streams) *cobra.Command {
	var (
		f   fleetFlags
		pol string
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Per policy, the instances that meet it and those that do not, with the reasons",
		Long: `Evaluate every policy (or --policy NAME) against the catalog now: an instance
fails it when it has no backup within two periods of a schedule, its last
scheduled backup failed, it has no binlog stream, its RPO (now - the stream's
last durable event) is above the target, its stream keeps failing, or a copy
is behind. -o json prints {"evaluated_at", "policies": [{"policy", "version",
"portable", "met", "unmet", "instances": [{"instance", "met", "reasons", "last_backup",
"rpo_seconds"}]}]}. The exit code is 0 either way; use -o json to act on it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.read(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				resp, err := c.Control.GetPolicyStatus(ctx, &v1.GetPolicyStatusRequest{Policy: pol, Stale: f.stale})
				if err != nil {
					return rpcErr(err)
				}
				f.noteRead(resp.GetRead())
				// Whether each policy is portable (which engine its runs
				// may use) is in its spec, not in the evaluation.
				pols, err := c.Control.ListPolicies(ctx, &v1.ListPoliciesRequest{Stale: f.stale})
				if err != nil {
					return rpcErr(err)
				}
				portable := map[string]bool{}
				for _, p := range pols.GetPolicies() {
					portable[p.GetName()] = p.GetSpec().GetPortable()
				}
				if f.output == "json" {
					list := make([]map[string]any, 0, len(resp.GetPolicies()))
					for _, p := range resp.GetPolicies() {
						ins := make([]map[string]any, 0, len(p.GetInstances()))
						for _, in := range p.GetInstances() {
							m := map[string]any{"instance": in.GetInstance(), "met": in.GetMet(), "reasons": nonNilStrings(in.GetReasons()),
								"last_backup": tsJSON(in.GetLastBackup())}
							if in.GetRpo() != nil {
								m["rpo_seconds"] = in.GetRpo().AsDuration().Seconds()
							}
							ins = append(ins, m)
						}
						list = append(list, map[string]any{"policy": p.GetPolicy(), "version": p.GetVersion(), "portable": portable[p.GetPolicy()],
							"met": p.GetMet(), "unmet": p.GetUnmet(), "instances": ins})
					}
					return json.NewEncoder(s.out).Encode(map[string]any{"evaluated_at": tsJSON(resp.GetEvaluatedAt()), "policies": list})
				}
				for _, p := range resp.GetPolicies() {
					kind := ""
					if portable[p.GetPolicy()] {
						kind = ", portable: logical backups only"
					}
					fmt.Fprintf(s.out, "policy %s (version %d%s): %d met, %d not met\n", p.GetPolicy(), p.GetVersion(), kind, p.GetMet(), p.GetUnmet())
					for _, in := range p.GetInstances() {
						if in.GetMet() {
							fmt.Fprintf(s.out, "  ok    %s\n", in.GetInstance())
							continue
						}
						fmt.Fprintf(s.out, "  NOT   %s\n", in.GetInstance())
						for _, r := range in.GetReasons() {
							fmt.Fprintf(s.out, "          %s\n", r)
						}
					}
				}
				if len(resp.GetPolicies()) == 0 {
					fmt.Fprintln(s.out, "no policies (apply one with `tidemark policy apply -f FILE`)")
				}
				return nil
			})
		},
	}
	f.registerRead(s, cmd)
	cmd.Flags().StringVar(&pol, "policy", "", "only this policy")
	return cmd
}
