package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

func newLoginCmd(s *streams) *cobra.Command {
	var (
		tokenFile  string
		controller string
		output     string
	)
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Save a CLI user's access token (from tidemark token create --role ... --user ...) for the commands that follow",
		Long: `Save an access token where the other commands find it (the user's config
directory, readable by the user only). With --controller (or
TIDEMARK_CONTROLLER) the token is tried first. Commands use, in order: a
certificate (--credentials, --tls-*), $TIDEMARK_TOKEN_FILE, the saved login.
The token pins the cluster's CA: the CLI checks the controller against it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			raw, err := readTokenFile("--token-file", tokenFile)
			if err != nil {
				return err
			}
			if raw == "" {
				return &UserError{Code: ExitUsage, Msg: "--token-file FILE is required"}
			}
			tok, err := tlsx.ParseAccessToken(raw)
			if err != nil {
				return userErr(err)
			}
			if addrs := client.Addrs(controller); len(addrs) > 0 {
				ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
				defer cancel()
				c, err := client.DialAny(ctx, addrs, client.Options{TLS: tlsx.PinnedClientConfig(tok.Pin), Bearer: raw})
				if err != nil {
					return userErr(fmt.Errorf("the token does not reach a controller: %w", err))
				}
				defer func() { _ = c.Close() }()
				if _, err := c.Control.ClusterStatus(ctx, &v1.ClusterStatusRequest{}); err != nil {
					return rpcErr(err)
				}
			}
			path, err := loginFile()
			if err != nil {
				return userErr(err)
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return userErr(err)
			}
			if err := os.WriteFile(path, []byte(raw+"\n"), 0o600); err != nil {
				return userErr(err)
			}
			if output == "json" {
				return json.NewEncoder(s.out).Encode(map[string]any{"token_id": tok.ID, "path": path})
			}
			fmt.Fprintf(s.out, "access token %s saved in %s\n", tok.ID, path)
			return nil
		},
	}
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "file holding the access token")
	controllerFlag(cmd, &controller)
	outputFlag(cmd, &output)
	return cmd
}
