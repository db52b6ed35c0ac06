package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/controller/client"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// controllerFlag registers --controller (env TIDEMARK_CONTROLLER).
func controllerFlag(cmd *cobra.Command, v *string) {
	cmd.Flags().StringVar(v, "controller", "", "controller gRPC addresses, comma-separated: HOST:PORT[,HOST:PORT...] (env "+client.EnvController+")")
}

// dialController connects to any of the controllers named by the flag or
// the environment, with one clean error when none answers.
func dialController(ctx context.Context, s *streams, flag string) (*client.Conn, error) {
	addrs := client.Addrs(flag)
	if len(addrs) == 0 {
		_, err := client.DialAny(ctx, nil, client.Options{})
		return nil, &UserError{Msg: err.Error(), Err: err, Code: ExitUsage}
	}
	opts, err := s.tls.clientOptions(addrs)
	if err != nil {
		return nil, err
	}
	c, err := client.DialAny(ctx, addrs, opts)
	if err != nil {
		if len(addrs) == 0 {
			return nil, &UserError{Msg: err.Error(), Err: err}
		}
		return nil, &UserError{Msg: "no Tidemark controller answers: " + strings.ReplaceAll(err.Error(), "\n", "; "), Err: err}
	}
	return c, nil
}

// rpcErr turns a controller's gRPC error into one clean sentence.
func rpcErr(err error) error {
	return &UserError{Msg: status.Convert(err).Message(), Err: err}
}

func newClusterCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Inspect and maintain the controller cluster",
	}
	cmd.AddCommand(newClusterStatusCmd(s), newClusterRemoveMemberCmd(s), newClusterTransferLeadershipCmd(s))
	return cmd
}

func memberState(st v1.MemberState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "MEMBER_STATE_"))
}

func newClusterStatusCmd(s *streams) *cobra.Command {
	var (
		addrs   string
		output  string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the controller nodes, their Raft state and the leader",
		Long: `Show the controller cluster as the first answering node sees it: every
member with its addresses, Raft state (leader, follower, candidate, or
unreachable when it does not answer) and last contact with the leader; the
leader, term, commit and applied index. -o json prints an object with
"leader" (the leader's node id) and "members" (a list).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c, err := dialController(ctx, s, addrs)
			if err != nil {
				return err
			}
			defer func() { _ = c.Close() }()
			st, err := c.Control.ClusterStatus(ctx, &v1.ClusterStatusRequest{})
			if err != nil {
				return rpcErr(err)
			}
			if output == "json" {
				return json.NewEncoder(s.out).Encode(clusterJSON(st))
			}
			leader := st.GetLeaderId()
			if leader == "" {
				leader = "(none)"
			}
			fmt.Fprintf(s.out, "leader %s, term %d, commit index %d, applied index %d (answered by %s)\n",
				leader, st.GetTerm(), st.GetCommitIndex(), st.GetAppliedIndex(), st.GetNodeId())
			tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tADDRESS\tRAFT ADDRESS\tSTATE\tVOTER\tLAST CONTACT")
			for _, m := range st.GetMembers() {
				contact := "-"
				if lc := m.GetLastContact(); lc != nil {
					contact = time.Since(lc.AsTime()).Round(time.Millisecond).String() + " ago"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%s\n", m.GetId(), m.GetAddress(), m.GetRaftAddress(), memberState(m.GetState()), m.GetVoter(), contact)
			}
			return tw.Flush()
		},
	}
	controllerFlag(cmd, &addrs)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "give up after this long")
	return cmd
}

// clusterJSON is the JSON shape of cluster status.
func clusterJSON(st *v1.ClusterStatusResponse) map[string]any {
	return map[string]any{
		"leader": st.GetLeaderId(), "term": st.GetTerm(), "commit_index": st.GetCommitIndex(),
		"applied_index": st.GetAppliedIndex(), "node": st.GetNodeId(), "members": membersJSON(st.GetMembers()),
	}
}

func newClusterRemoveMemberCmd(s *streams) *cobra.Command {
	var f fleetFlags
	cmd := &cobra.Command{
		Use:   "remove-member NODE",
		Short: "Remove a controller node from the Raft configuration (admin)",
		Long: `Remove a controller node from the cluster: the leader drops it from the Raft
configuration, so it no longer counts towards the quorum. Do this after a
node is gone for good (its disk lost, the host retired); a node that is only
stopped stays a member and catches up when it returns. The node's data
directory is useless afterwards: to bring the host back, give it a new data
directory and --join. Removing the leader makes the others elect a new one.
-o json prints the members after the change, as "cluster status -o json"
prints them.`,
		Example: `  tidemark cluster remove-member c3
  tidemark cluster remove-member c3 -o json | jq '.members[].id'`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeMembers(s),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.callLeader(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				r, err := c.Control.RemoveMember(ctx, &v1.RemoveMemberRequest{Id: args[0]})
				if err != nil {
					return rpcErr(err)
				}
				if f.output == "json" {
					return json.NewEncoder(s.out).Encode(map[string]any{"removed": args[0], "members": membersJSON(r.GetMembers())})
				}
				ids := make([]string, 0, len(r.GetMembers()))
				for _, m := range r.GetMembers() {
					ids = append(ids, m.GetId())
				}
				_, err = fmt.Fprintf(s.out, "node %s removed; members now: %s\n", args[0], strings.Join(ids, ", "))
				return err
			})
		},
	}
	f.register(s, cmd)
	return cmd
}

func newClusterTransferLeadershipCmd(s *streams) *cobra.Command {
	var f fleetFlags
	cmd := &cobra.Command{
		Use:   "transfer-leadership [NODE]",
		Short: "Hand the Raft leadership to another node (admin), e.g. before restarting the leader",
		Long: `Make the leader hand its leadership to NODE (a voting member), or without
NODE to the voter that is most up to date, and wait until it leads. The
target is caught up first and then starts its election at once, so writes
pause for about one round trip instead of an election timeout. A stopping
controller (SIGTERM) does the same by itself when it leads. -o json prints
"previous_leader", "leader" and "term".`,
		Example: `  tidemark cluster transfer-leadership
  tidemark cluster transfer-leadership c2 -o json`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeMembers(s),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := ""
			if len(args) == 1 {
				target = args[0]
			}
			return f.callLeader(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				r, err := c.Control.TransferLeadership(ctx, &v1.TransferLeadershipRequest{TargetId: target})
				if err != nil {
					return rpcErr(err)
				}
				if f.output == "json" {
					return json.NewEncoder(s.out).Encode(map[string]any{
						"previous_leader": r.GetPreviousLeaderId(), "leader": r.GetLeaderId(), "term": r.GetTerm(),
					})
				}
				_, err = fmt.Fprintf(s.out, "leadership moved from %s to %s (term %d)\n", r.GetPreviousLeaderId(), r.GetLeaderId(), r.GetTerm())
				return err
			})
		},
	}
	f.register(s, cmd)
	return cmd
}

// membersJSON is the JSON shape of a member list.
func membersJSON(ms []*v1.Member) []map[string]any {
	out := make([]map[string]any, 0, len(ms))
	for _, m := range ms {
		out = append(out, map[string]any{
			"id": m.GetId(), "address": m.GetAddress(), "raft_address": m.GetRaftAddress(),
			"state": memberState(m.GetState()), "voter": m.GetVoter(), "last_contact": tsJSON(m.GetLastContact()),
		})
	}
	return out
}

// completeMembers completes controller node ids.
func completeMembers(s *streams) cobra.CompletionFunc {
	inner := completeFrom(s, func(ctx context.Context, c v1.ControlServiceClient) ([]string, error) {
		st, err := c.ClusterStatus(ctx, &v1.ClusterStatusRequest{})
		ids := make([]string, 0, len(st.GetMembers()))
		for _, m := range st.GetMembers() {
			ids = append(ids, m.GetId()+"\t"+memberState(m.GetState()))
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
