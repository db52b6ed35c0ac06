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
	"google.golang.org/protobuf/types/known/timestamppb"

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
		Short: "Inspect the controller cluster",
	}
	cmd.AddCommand(newClusterStatusCmd(s))
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
	ts := func(t *timestamppb.Timestamp) any {
		if t == nil {
			return nil
		}
		return t.AsTime().UTC().Format(time.RFC3339Nano)
	}
	members := make([]map[string]any, 0, len(st.GetMembers()))
	for _, m := range st.GetMembers() {
		members = append(members, map[string]any{
			"id": m.GetId(), "address": m.GetAddress(), "raft_address": m.GetRaftAddress(),
			"state": memberState(m.GetState()), "voter": m.GetVoter(), "last_contact": ts(m.GetLastContact()),
		})
	}
	return map[string]any{
		"leader": st.GetLeaderId(), "term": st.GetTerm(), "commit_index": st.GetCommitIndex(),
		"applied_index": st.GetAppliedIndex(), "node": st.GetNodeId(), "members": members,
	}
}
