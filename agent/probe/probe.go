package probe

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Row is one result row: column names lower-cased, NULL columns left out.
type Row map[string]string

// Querier runs one statement and returns all its rows. It is called from
// the goroutine running the probes, one statement at a time.
type Querier interface {
	Query(ctx context.Context, query string) ([]Row, error)
}

// FS is what statfs(2) says about the filesystem holding a path.
type FS struct {
	Magic      uint32 // f_type
	AvailBytes uint64 // f_bavail × f_bsize: free to an unprivileged writer
}

// Host is the operating system the probes look at. Every method may fail;
// a failure becomes a warning, never a fatal error.
type Host interface {
	// Statfs describes the filesystem holding path.
	Statfs(path string) (FS, error)
	// Device is the major and minor number of the device holding path
	// (st_dev); major 0 is an anonymous device (btrfs, tmpfs, overlay).
	Device(path string) (major, minor uint32, err error)
	ReadFile(path string) ([]byte, error)
	// Run runs a program and returns its standard output; a non-zero exit
	// is an error that carries its standard error.
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// Deps are the probes' inputs. Querier and Host may be nil: the probes that
// need them are then skipped with a warning.
type Deps struct {
	Querier Querier
	Host    Host
	// Storage opens the repository the agent writes to and reads its
	// config; nil means no repository is configured.
	Storage func(ctx context.Context) error
	// AgentVersion is recorded in Capabilities.agent_version.
	AgentVersion string
	// Timeout bounds each probe; 0 means 15 s.
	Timeout time.Duration
}

// Result is what a run of every probe found.
type Result struct {
	Capabilities *v1.Capabilities
	// Server identifies the server (nil when it could not be reached).
	Server *v1.ServerInfo
	// Warnings name each probe that failed or was skipped, and why; the
	// fields it would have set are left empty.
	Warnings []string
}

// state is what earlier probes found that later ones build on.
type state struct {
	Deps
	server *v1.ServerInfo
	// lvmName is the device-mapper name ("vg-lv") of the datadir's logical
	// volume, when it sits on one.
	lvmName string
	fs      FS
	fsOK    bool
}

// errSkipped marks a probe that did not run because an input was missing.
var errSkipped = errors.New("skipped")

func skipped(why string) error { return fmt.Errorf("%w: %s", errSkipped, why) }

type probe struct {
	name string
	run  func(ctx context.Context, s *state, c *v1.Capabilities) error
}

// probes run in this order: server first (the others depend on the flavor),
// datadir before the filesystem, the filesystem before free space.
var probes = []probe{
	{"server", probeServer},
	{"plugins", probePlugins},
	{"binlog", probeBinlog},
	{"gtid", probeGTID},
	{"datadir", probeDatadir},
	{"filesystem", probeFilesystem},
	{"free space", probeFree},
	{"data size", probeDataSize},
	{"replication", probeReplica},
	{"storage", probeStorage},
	{"backup tool", probeBackupTool},
	{"privileges", probePrivileges},
	{"volumes", probeVolumes},
}

// Run runs every probe. It never fails: a probe that fails adds a warning
// and leaves its fields empty, and the probes after it still run.
func Run(ctx context.Context, d Deps) *Result {
	if d.Timeout <= 0 {
		d.Timeout = 15 * time.Second
	}
	s := &state{Deps: d}
	c := &v1.Capabilities{AgentVersion: d.AgentVersion, ProbedAt: timestamppb.Now()}
	res := &Result{Capabilities: c}
	var skippedSQL []string
	for _, p := range probes {
		pctx, cancel := context.WithTimeout(ctx, d.Timeout)
		err := p.run(pctx, s, c)
		cancel()
		switch {
		case err == nil:
		case errors.Is(err, errNoServer):
			// One warning for all of them: the server probe already said why.
			skippedSQL = append(skippedSQL, p.name)
		default:
			res.Warnings = append(res.Warnings, fmt.Sprintf("probe %s: %v", p.name, err))
		}
	}
	if len(skippedSQL) > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("probes skipped because the server could not be queried: %s", strings.Join(skippedSQL, ", ")))
	}
	res.Server = s.server
	return res
}
