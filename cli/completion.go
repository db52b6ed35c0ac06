package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// completionTimeout bounds one dynamic completion's dial and call: a
// shell waits for it at every TAB, so with no controller answering it must
// give up quickly and quietly (no candidates, no message).
const completionTimeout = 1500 * time.Millisecond

func newCompletionCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print the shell completion script for bash, zsh or fish",
		Long: `Print a completion script for your shell. Besides commands and flags it
completes instance names (--instance, --to-instance), backup ids (restore)
and job ids (job watch, job cancel) by asking the controller named by
--controller or TIDEMARK_CONTROLLER, with the credentials of the command
line or the environment; without an answer within 1.5 s it offers nothing.`,
		Example: `  source <(tidemark completion bash)
  tidemark completion zsh > "${fpath[1]}/_tidemark"
  tidemark completion fish > ~/.config/fish/completions/tidemark.fish`,
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(s.out, true)
			case "zsh":
				return root.GenZshCompletion(s.out)
			case "fish":
				return root.GenFishCompletion(s.out, true)
			}
			return usageErr("completion %q: use bash, zsh or fish", args[0])
		},
	}
	return cmd
}

// completeFrom runs list against the controller named by the command's
// --controller flag (or the environment) under completionTimeout; any failure yields no
// candidates. Candidates are filtered by the prefix being completed.
func completeFrom(s *streams, list func(context.Context, v1.ControlServiceClient) ([]string, error)) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
		defer cancel()
		controller := ""
		if f := cmd.Flags().Lookup("controller"); f != nil {
			controller = f.Value.String()
		}
		c, err := dialController(ctx, s, controller)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer func() { _ = c.Close() }()
		all, err := list(ctx, c.Control)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, v := range all {
			if strings.HasPrefix(v, toComplete) {
				out = append(out, v)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeInstances completes catalog instance names.
func completeInstances(s *streams) cobra.CompletionFunc {
	return completeFrom(s, func(ctx context.Context, c v1.ControlServiceClient) ([]string, error) {
		list, err := listAll(func(tok string) ([]*v1.Instance, string, error) {
			r, err := c.ListInstances(ctx, &v1.ListInstancesRequest{PageToken: tok})
			return r.GetInstances(), r.GetNextPageToken(), err
		})
		names := make([]string, 0, len(list))
		for _, in := range list {
			names = append(names, in.GetName())
		}
		return names, err
	})
}

// completeBackupIDs completes the ids of the newest complete catalog
// backups (completionMax), each
// with its instance and time as the description (zsh and fish show it).
func completeBackupIDs(s *streams) cobra.CompletionFunc {
	inner := completeFrom(s, func(ctx context.Context, c v1.ControlServiceClient) ([]string, error) {
		list, err := newest(completionMax, func(tok string, size uint32) ([]*v1.Backup, string, error) {
			r, err := c.ListBackups(ctx, &v1.ListBackupsRequest{Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE, PageToken: tok, PageSize: size})
			return r.GetBackups(), r.GetNextPageToken(), err
		})
		ids := make([]string, 0, len(list))
		for _, b := range list {
			ids = append(ids, fmt.Sprintf("%s\t%s %s", b.GetId(), b.GetInstance(), tsText(b.GetStartedAt())))
		}
		return ids, err
	})
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return inner(cmd, args, toComplete)
	}
}

// completionMax bounds the job and backup ids a completion offers: the
// newest ones, the ones typed; a catalog keeps up to 100,000 jobs.
const completionMax = 1000

// newest follows a newest-first listing's pages until n items or its end.
func newest[T any](n int, page func(tok string, size uint32) ([]T, string, error)) ([]T, error) {
	var out []T
	tok := ""
	for len(out) < n {
		items, next, err := page(tok, uint32(n-len(out)))
		if err != nil {
			return out, err
		}
		out = append(out, items...)
		if next == "" {
			break
		}
		tok = next
	}
	return out, nil
}

// completeJobIDs completes the newest job ids (completionMax), with kind, instance and state as the
// description.
func completeJobIDs(s *streams) cobra.CompletionFunc {
	inner := completeFrom(s, func(ctx context.Context, c v1.ControlServiceClient) ([]string, error) {
		list, err := newest(completionMax, func(tok string, size uint32) ([]*v1.Job, string, error) {
			r, err := c.ListJobs(ctx, &v1.ListJobsRequest{PageToken: tok, PageSize: size})
			return r.GetJobs(), r.GetNextPageToken(), err
		})
		ids := make([]string, 0, len(list))
		for _, j := range list {
			ids = append(ids, fmt.Sprintf("%s\t%s %s %s", j.GetId(), jobKind(j.GetKind()), j.GetInstance(), jobState(j.GetState())))
		}
		return ids, err
	})
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return inner(cmd, args, toComplete)
	}
}

// registerCompletions adds the dynamic completions to every command of the
// tree that takes an instance, a backup id or a job id.
func registerCompletions(s *streams, root *cobra.Command) {
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		for _, name := range []string{"instance", "to-instance"} {
			if c.Flags().Lookup(name) != nil {
				_ = c.RegisterFlagCompletionFunc(name, completeInstances(s))
			}
		}
		if c.Flags().Lookup("from-backup") != nil {
			_ = c.RegisterFlagCompletionFunc("from-backup", completeBackupIDs(s))
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
