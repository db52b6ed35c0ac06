package mariabackup

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

// Name is the engine's name in manifests.
const Name = "mariabackup"

// Engine metadata this engine adds to the physical keys.
const (
	// MetaTool is the program that wrote the files: "mariabackup" or
	// "xtrabackup", with its version.
	MetaTool = "mariabackup.tool"
	// MetaToLSN is xtrabackup_checkpoints' to_lsn: InnoDB's checkpoint
	// when the copy began, what an incremental backup would continue from
	// (--incremental-lsn; incremental backups are not built yet).
	MetaToLSN = "mariabackup.to_lsn"
	// MetaLastLSN is its last_lsn: the end of the redo the tool copied,
	// the LSN the files are consistent at once prepared.
	MetaLastLSN = "mariabackup.last_lsn"
	// MetaDDL, set only when it happened, counts the files the tool
	// renamed and removed in its stream ("renamed N, removed M"): DDL on
	// non-InnoDB tables while the backup ran, followed before storing.
	MetaDDL = "mariabackup.ddl"
)

// Install hints named when a tool is missing.
const (
	MariaBackupPackage = "mariadb-backup (apt-get install mariadb-backup; dnf install MariaDB-backup)"
	XtraBackupPackage  = "percona-xtrabackup-80 for MySQL 8.0, percona-xtrabackup-84 for 8.4 (from Percona's repository)"
)

// Engine is the mariabackup engine. The zero value looks the tools up in
// PATH.
type Engine struct {
	// MariaBackup and XtraBackup are the programs run for MariaDB and for
	// MySQL/Percona; "" finds "mariabackup" and "xtrabackup" in PATH.
	MariaBackup, XtraBackup string
	// Block is the block size files are cut into; 0: physical.DefaultBlock.
	Block int
	// TempDir holds the private directory of one backup (the tool's
	// --target-dir, which it needs even when streaming, and the
	// credentials file); "" is os.TempDir().
	TempDir string
}

// New returns the engine with its defaults.
func New() *Engine { return &Engine{} }

var _ engines.Engine = (*Engine)(nil)

// Name implements engines.Engine.
func (*Engine) Name() string { return Name }

// Restore implements engines.Engine: a physical backup is not restored
// onto a running server.
func (*Engine) Restore(context.Context, engines.RestoreParams) (*engines.RestoreResult, error) {
	return nil, errors.New("a mariabackup backup holds a server's files, not rows: it cannot be loaded into a running server; restore it with `tidemark restore ID --to-datadir DIR` (and start a server on DIR)")
}

// tool is the program a backup runs for one server.
type tool struct {
	name    string // "mariabackup" or "xtrabackup"
	path    string
	version string // as the tool prints it, e.g. "10.11.19-MariaDB"
	major   int
	minor   int
}

// toolFor finds the program for srv and checks its version against the
// server's: mariabackup of one series (10.11, 11.4, ...) reads the redo log
// format and data dictionary of that series only, and xtrabackup 8.0 backs
// up MySQL 8.0 only (8.4 needs 8.4). We check first and name both versions,
// rather than let the tool fail after minutes or refuse with a message
// about InnoDB internals.
func (e *Engine) toolFor(ctx context.Context, srv *mysqlx.Server) (*tool, error) {
	t := &tool{name: "mariabackup", path: e.MariaBackup}
	pkg := MariaBackupPackage
	if !srv.IsMariaDB() {
		t.name, t.path, pkg = "xtrabackup", e.XtraBackup, XtraBackupPackage
	}
	if t.path == "" {
		p, err := exec.LookPath(t.name)
		if err != nil {
			return nil, fmt.Errorf("%s is not installed on this host (the %s engine runs it next to the server, %s %s): install %s, or back up with the logical engine",
				t.name, Name, srv.Flavor, srv.Version, pkg)
		}
		t.path = p
	}
	out, err := exec.CommandContext(ctx, t.path, "--version").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s --version failed (%w): %s; is %s a working %s? install %s", t.path, err, firstLine(out), t.path, t.name, pkg)
	}
	t.version, t.major, t.minor, err = parseToolVersion(string(out))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.path, err)
	}
	if t.major != srv.Major || t.minor != srv.Minor {
		return nil, fmt.Errorf("%s %s (%s) cannot back up %s %s: the tool must be of the server's series %d.%d (it reads that series' redo log and data dictionary only); install the %s of %d.%d on this host",
			t.name, t.version, t.path, srv.Flavor, srv.Version, srv.Major, srv.Minor, t.name, srv.Major, srv.Minor)
	}
	return t, nil
}

// toolVersion matches "mariabackup based on MariaDB server 10.11.19-MariaDB
// ..." and "xtrabackup version 8.0.35-30 based on MySQL server 8.0.35 ...":
// the server version it was built from is what must match.
var toolVersion = regexp.MustCompile(`based on (?:MariaDB|MySQL) server ([0-9]+)\.([0-9]+)\.([0-9]+)\S*`)

func parseToolVersion(out string) (version string, major, minor int, err error) {
	m := toolVersion.FindStringSubmatch(out)
	if m == nil {
		return "", 0, 0, fmt.Errorf("cannot read the version from --version output %q", firstLine([]byte(out)))
	}
	major, _ = strconv.Atoi(m[1])
	minor, _ = strconv.Atoi(m[2])
	return m[0][strings.LastIndex(m[0], " ")+1:], major, minor, nil
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
