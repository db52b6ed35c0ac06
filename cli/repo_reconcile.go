package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/controller/reconcile"
	"github.com/tidemark-backup/tidemark/internal/archive"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// judged is one manifest of a repository with the catalog's verdict.
type judged struct {
	m *v1.Manifest
	v reconcile.Verdict
}

// judgeManifests asks the controller's catalog about every manifest: one
// listing of the catalog's backups, then the job of each attempt id the
// listing does not hold. Reads are consistent (through the leader), so a
// job that just moved on is seen as it is; a read behind would only make
// an attempt look newer or running, never removable.
func judgeManifests(ctx context.Context, c *client.Conn, ms []*v1.Manifest, now time.Time, grace time.Duration) ([]judged, error) {
	backups, err := listAll(func(tok string) ([]*v1.Backup, string, error) {
		r, err := c.Control.ListBackups(ctx, &v1.ListBackupsRequest{Consistent: true, PageToken: tok})
		return r.GetBackups(), r.GetNextPageToken(), err
	})
	if err != nil {
		return nil, rpcErr(err)
	}
	byID := make(map[string]*v1.Backup, len(backups))
	for _, b := range backups {
		byID[b.GetId()] = b
	}
	jobs := map[string]*v1.Job{}
	out := make([]judged, 0, len(ms))
	for _, m := range ms {
		p := reconcile.Params{Manifest: reconcile.Manifest{ID: m.GetBackupId(), Fence: m.GetFence()}, Backup: byID[m.GetBackupId()], Now: now, Grace: grace}
		if jobID, _, ok := reconcile.ParseAttemptID(m.GetBackupId()); ok && p.Backup == nil {
			j, seen := jobs[jobID]
			if !seen {
				r, err := c.Control.GetJob(ctx, &v1.GetJobRequest{Id: jobID, Consistent: true})
				switch {
				case status.Code(err) == codes.NotFound:
				case err != nil:
					return nil, rpcErr(err)
				default:
					j = r.GetJob()
				}
				jobs[jobID] = j
			}
			p.Job = j
		}
		out = append(out, judged{m: m, v: reconcile.Judge(p)})
	}
	return out, nil
}

func newRepoReconcileCmd(s *streams) *cobra.Command {
	var (
		rf         repoFlags
		controller string
		dryRun     bool
		grace      time.Duration
		output     string
	)
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Delete the manifests of backup attempts the catalog refused or superseded",
		Long: `reconcile compares the repository (--repo) with the controller's catalog
(--controller) and deletes the manifests that backup attempts the catalog refused
or superseded left behind: an agent that died after storing <job>-a1 but before its
result was recorded, while <job>-a2 became the catalog's backup. Such a manifest
lists as a complete backup and pins its chunks until it goes; after reconcile,
the second 'repo gc' frees the chunks no other backup shares.

Every manifest is listed with its state:
  catalog     the catalog's backup: kept
  live        an attempt that may still be running (or newer than the catalog): kept
  superseded  an attempt that is over and not the job's backup: deleted
  grace       superseded, but its attempt ended less than --grace ago: kept for now
  unknown     the catalog has no such backup or attempt (another cluster's, a
              standalone backup, a fence this catalog never issued): never deleted

A manifest is deleted only under the lease the catalog recorded for its attempt.
The leader runs the same sweep on its own (controller --reconcile-interval), as a
job on the agent of the backup's instance.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if grace < 0 {
				return &UserError{Code: ExitUsage, Msg: "--grace must not be negative"}
			}
			if len(client.Addrs(controller)) == 0 {
				return &UserError{Code: ExitUsage, Msg: "reconcile needs the catalog: give --controller HOST:PORT (or set " + client.EnvController + ")"}
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
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			c, err := dialController(ctx, s, controller)
			if err != nil {
				return err
			}
			defer func() { _ = c.Close() }()
			list, err := judgeManifests(ctx, c, ms, time.Now(), grace)
			if err != nil {
				return err
			}
			actions, deleted, err := reconcileActions(cmd.Context(), repo, list, dryRun)
			if err != nil {
				return err
			}
			if output == "json" {
				out := make([]map[string]any, 0, len(list))
				for i, j := range list {
					e := map[string]any{"id": j.v.ID, "state": j.v.State.String(), "reason": j.v.Reason, "action": actions[i], "instance": j.m.GetInstance()}
					if j.v.JobID != "" {
						e["job_id"], e["attempt"] = j.v.JobID, j.v.Attempt
					}
					if !j.v.RemovableAt.IsZero() {
						e["removable_at"] = j.v.RemovableAt.UTC().Format(time.RFC3339)
					}
					out = append(out, e)
				}
				return json.NewEncoder(s.out).Encode(out)
			}
			tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tINSTANCE\tSTATE\tACTION\tWHY")
			for i, j := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", j.v.ID, j.m.GetInstance(), j.v.State, actions[i], j.v.Reason)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			switch {
			case dryRun:
				fmt.Fprintf(s.err, "dry run: %d superseded manifests would be deleted; nothing was\n", count(actions, "would delete"))
			case deleted > 0:
				fmt.Fprintf(s.err, "deleted %d superseded manifests; their chunks go at the second 'tidemark repo gc' from now\n", deleted)
			default:
				fmt.Fprintln(s.err, "no superseded manifest to delete")
			}
			return nil
		},
	}
	rf.register(cmd)
	controllerFlag(cmd, &controller)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be deleted, delete nothing")
	cmd.Flags().DurationVar(&grace, "grace", 15*time.Minute, "leave a superseded manifest whose attempt ended less than this ago")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// reconcileActions deletes the superseded manifests (unless dryRun), each
// under its own fence, which Judge checked is the catalog's lease of the
// attempt; DiscardManifest reads it again and deletes only under that
// fence, so one rewritten since is left. It returns each manifest's action.
func reconcileActions(ctx context.Context, repo *archive.Repo, list []judged, dryRun bool) ([]string, int, error) {
	actions := make([]string, len(list))
	deleted := 0
	for i, j := range list {
		switch {
		case j.v.State != reconcile.Superseded:
			actions[i] = "kept"
		case dryRun:
			actions[i] = "would delete"
		default:
			ok, err := repo.DiscardManifest(ctx, j.v.ID, j.m.GetFence())
			if err != nil {
				return nil, deleted, userErr(err)
			}
			if ok {
				actions[i] = "deleted"
				deleted++
			} else {
				actions[i] = "gone or rewritten: kept"
			}
		}
	}
	return actions, deleted, nil
}

func count(xs []string, x string) int {
	n := 0
	for _, y := range xs {
		if strings.EqualFold(y, x) {
			n++
		}
	}
	return n
}

// catalogVerdicts judges ms against the catalog of the controller named by
// flag (or the environment), or returns nil when none is named or it does
// not answer (a warning on stderr): the repository listing never depends
// on a controller.
func catalogVerdicts(ctx context.Context, s *streams, flag string, ms []*v1.Manifest) []reconcile.Verdict {
	if len(client.Addrs(flag)) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := dialController(ctx, s, flag)
	if err == nil {
		defer func() { _ = c.Close() }()
		var list []judged
		if list, err = judgeManifests(ctx, c, ms, time.Now(), 0); err == nil {
			out := make([]reconcile.Verdict, len(list))
			for i, j := range list {
				out[i] = j.v
			}
			return out
		}
	}
	fmt.Fprintf(s.err, "warning: listing without the catalog's view (superseded attempts are not marked): %v\n", errText(err))
	return nil
}

// errText is a UserError's message, or the error.
func errText(err error) string {
	var ue *UserError
	if errors.As(err, &ue) {
		return ue.Msg
	}
	return err.Error()
}
