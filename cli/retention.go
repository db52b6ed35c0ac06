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

	"github.com/tidemark-backup/tidemark/controller/client"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// newBackupPinCmd is `tidemark backup pin ID [--reason]`.
func newBackupPinCmd(s *streams) *cobra.Command {
	var (
		f      fleetFlags
		reason string
	)
	cmd := &cobra.Command{
		Use:   "pin BACKUP_ID",
		Short: "Keep a backup from retention until it is unpinned",
		Long: `Pin a backup in the catalog: retention never expires it, whatever the rules
say, until ` + "`tidemark backup unpin`" + `. Who pinned it and when are recorded and
shown by ` + "`tidemark backups`" + `. A backup already marked expired cannot be pinned.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.call(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				r, err := c.Control.PinBackup(ctx, &v1.PinBackupRequest{BackupId: args[0], Reason: reason})
				if err != nil {
					return rpcErr(err)
				}
				return printBackupChange(s, f.output, r.GetBackup(), "pinned")
			})
		},
	}
	f.register(s, cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "why it is kept (shown with the pin)")
	return cmd
}

// newBackupUnpinCmd is `tidemark backup unpin ID`.
func newBackupUnpinCmd(s *streams) *cobra.Command {
	var f fleetFlags
	cmd := &cobra.Command{
		Use:   "unpin BACKUP_ID",
		Short: "Let retention decide a pinned backup's fate again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.call(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				r, err := c.Control.UnpinBackup(ctx, &v1.UnpinBackupRequest{BackupId: args[0]})
				if err != nil {
					return rpcErr(err)
				}
				return printBackupChange(s, f.output, r.GetBackup(), "unpinned")
			})
		},
	}
	f.register(s, cmd)
	return cmd
}

func printBackupChange(s *streams, output string, b *v1.Backup, what string) error {
	if output == "json" {
		return json.NewEncoder(s.out).Encode(backupJSON(b))
	}
	_, err := fmt.Fprintf(s.out, "backup %s %s\n", b.GetId(), what)
	return err
}

// backupNote is the NOTE column of `tidemark backups`: a pin, an expiry
// mark, the copies.
func backupNote(b *v1.Backup) string {
	var n []string
	if p := b.GetPin(); p != nil {
		s := "pinned"
		if p.GetReason() != "" {
			s += " (" + p.GetReason() + ")"
		}
		if p.GetBy() != "" {
			s += " by " + p.GetBy()
		}
		if p.GetAt() != nil {
			s += " " + tsText(p.GetAt())
		}
		n = append(n, s)
	}
	if b.GetExpiredAt() != nil && b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_DELETED {
		n = append(n, "expiring: "+b.GetExpireReason())
	}
	if len(b.GetCopies()) > 0 {
		n = append(n, fmt.Sprintf("%d copies", len(b.GetCopies())))
	}
	return strings.Join(n, "; ")
}

// retentionJSON is the JSON of what retention records on a backup.
func retentionJSON(b *v1.Backup, out map[string]any) {
	if p := b.GetPin(); p != nil {
		out["pin"] = map[string]any{"reason": p.GetReason(), "by": p.GetBy(), "at": tsJSON(p.GetAt())}
	}
	if b.GetExpiredAt() != nil {
		out["expired_at"], out["expire_reason"], out["expire_job_id"] = tsJSON(b.GetExpiredAt()), b.GetExpireReason(), b.GetExpireJobId()
	}
	if b.GetDeletedAt() != nil {
		out["deleted_at"] = tsJSON(b.GetDeletedAt())
	}
	if len(b.GetCopies()) > 0 {
		cs := make([]map[string]any, 0, len(b.GetCopies()))
		for _, c := range b.GetCopies() {
			cs = append(cs, map[string]any{"repository_uri": c.GetRepositoryUri(), "copied_at": tsJSON(c.GetCopiedAt()), "job_id": c.GetJobId()})
		}
		out["copies"] = cs
	}
}

// rulesFlags are the retention rules given on the command line (until
// policies carry them).
type rulesFlags struct {
	last, hourly, daily, weekly, monthly, yearly uint32
	pitr                                         time.Duration
}

func (r *rulesFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.Uint32Var(&r.last, "keep-last", 0, "keep the newest N complete backups")
	fl.Uint32Var(&r.hourly, "keep-hourly", 0, "keep the newest backup of each of the last N hours (UTC) that have one")
	fl.Uint32Var(&r.daily, "keep-daily", 0, "keep the newest backup of each of the last N days (UTC) that have one")
	fl.Uint32Var(&r.weekly, "keep-weekly", 0, "keep the newest backup of each of the last N ISO weeks that have one")
	fl.Uint32Var(&r.monthly, "keep-monthly", 0, "keep the newest backup of each of the last N months that have one")
	fl.Uint32Var(&r.yearly, "keep-yearly", 0, "keep the newest backup of each of the last N years that have one")
	fl.DurationVar(&r.pitr, "pitr-window", 0, "keep what a point-in-time restore to any moment of this last stretch needs (e.g. 168h): its base backup, every backup after it, and the binlog from the base on")
}

// set says whether any rule flag was given.
func (r *rulesFlags) set(cmd *cobra.Command) bool {
	for _, n := range []string{"keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly", "pitr-window"} {
		if cmd.Flags().Changed(n) {
			return true
		}
	}
	return false
}

func (r *rulesFlags) rules() (*v1.RetentionRules, error) {
	if r.pitr < 0 {
		return nil, &UserError{Msg: fmt.Sprintf("--pitr-window %s is negative", r.pitr)}
	}
	ru := &v1.RetentionRules{KeepLast: r.last, KeepHourly: r.hourly, KeepDaily: r.daily, KeepWeekly: r.weekly,
		KeepMonthly: r.monthly, KeepYearly: r.yearly}
	if r.pitr > 0 {
		ru.PitrWindow = durationpb.New(r.pitr)
	}
	if ru.KeepLast+ru.KeepHourly+ru.KeepDaily+ru.KeepWeekly+ru.KeepMonthly+ru.KeepYearly == 0 && r.pitr == 0 {
		return nil, &UserError{Msg: "no retention rule: give at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly or --pitr-window"}
	}
	return ru, nil
}

func newRetentionCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "retention",
		Short: "See and apply what retention keeps and expires",
		Long: `Retention keeps, for each instance, the GFS set of its complete backups
(the newest of each of the last N hours, days, ISO weeks, months and years,
in UTC, and the newest --keep-last), the base of the PITR window and every
backup after it, every pinned backup, and always the last complete backup.
The rest expires: the leader marks it, then a job on the instance's agent
deletes its manifest (and the binlog segments no kept backup needs); the
chunks are freed by ` + "`tidemark repo gc`" + ` after its grace period.`,
	}
	cmd.AddCommand(newRetentionPlanCmd(s, false), newRetentionPlanCmd(s, true))
	return cmd
}

// newRetentionPlanCmd is `retention plan` (apply false) and `retention
// apply`.
func newRetentionPlanCmd(s *streams, apply bool) *cobra.Command {
	var (
		f        fleetFlags
		rf       rulesFlags
		instance string
		policy   string
		copies   string
	)
	use, short := "plan", "Show what retention would keep and expire, and why; changes nothing"
	if apply {
		use, short = "apply", "Expire what the plan expires: mark the backups and submit the expire jobs"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rules *v1.RetentionRules
			if policy != "" {
				if rf.set(cmd) {
					return &UserError{Msg: "--policy takes the rules from the policy: drop --keep-* and --pitr-window, or --policy"}
				}
				if apply && copies != "" {
					return &UserError{Msg: "--policy applies the policy's retention to its backups and to its copies: drop --copies"}
				}
			} else {
				var err error
				if rules, err = rf.rules(); err != nil {
					return err
				}
			}
			run := f.call
			if !apply {
				run = f.read
			}
			return run(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				var (
					plans []*v1.RetentionInstancePlan
					jobs  []string
				)
				if apply {
					r, err := c.Control.ApplyRetention(ctx, &v1.ApplyRetentionRequest{Instance: instance, Rules: rules, CopyRepositoryUri: copies, Policy: policy})
					if err != nil {
						return rpcErr(err)
					}
					plans, jobs = r.GetPlans(), r.GetJobIds()
				} else {
					r, err := c.Control.PlanRetention(ctx, &v1.PlanRetentionRequest{Instance: instance, Rules: rules, CopyRepositoryUri: copies, Policy: policy, Stale: f.stale})
					if err != nil {
						return rpcErr(err)
					}
					plans = r.GetPlans()
					f.noteRead(r.GetRead())
				}
				return printPlans(s, f.output, plans, jobs, apply)
			})
		},
	}
	if apply {
		f.register(s, cmd)
	} else {
		f.registerRead(s, cmd)
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&instance, "instance", "", "only this instance (default: every instance with backups)")
	cmd.Flags().StringVar(&policy, "policy", "", "use the retention of this policy (and of every other policy selecting the same instances: a backup expires only when each one's rules expire it), on the instances it selects; what the leader applies every --retention-interval")
	cmd.Flags().StringVar(&copies, "copies", "", "plan the copies in this repository (their own retention) instead of the backups: an expired copy is deleted there and leaves the catalog, the backup stays")
	return cmd
}

func printPlans(s *streams, output string, plans []*v1.RetentionInstancePlan, jobs []string, apply bool) error {
	if output == "json" {
		out := make([]map[string]any, 0, len(plans))
		for _, p := range plans {
			bs := make([]map[string]any, 0, len(p.GetBackups()))
			for _, v := range p.GetBackups() {
				bs = append(bs, map[string]any{"id": v.GetBackupId(), "keep": v.GetKeep(), "reasons": v.GetReasons(),
					"time": tsJSON(v.GetTime()), "status": lower(v.GetStatus().String(), "BACKUP_STATUS_")})
			}
			out = append(out, map[string]any{"instance": p.GetInstance(), "backups": bs, "pitr_base_backup_id": p.GetPitrBaseBackupId(),
				"binlog_before": tsJSON(p.GetBinlogBefore()), "binlog_reason": p.GetBinlogReason()})
		}
		if !apply {
			return json.NewEncoder(s.out).Encode(out)
		}
		if jobs == nil {
			jobs = []string{}
		}
		return json.NewEncoder(s.out).Encode(map[string]any{"plans": out, "job_ids": jobs})
	}
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tBACKUP\tTIME\tSTATUS\tVERDICT\tREASONS")
	for _, p := range plans {
		for _, v := range p.GetBackups() {
			verdict := "expire"
			if v.GetKeep() {
				verdict = "keep"
			}
			var rs []string
			for _, r := range v.GetReasons() {
				rs = append(rs, strings.TrimPrefix(strings.TrimPrefix(r, "keep: "), "expire: "))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.GetInstance(), v.GetBackupId(), tsText(v.GetTime()),
				lower(v.GetStatus().String(), "BACKUP_STATUS_"), verdict, strings.Join(rs, "; "))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range plans {
		fmt.Fprintf(s.out, "%s binlog: %s\n", p.GetInstance(), p.GetBinlogReason())
	}
	for _, j := range jobs {
		fmt.Fprintf(s.out, "expire job %s submitted\n", j)
	}
	return nil
}

// withSubcommands adds subcommands to a command that also runs by itself
// (`tidemark backup` backs up; `tidemark backup pin` pins).
func withSubcommands(cmd *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	cmd.AddCommand(subs...)
	return cmd
}

// newBackupCopyCmd is `tidemark backup copy ID --to URI`: a copy job
// through the controller.
func newBackupCopyCmd(s *streams) *cobra.Command {
	var (
		f          fleetFlags
		to         string
		withBinlog bool
		wait       bool
	)
	cmd := &cobra.Command{
		Use:   "copy BACKUP_ID --to URI",
		Short: "Copy a catalog backup to another repository (a copy job on its instance's agent)",
		Long: `Submit a copy job: the agent of the backup's instance copies it (with
--with-binlog, also the binlog from its consistency point) to the repository
--to, opened with the agent's own repository key and credentials, storing
only what that repository lacks and verifying what it wrote. The catalog
then lists the copy on the backup (tidemark backups). Without --wait the job
id is printed. For a copy with no controller: tidemark repo copy.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return &UserError{Msg: "--to URI is required: the repository to copy to"}
			}
			return f.submitJob(cmd.Context(), "copy job", args[0], wait, func(ctx context.Context, c *client.Conn) (*v1.Job, error) {
				r, err := c.Control.SubmitCopy(ctx, &v1.SubmitCopyRequest{BackupId: args[0], DestinationRepositoryUri: to, WithBinlog: withBinlog})
				return r.GetJob(), err
			})
		},
	}
	f.register(s, cmd)
	cmd.Flags().StringVar(&to, "to", "", "repository to copy to (no credentials in the URI)")
	cmd.Flags().BoolVar(&withBinlog, "with-binlog", false, "also copy the binlog a point-in-time restore from the backup needs")
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the job to its end")
	return cmd
}

// newBackupExpireCmd is `tidemark backup expire ID`: expiry by hand.
func newBackupExpireCmd(s *streams) *cobra.Command {
	var (
		f      fleetFlags
		reason string
		wait   bool
	)
	cmd := &cobra.Command{
		Use:   "expire BACKUP_ID",
		Short: "Expire one backup now, as retention would (never a pinned one, never the instance's last complete one)",
		Long: `Mark a backup expired and submit the expire job that deletes its manifest
(the instance's agent runs it); its chunks are freed by tidemark repo gc
after its grace period. Refused for a pinned backup (unpin it first) and for
the instance's last complete backup. Without --wait the job id is printed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.submitJob(cmd.Context(), "expire job", args[0], wait, func(ctx context.Context, c *client.Conn) (*v1.Job, error) {
				r, err := c.Control.ExpireBackup(ctx, &v1.ExpireBackupRequest{BackupId: args[0], Reason: reason})
				return r.GetJob(), err
			})
		},
	}
	f.register(s, cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded with the expiry)")
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the job to its end")
	return cmd
}

// submitJob submits a job for backup with submit, then prints its id
// ({"job_id"} with -o json) or, with wait, follows it to its end.
func (f *fleetFlags) submitJob(ctx context.Context, what, backup string, wait bool, submit func(context.Context, *client.Conn) (*v1.Job, error)) error {
	var id string
	err := f.call(ctx, func(ctx context.Context, c *client.Conn) error {
		j, err := submit(ctx, c)
		if err != nil {
			return rpcErr(err)
		}
		id = j.GetId()
		return nil
	})
	if err != nil {
		return err
	}
	if !wait {
		if f.output == "json" {
			return json.NewEncoder(f.s.out).Encode(map[string]string{"job_id": id})
		}
		_, err := fmt.Fprintln(f.s.out, id)
		return err
	}
	fmt.Fprintf(f.s.err, "%s %s submitted for backup %s\n", what, id, backup)
	j, err := watchJob(ctx, f.s, f.controller, id, nil)
	if err != nil {
		return err
	}
	return jobOutcome(f.s, j, f.output)
}
