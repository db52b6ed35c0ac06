package selection

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Engine names, as manifests and --engine spell them.
const (
	Snapshot    = "snapshot"
	Clone       = "clone"
	MariaBackup = "mariabackup"
	Logical     = "logical"
)

// Known lists the engines selection knows, in default rank order.
var Known = []string{Snapshot, Clone, MariaBackup, Logical}

// Preferences are a policy's (or a command line's) wishes.
type Preferences struct {
	// Engines: nil, [] or ["auto"] rank every engine; a list ranks only
	// these, in this order (the others follow, refused as not preferred).
	Engines []string
	// Portable: backups must restore onto another version or flavor, which
	// only the logical engine gives.
	Portable bool
	// SmallBytes: an instance with less data than this (and a known size)
	// ranks logical first. 0 turns the rule off; the controller and the CLI
	// default to DefaultSmallBytes (--logical-below).
	SmallBytes uint64
	// Available, when set, lists the engines the binary that will run the
	// backup has; any other is refused as not built in.
	Available []string
}

// PortableReason is why portable preferences (a policy's portable: true,
// --portable) leave the logical engine alone usable.
const PortableReason = "portable: only a logical backup restores onto another version or flavor"

// DefaultSmallBytes is the size below which the controller and the CLI
// rank logical first: a dump of less than 1 GiB takes seconds to a minute,
// and it restores onto a running server of any version or flavor, which a
// physical copy does not.
const DefaultSmallBytes = 1 << 30

// Verdict is one engine's place in a decision.
type Verdict struct {
	Engine string `json:"engine"`
	OK     bool   `json:"ok"`
	Reason string `json:"reason"`
}

// Decision is the ranked verdicts for one instance.
type Decision struct {
	// Verdicts, best first; usable ones precede refused ones.
	Verdicts []Verdict `json:"verdicts"`
	// Notes change no verdict: a missing binary log, relayed storage, ...
	Notes []string `json:"notes,omitempty"`
}

// ErrUnknownEngine is returned (wrapped, listing the known ones) for a
// preference naming no engine.
var ErrUnknownEngine = errors.New("unknown engine")

// ErrNoUsableEngine is returned by Decision.Choose when every engine is
// refused; the message carries each one's reason.
var ErrNoUsableEngine = errors.New("no usable engine")

// Chosen is the first usable engine, or "" when none is.
func (d *Decision) Chosen() string {
	for _, v := range d.Verdicts {
		if v.OK {
			return v.Engine
		}
	}
	return ""
}

// Choose returns the first usable verdict and the usable ones after it
// (the fallbacks), or ErrNoUsableEngine naming every refusal.
func (d *Decision) Choose() (Verdict, []string, error) {
	var first *Verdict
	var rest []string
	for i, v := range d.Verdicts {
		switch {
		case !v.OK:
		case first == nil:
			first = &d.Verdicts[i]
		default:
			rest = append(rest, v.Engine)
		}
	}
	if first == nil {
		reasons := make([]string, 0, len(d.Verdicts))
		for _, v := range d.Verdicts {
			reasons = append(reasons, v.Reason)
		}
		return Verdict{}, nil, fmt.Errorf("%w: %s", ErrNoUsableEngine, strings.Join(reasons, "; "))
	}
	return *first, rest, nil
}

// Verdict returns the verdict on engine (false when it is not in d).
func (d *Decision) Verdict(engine string) (Verdict, bool) {
	for _, v := range d.Verdicts {
		if v.Engine == engine {
			return v, true
		}
	}
	return Verdict{}, false
}

// CheckNames fails, listing the known engines, when a name is neither
// "auto" nor a known engine.
func CheckNames(names []string) error {
	for _, n := range names {
		if n == "auto" || slices.Contains(Known, n) {
			continue
		}
		return fmt.Errorf("%w %q: use auto or one of %s", ErrUnknownEngine, n, strings.Join(Known, ", "))
	}
	return nil
}

// Decide ranks the engines for an instance with capabilities c. It fails
// only for preferences naming an unknown engine; a nil c (never probed)
// refuses every engine with that reason.
func Decide(c *v1.Capabilities, p Preferences) (*Decision, error) {
	if err := CheckNames(p.Engines); err != nil {
		return nil, err
	}
	if c == nil || c.GetFlavor() == "" {
		why := "the agent has not reported this server's capabilities (is it connected, and can it query the server?)"
		d := &Decision{}
		for _, e := range Known {
			d.Verdicts = append(d.Verdicts, Verdict{Engine: e, Reason: e + ": " + why})
		}
		return d, nil
	}
	in := facts(c)
	all := map[string]Verdict{
		Snapshot:    snapshot(in),
		Clone:       clone(in),
		MariaBackup: mariabackup(in),
		Logical:     logical(in),
	}
	if p.Portable {
		for _, e := range []string{Snapshot, Clone, MariaBackup} {
			if v := all[e]; v.OK {
				all[e] = Verdict{Engine: e, Reason: fmt.Sprintf("%s: %s (a physical copy restores only onto %s %s)", e, PortableReason, in.flavorName, in.series())}
			}
		}
		v := all[Logical]
		v.Reason += "; ranked first: " + PortableReason
		all[Logical] = v
	}
	if p.Available != nil {
		for e, v := range all {
			if v.OK && !slices.Contains(p.Available, e) {
				all[e] = Verdict{Engine: e, Reason: fmt.Sprintf("%s: not built into this tidemark (it has %s)", e, strings.Join(p.Available, ", "))}
			}
		}
	}
	order := slices.Clone(Known)
	if p.Portable || (p.SmallBytes > 0 && c.GetDataBytes() > 0 && c.GetDataBytes() < p.SmallBytes) {
		order = []string{Logical, Snapshot, Clone, MariaBackup}
		if !p.Portable {
			v := all[Logical]
			v.Reason += fmt.Sprintf("; ranked first: %s of data is under the %s small-instance threshold", bytesText(c.GetDataBytes()), bytesText(p.SmallBytes))
			all[Logical] = v
		}
	}
	var pref []string
	for _, e := range p.Engines {
		if e != "auto" && !slices.Contains(pref, e) {
			pref = append(pref, e)
		}
	}
	d := &Decision{Notes: notes(in)}
	if len(pref) > 0 {
		for _, e := range pref {
			d.Verdicts = append(d.Verdicts, all[e])
		}
		for _, e := range order {
			if !slices.Contains(pref, e) {
				d.Verdicts = append(d.Verdicts, Verdict{Engine: e, Reason: fmt.Sprintf("%s: not in the preferred engines (%s)", e, strings.Join(pref, ", "))})
			}
		}
		return d, nil
	}
	// Usable first, each group in rank order.
	for _, ok := range []bool{true, false} {
		for _, e := range order {
			if all[e].OK == ok {
				d.Verdicts = append(d.Verdicts, all[e])
			}
		}
	}
	return d, nil
}

// in is the capabilities, read once.
type in struct {
	c                   *v1.Capabilities
	flavor, flavorName  string
	major, minor, patch int
}

func facts(c *v1.Capabilities) in {
	f := in{c: c, flavor: strings.ToLower(c.GetFlavor())}
	switch f.flavor {
	case "mariadb":
		f.flavorName = "MariaDB"
	case "percona":
		f.flavorName = "Percona Server"
	default:
		f.flavorName = "MySQL"
	}
	parts := strings.SplitN(c.GetVersion(), ".", 3)
	nums := []*int{&f.major, &f.minor, &f.patch}
	for i, s := range parts {
		if j := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 {
			s = s[:j]
		}
		*nums[i], _ = strconv.Atoi(s)
	}
	return f
}

func (f in) series() string { return fmt.Sprintf("%d.%d", f.major, f.minor) }

func (f in) atLeast(major, minor, patch int) bool {
	if f.major != major {
		return f.major > major
	}
	if f.minor != minor {
		return f.minor > minor
	}
	return f.patch >= patch
}

func fsText(fs v1.Filesystem) string {
	switch fs {
	case v1.Filesystem_FILESYSTEM_EXT4:
		return "ext4"
	case v1.Filesystem_FILESYSTEM_XFS:
		return "xfs"
	case v1.Filesystem_FILESYSTEM_BTRFS:
		return "a btrfs subvolume"
	case v1.Filesystem_FILESYSTEM_ZFS:
		return "a ZFS dataset"
	case v1.Filesystem_FILESYSTEM_LVM:
		return "an LVM logical volume"
	case v1.Filesystem_FILESYSTEM_OTHER:
		return "a filesystem with no snapshots (tmpfs, overlay, NFS, ...)"
	}
	return "an unknown filesystem"
}

func snapshotCapable(fs v1.Filesystem) bool {
	return fs == v1.Filesystem_FILESYSTEM_BTRFS || fs == v1.Filesystem_FILESYSTEM_ZFS || fs == v1.Filesystem_FILESYSTEM_LVM
}

// MinSnapshotFree is the least free space selection asks of a snapshot
// volume: below it the copy-on-write space runs out under any write load.
const MinSnapshotFree = 64 << 20

// SnapshotFreeNeeded is the free space a snapshot of size bytes asks for:
// a tenth of the data (the copy-on-write growth of a busy hour on most
// fleets), at least MinSnapshotFree. The snapshot engine checks the same
// rule on the volume before it snapshots (its capability failure falls
// back to the next engine).
func SnapshotFreeNeeded(size uint64) uint64 { return max(size/10, MinSnapshotFree) }

func snapshot(f in) Verdict {
	c := f.c
	no := func(format string, a ...any) Verdict {
		return Verdict{Engine: Snapshot, Reason: "snapshot: " + fmt.Sprintf(format, a...)}
	}
	if c.GetDatadir() == "" || c.GetFilesystem() == v1.Filesystem_FILESYSTEM_UNSPECIFIED {
		return no("the datadir's filesystem is unknown (the agent's filesystem probe failed; see its warnings)")
	}
	if !snapshotCapable(c.GetFilesystem()) {
		return no("datadir %s is on %s, not on Btrfs, LVM or ZFS", c.GetDatadir(), fsText(c.GetFilesystem()))
	}
	for _, v := range c.GetVolumes() {
		if !v.GetSameAsDatadir() && !snapshotCapable(v.GetFilesystem()) {
			return no("the %s directory %s is on %s, apart from the datadir: one snapshot cannot cover it", v.GetRole(), v.GetPath(), fsText(v.GetFilesystem()))
		}
		if !v.GetSameAsDatadir() {
			return no("the %s directory %s is on another volume (%s) than the datadir: two snapshots are not taken at one instant", v.GetRole(), v.GetPath(), fsText(v.GetFilesystem()))
		}
	}
	need := SnapshotFreeNeeded(c.GetDataBytes())
	if c.GetSnapshotFreeBytes() < need {
		return no("datadir on %s %s, %s free for a %s instance (needs %s for the snapshot's copy-on-write space)",
			fsText(c.GetFilesystem()), c.GetDatadir(), bytesText(c.GetSnapshotFreeBytes()), bytesText(c.GetDataBytes()), bytesText(need))
	}
	return Verdict{Engine: Snapshot, OK: true, Reason: fmt.Sprintf("snapshot: datadir on %s %s, %s free for a %s instance",
		fsText(c.GetFilesystem()), c.GetDatadir(), bytesText(c.GetSnapshotFreeBytes()), bytesText(c.GetDataBytes()))}
}

func clone(f in) Verdict {
	c := f.c
	no := func(format string, a ...any) Verdict {
		return Verdict{Engine: Clone, Reason: "clone: " + fmt.Sprintf(format, a...)}
	}
	if f.flavor == "mariadb" {
		return no("server is MariaDB %s, clone needs MySQL ≥ 8.0.17", f.series())
	}
	if !f.atLeast(8, 0, 17) {
		return no("server is %s %s, clone needs MySQL ≥ 8.0.17", f.flavorName, c.GetVersion())
	}
	if !slices.ContainsFunc(c.GetPlugins(), func(p string) bool { return strings.EqualFold(p, "clone") }) {
		return no("the clone plugin is not ACTIVE on %s %s; install it with INSTALL PLUGIN clone SONAME 'mysql_clone.so' (tidemark never does it silently)", f.flavorName, c.GetVersion())
	}
	if !c.GetSelectionProbed() {
		return no("the agent did not report whether its account has BACKUP_ADMIN (an agent older than engine selection)")
	}
	if !c.GetBackupAdmin() {
		return no("the agent's account lacks BACKUP_ADMIN; GRANT BACKUP_ADMIN ON *.* TO it")
	}
	return Verdict{Engine: Clone, OK: true, Reason: fmt.Sprintf("clone: %s %s with the clone plugin ACTIVE and BACKUP_ADMIN granted; copies %s with no lock on writes", f.flavorName, c.GetVersion(), bytesText(c.GetDataBytes()))}
}

// toolSeries reads "10.11.19" (or "8.0.35-30") into major.minor.
func toolSeries(v string) (int, int, bool) {
	p := strings.SplitN(v, ".", 3)
	if len(p) < 2 {
		return 0, 0, false
	}
	a, err1 := strconv.Atoi(p[0])
	b, err2 := strconv.Atoi(strings.TrimFunc(p[1], func(r rune) bool { return r < '0' || r > '9' }))
	return a, b, err1 == nil && err2 == nil
}

func mariabackup(f in) Verdict {
	c := f.c
	tool := "xtrabackup"
	if f.flavor == "mariadb" {
		tool = "mariabackup"
	}
	no := func(format string, a ...any) Verdict {
		return Verdict{Engine: MariaBackup, Reason: "mariabackup: " + fmt.Sprintf(format, a...)}
	}
	if !c.GetSelectionProbed() {
		return no("the agent did not report whether %s is installed (an agent older than engine selection)", tool)
	}
	if c.GetBackupTool() == "" {
		why := c.GetBackupToolError()
		if why == "" {
			why = "install it next to the server"
		}
		return no("%s is not installed on the agent's host: %s", tool, why)
	}
	if c.GetBackupToolError() != "" {
		return no("%s on the agent's host is unusable: %s", c.GetBackupTool(), c.GetBackupToolError())
	}
	maj, min, ok := toolSeries(c.GetBackupToolVersion())
	if !ok {
		return no("the version of %s (%q) is unknown", c.GetBackupTool(), c.GetBackupToolVersion())
	}
	if maj != f.major || min != f.minor {
		return no("%s %s cannot back up %s %s: the tool must be of the server's series %s", c.GetBackupTool(), c.GetBackupToolVersion(), f.flavorName, c.GetVersion(), f.series())
	}
	return Verdict{Engine: MariaBackup, OK: true, Reason: fmt.Sprintf("mariabackup: %s %s matches %s %s; copies %s of files with the redo log applied",
		c.GetBackupTool(), c.GetBackupToolVersion(), f.flavorName, c.GetVersion(), bytesText(c.GetDataBytes()))}
}

func logical(f in) Verdict {
	c := f.c
	lock := "a brief global lock to read the coordinates"
	if c.GetIsReplica() {
		lock = "a brief global lock on this replica"
	}
	size := "of unknown size"
	if c.GetDataBytes() > 0 {
		size = bytesText(c.GetDataBytes())
	}
	return Verdict{Engine: Logical, OK: true, Reason: fmt.Sprintf("logical: runs on any server and restores onto any version or flavor; dumps %s row by row with %s", size, lock)}
}

func notes(f in) []string {
	c := f.c
	var out []string
	if !c.GetBinlogEnabled() {
		out = append(out, "binary log off: each backup is a restore point, with no point-in-time recovery between them")
	} else if !strings.EqualFold(c.GetBinlogFormat(), "ROW") && c.GetBinlogFormat() != "" {
		out = append(out, fmt.Sprintf("binlog_format %s: point-in-time recovery replays statements; ROW is safer", c.GetBinlogFormat()))
	}
	if f.flavor != "mariadb" && c.GetBinlogEnabled() && !strings.EqualFold(c.GetGtidMode(), "ON") {
		out = append(out, fmt.Sprintf("gtid_mode %s: streams follow a failover by file and position only", orUnknown(c.GetGtidMode())))
	}
	if !c.GetStorageReachable() {
		why := c.GetStorageError()
		if why == "" {
			why = "not reachable from the agent"
		}
		out = append(out, "storage: "+why+"; backups are relayed through the controller")
	}
	return out
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// bytesText prints a size the way the examples read: "41 GiB", "512 MiB".
func bytesText(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	v, i := float64(n)/unit, 0
	for v >= unit && i < len(units)-1 {
		v /= unit
		i++
	}
	if v >= 10 || v == float64(int(v)) {
		return fmt.Sprintf("%.0f %s", v, units[i])
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}
