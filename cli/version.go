package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tidemark-backup/tidemark/internal/version"
)

func newVersionCmd(s *streams) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := version.Get()
			switch output {
			case "json":
				enc := json.NewEncoder(s.out)
				return enc.Encode(info)
			case "", "text":
				_, err := fmt.Fprintf(s.out, "tidemark %s\ncommit: %s\ngo: %s\n", info.Version, info.Commit, info.GoVersion)
				return err
			default:
				return &UserError{Code: ExitUsage, Msg: fmt.Sprintf("unknown output format %q: use text or json", output)}
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
