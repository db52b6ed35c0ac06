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
// compresses at about half the speed.
type versionOutput struct {
	version.Info
	Zstd zstdOutput `json:"zstd"`
}

type zstdOutput struct {
	archive.ZstdInfo
	// ModuleVersion is the module's version from the binary's build info
	// ("" when the binary carries none, as under go test).
	ModuleVersion string `json:"module_version"`
}

func buildZstd() zstdOutput {
	z := zstdOutput{ZstdInfo: archive.ZstdImplementation()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == z.Module {
				z.ModuleVersion = d.Version
			}
		}
	}
	return z
}

func (z zstdOutput) String() string {
	mod := z.Module
	if z.ModuleVersion != "" {
		mod += " " + z.ModuleVersion
	}
	if z.Cgo {
		return fmt.Sprintf("%s (cgo, %s)", z.Name, mod)
	}
	return fmt.Sprintf("%s (%s; built without cgo: compression about half as fast as libzstd)", z.Name, mod)
}

func newVersionCmd(s *streams) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, Go version and the zstd implementation built in",
		Example: `  tidemark version
  tidemark version -o json   # {"version":…,"commit":…,"go_version":…,"zstd":{"implementation":"libzstd",…}}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := versionOutput{Info: version.Get(), Zstd: buildZstd()}
			switch output {
			case "json":
				enc := json.NewEncoder(s.out)
				return enc.Encode(out)
			case "", "text":
				_, err := fmt.Fprintf(s.out, "tidemark %s\ncommit: %s\ngo: %s\nzstd: %s\n", out.Version, out.Commit, out.GoVersion, out.Zstd)
				return err
			default:
				return &UserError{Msg: fmt.Sprintf("unknown output format %q: use text or json", output)}
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
