package cli

import (
	"encoding/json"
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/version"
)

// versionOutput is `tidemark version -o json`: the build plus the zstd
// implementation linked in, since a CGO_ENABLED=0 build runs fine but
// compresses at about half the speed. Every value is a string, as before
// the zstd fields were added, so a consumer reading a map of strings keeps
// working.
type versionOutput struct {
	version.Info
	// Zstd is archive.ZstdLibzstd ("libzstd", through cgo) or
	// archive.ZstdPureGo ("pure-go").
	Zstd string `json:"zstd"`
	// ZstdModule is the Go module providing it, with its version from the
	// binary's build info when the binary carries one (not under go test).
	ZstdModule string `json:"zstd_module"`
}

func newVersionOutput() versionOutput {
	z := archive.ZstdImplementation()
	out := versionOutput{Info: version.Get(), Zstd: z.Name, ZstdModule: z.Module}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == z.Module && d.Version != "" {
				out.ZstdModule += " " + d.Version
			}
		}
	}
	return out
}

// zstdText is the text form's zstd line.
func (v versionOutput) zstdText() string {
	if v.Zstd == archive.ZstdLibzstd {
		return fmt.Sprintf("%s (cgo, %s)", v.Zstd, v.ZstdModule)
	}
	return fmt.Sprintf("%s (%s; built without cgo: compression about half as fast as libzstd)", v.Zstd, v.ZstdModule)
}

func newVersionCmd(s *streams) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, Go version and the zstd implementation built in",
		Example: `  tidemark version
  tidemark version -o json   # {"version":…,"commit":…,"go_version":…,"zstd":"libzstd","zstd_module":…}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := newVersionOutput()
			switch output {
			case "json":
				enc := json.NewEncoder(s.out)
				return enc.Encode(out)
			case "", "text":
				_, err := fmt.Fprintf(s.out, "tidemark %s\ncommit: %s\ngo: %s\nzstd: %s\n", out.Version, out.Commit, out.GoVersion, out.zstdText())
				return err
			default:
				return &UserError{Code: ExitUsage, Msg: fmt.Sprintf("unknown output format %q: use text or json", output)}
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
