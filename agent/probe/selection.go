package probe

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/tidemark-backup/tidemark/engines/mariabackup"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// The probes engine selection needs beyond the datadir: the physical backup
// tool and its version, BACKUP_ADMIN, and the volumes of the redo and binary
// log directories.

// toolVersionRE matches "mariabackup based on MariaDB server 10.11.19-MariaDB"
// and "xtrabackup version 8.0.35-30 based on MySQL server 8.0.35": the
// server version the tool was built from is what must match the server's.
var toolVersionRE = regexp.MustCompile(`based on (?:MariaDB|MySQL) server ([0-9]+\.[0-9]+\.[0-9]+)`)

// versionScript runs "$0 --version" with its standard error (where
// mariabackup prints its version) on standard output.
const versionScript = `exec "$0" --version 2>&1`

// probeBackupTool finds mariabackup (MariaDB) or xtrabackup (MySQL,
// Percona) and reads the server version it was built from. A missing tool
// is a finding, not a probe failure: selection reports it.
func probeBackupTool(ctx context.Context, s *state, c *v1.Capabilities) error {
	if _, err := s.needServer(); err != nil {
		return err
	}
	if s.Host == nil {
		return skipped("no host access")
	}
	tool, pkg := "mariabackup", mariabackup.MariaBackupPackage
	if s.server.Flavor != mysqlx.MariaDB {
		tool, pkg = "xtrabackup", mariabackup.XtraBackupPackage
	}
	c.SelectionProbed = true
	out, err := s.Host.Run(ctx, "sh", "-c", versionScript, tool)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 127 || strings.Contains(err.Error(), "not found") {
			c.BackupToolError = fmt.Sprintf("%s is not in the agent's PATH; install %s", tool, pkg)
			return nil
		}
		c.BackupTool = tool
		c.BackupToolError = fmt.Sprintf("%s --version failed: %v", tool, err)
		return nil
	}
	c.BackupTool = tool
	m := toolVersionRE.FindStringSubmatch(string(out))
	if m == nil {
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		c.BackupToolError = fmt.Sprintf("cannot read the server version %s was built from in %q", tool, line)
		return nil
	}
	c.BackupToolVersion = m[1]
	return nil
}

// grantRE finds BACKUP_ADMIN, or ALL PRIVILEGES on every database, in a
// SHOW GRANTS line.
var grantRE = regexp.MustCompile(`(?i)\bBACKUP_ADMIN\b|ALL PRIVILEGES ON \*\.\*`)

// probePrivileges records BACKUP_ADMIN, which the clone engine needs; MySQL
// and Percona only (MariaDB has no clone, and no such privilege).
func probePrivileges(ctx context.Context, s *state, c *v1.Capabilities) error {
	q, err := s.needServer()
	if err != nil {
		return err
	}
	if s.server.Flavor == mysqlx.MariaDB {
		return nil
	}
	rows, err := q.Query(ctx, "SHOW GRANTS")
	if err != nil {
		return err
	}
	for _, r := range rows {
		for _, v := range r {
			if grantRE.MatchString(v) {
				c.BackupAdmin = true
				return nil
			}
		}
	}
	return nil
}

// probeVolumes places the redo log and binary log directories: on the
// datadir's device, or on which filesystem apart from it. A snapshot of the
// datadir's volume covers only what is on that device (a nested Btrfs
// subvolume has a device of its own, and is not in its parent's snapshot).
func probeVolumes(ctx context.Context, s *state, c *v1.Capabilities) error {
	q, err := s.needServer()
	if err != nil {
		return err
	}
	if s.Host == nil {
		return skipped("no host access")
	}
	if c.Datadir == "" {
		return skipped("datadir unknown")
	}
	r, err := queryOne(ctx, q, "SELECT @@innodb_log_group_home_dir AS redo, @@log_bin_basename AS binlog")
	if err != nil {
		return err
	}
	dmaj, dmin, err := s.Host.Device(c.Datadir)
	if err != nil {
		return fmt.Errorf("datadir %s: %w", c.Datadir, err)
	}
	abs := func(p string) string {
		if !filepath.IsAbs(p) {
			p = filepath.Join(c.Datadir, p)
		}
		return filepath.Clean(p)
	}
	var dirs [][2]string
	if p := r["redo"]; p != "" {
		dirs = append(dirs, [2]string{"redo", abs(p)})
	}
	if p := r["binlog"]; p != "" {
		dirs = append(dirs, [2]string{"binlog", filepath.Dir(abs(p))})
	}
	var errs []error
	for _, d := range dirs {
		role, path := d[0], d[1]
		maj, min, err := s.Host.Device(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s directory %s: %w", role, path, err))
			continue
		}
		v := &v1.EngineVolume{Role: role, Path: path, SameAsDatadir: maj == dmaj && min == dmin}
		if v.SameAsDatadir {
			v.Filesystem = c.Filesystem
		} else {
			v.Filesystem = classify(ctx, s.Host, path)
		}
		c.Volumes = append(c.Volumes, v)
	}
	return errors.Join(errs...)
}

// classify is probeFilesystem's verdict for another directory; what cannot
// be told is FILESYSTEM_UNSPECIFIED, which selection reads as no snapshot.
func classify(ctx context.Context, h Host, path string) v1.Filesystem {
	st, err := h.Statfs(path)
	if err != nil {
		return v1.Filesystem_FILESYSTEM_UNSPECIFIED
	}
	switch st.Magic {
	case magicBtrfs:
		return v1.Filesystem_FILESYSTEM_BTRFS
	case magicZFS:
		return v1.Filesystem_FILESYSTEM_ZFS
	}
	if name, err := lvmVolume(ctx, h, path); err == nil && name != "" {
		return v1.Filesystem_FILESYSTEM_LVM
	}
	switch st.Magic {
	case magicXFS:
		return v1.Filesystem_FILESYSTEM_XFS
	case magicExt4:
		return v1.Filesystem_FILESYSTEM_EXT4
	}
	return v1.Filesystem_FILESYSTEM_OTHER
}
