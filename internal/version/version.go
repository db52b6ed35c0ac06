// Package version reports the build's version, commit and Go version.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version and Commit are stamped by the Makefile with -ldflags -X; a plain
// `go build` falls back to what the Go toolchain recorded about the module.
var (
	Version = "dev"
	Commit  = ""
)

// Info is the build description printed by `tidemark version` and recorded in
// every manifest, so a backup says which tool wrote it.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
}

// Get returns the build description.
func Get() Info {
	info := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		if info.Commit == "" {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					info.Commit = s.Value
				}
			}
		}
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}

// String is the one-line form used in logs and manifests.
func (i Info) String() string {
	return "tidemark " + i.Version + " (" + i.Commit + ", " + i.GoVersion + ")"
}
