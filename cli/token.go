package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

func newTokenCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Join tokens: how a new agent or controller node gets its certificate",
	}
	cmd.AddCommand(newTokenCreateCmd(s))
	return cmd
}

func newTokenCreateCmd(s *streams) *cobra.Command {
	var (
		f    fleetFlags
		role string
		user string
		ttl  time.Duration
		uses uint32
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Make a join token or a CLI user's access token (admin); printed once, stored hashed",
		Long: `Make a join token for an agent or a controller node, or an access token for
a CLI user (--role viewer|operator|admin --user NAME; tidemark login takes it).
Hand a join token to the new host
in a file; it gets its certificate with it once (or --uses times) before --ttl
ends:

  tidemark token create --role agent > db7.token
  tidemark agent --name db7 --join-token db7.token --credentials /etc/tidemark/creds ...

The token pins the cluster's CA, so the new host checks it talks to this
cluster before it sends the token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, uerr := tlsx.ParseRole(role)
			switch {
			case role != "agent" && role != "controller" && uerr != nil:
				return &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--role %q: use agent or controller (a join token), or viewer, operator or admin (a user's access token, with --user)", role)}
			case uerr == nil && user == "":
				return &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--role %s makes a CLI user's access token: give --user NAME", role)}
			case uerr != nil && user != "":
				return &UserError{Code: ExitUsage, Msg: "--user is for access tokens (--role viewer, operator or admin)"}
			}
			return f.call(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				r, err := c.Control.CreateJoinToken(ctx, &v1.CreateJoinTokenRequest{Role: role, Ttl: durationpb.New(ttl), Uses: uses, User: user})
				if err != nil {
					return rpcErr(err)
				}
				if f.output == "json" {
					out := map[string]any{"token": r.GetToken(), "role": role, "expires_at": tsJSON(r.GetExpiresAt())}
					if user != "" {
						out["user"] = user
					} else {
						out["uses"] = max(uses, 1)
					}
					return json.NewEncoder(s.out).Encode(out)
				}
				fmt.Fprintln(s.out, r.GetToken())
				if user != "" {
					fmt.Fprintf(s.err, "access token for user %s (%s), valid until %s\n", user, role, r.GetExpiresAt().AsTime().UTC().Format(time.DateTime))
				} else {
					fmt.Fprintf(s.err, "join token for a %s, %d use(s), valid until %s\n", role, max(uses, 1), r.GetExpiresAt().AsTime().UTC().Format(time.DateTime))
				}
				return nil
			})
		},
	}
	f.register(s, cmd)
	cmd.Flags().StringVar(&role, "role", "", "agent or controller (a join token), or viewer, operator or admin (a CLI user's access token, with --user)")
	cmd.Flags().StringVar(&user, "user", "", "the CLI user an access token is for (named in the audit trail)")
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	cmd.Flags().Uint32Var(&uses, "uses", 1, "how many hosts may join with it (join tokens)")
	return cmd
}

// readTokenFile reads a join token from a file (a token never goes on the
// command line, where ps shows it).
func readTokenFile(flag, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", &UserError{Msg: fmt.Sprintf("%s: %v", flag, err), Err: err}
	}
	return strings.TrimSpace(string(b)), nil
}

func newAgentRevokeCmd(s *streams) *cobra.Command {
	var f fleetFlags
	cmd := &cobra.Command{
		Use:   "revoke NAME",
		Short: "End an agent's certificate (admin): its stream is cut and it cannot reconnect until it joins again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.call(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				r, err := c.Control.RevokeAgent(ctx, &v1.RevokeAgentRequest{Name: args[0]})
				if err != nil {
					return rpcErr(err)
				}
				if f.output == "json" {
					return json.NewEncoder(s.out).Encode(map[string]any{"agent": args[0], "revoked": true, "was_connected": r.GetWasConnected()})
				}
				if r.GetWasConnected() {
					fmt.Fprintf(s.out, "agent %s revoked; its stream was cut\n", args[0])
				} else {
					fmt.Fprintf(s.out, "agent %s revoked\n", args[0])
				}
				return nil
			})
		},
	}
	f.register(s, cmd)
	return cmd
}
