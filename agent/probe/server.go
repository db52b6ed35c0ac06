package probe

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// errNoServer marks a SQL probe skipped because the server probe failed.
var errNoServer = fmt.Errorf("%w: the server could not be queried", errSkipped)

// queryOne runs a query that must return exactly one row.
func queryOne(ctx context.Context, q Querier, query string) (Row, error) {
	rows, err := q.Query(ctx, query)
	if err != nil {
		return nil, err
	}
	if len(rows) != 1 {
		return nil, fmt.Errorf("%s: expected one row, got %d", query, len(rows))
	}
	return rows[0], nil
}

// needServer returns the querier once the server probe succeeded.
func (s *state) needServer() (Querier, error) {
	if s.Querier == nil || s.server == nil {
		return nil, errNoServer
	}
	return s.Querier, nil
}

// probeServer reads flavor, version and edition from VERSION() and
// @@version_comment (Percona is named only in the comment).
func probeServer(ctx context.Context, s *state, c *v1.Capabilities) error {
	if s.Querier == nil {
		return skipped("no server configured")
	}
	r, err := queryOne(ctx, s.Querier, "SELECT VERSION() AS version, @@version_comment AS comment, @@hostname AS hostname, @@server_id AS server_id")
	if err != nil {
		return err
	}
	version, comment := r["version"], r["comment"]
	if version == "" {
		return errors.New("the server reported an empty version")
	}
	flavor, major, minor, patch := mysqlx.ParseVersion(version, comment)
	c.Flavor = flavor
	c.Version = fmt.Sprintf("%d.%d.%d", major, minor, patch)
	c.Edition = edition(version, comment)
	id, _ := strconv.ParseUint(r["server_id"], 10, 32)
	s.server = &v1.ServerInfo{Flavor: flavor, Version: version, Hostname: r["hostname"], ServerId: uint32(id)}
	if flavor != mysqlx.MariaDB {
		// @@server_uuid exists on MySQL and Percona only; it is identity,
		// not a capability, so its absence is not worth a warning.
		if r, err := queryOne(ctx, s.Querier, "SELECT @@server_uuid AS uuid"); err == nil {
			s.server.ServerUuid = r["uuid"]
		}
	}
	return nil
}

// edition tells the commercial builds from the community ones. MySQL says
// "MySQL Enterprise Server - Commercial", MariaDB's enterprise build carries
// "enterprise" in its version; everything else (distribution builds,
// Percona's GPL server) is community.
func edition(version, comment string) string {
	s := strings.ToLower(version + " " + comment)
	if strings.Contains(s, "enterprise") || strings.Contains(s, "commercial") {
		return "enterprise"
	}
	return "community"
}

// probePlugins lists the active plugins loaded from a library. Built-in
// plugins (InnoDB, Aria, ...) follow from flavor and version; the loaded
// ones (clone, rocksdb) are what selection asks about.
func probePlugins(ctx context.Context, s *state, c *v1.Capabilities) error {
	q, err := s.needServer()
	if err != nil {
		return err
	}
	rows, err := q.Query(ctx, "SELECT PLUGIN_NAME AS name FROM information_schema.PLUGINS WHERE PLUGIN_STATUS = 'ACTIVE' AND PLUGIN_LIBRARY IS NOT NULL")
	if err != nil {
		return err
	}
	var out []string
	for _, r := range rows {
		if n := strings.ToLower(r["name"]); n != "" {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	c.Plugins = slices.Compact(out)
	return nil
}

func probeBinlog(ctx context.Context, s *state, c *v1.Capabilities) error {
	q, err := s.needServer()
	if err != nil {
		return err
	}
	r, err := queryOne(ctx, q, "SELECT @@log_bin AS log_bin, @@binlog_format AS format")
	if err != nil {
		return err
	}
	c.BinlogEnabled = isOn(r["log_bin"])
	c.BinlogFormat = strings.ToUpper(r["format"])
	return nil
}

// probeGTID fills gtid_mode as the catalog defines it: MySQL's @@gtid_mode;
// on MariaDB, which always writes GTIDs, "ON" when gtid_strict_mode is on
// (only then is a GTID a reliable restore target), else "OFF".
func probeGTID(ctx context.Context, s *state, c *v1.Capabilities) error {
	q, err := s.needServer()
	if err != nil {
		return err
	}
	if s.server.Flavor == mysqlx.MariaDB {
		r, err := queryOne(ctx, q, "SELECT @@gtid_strict_mode AS strict")
		if err != nil {
			return err
		}
		c.GtidMode = "OFF"
		if isOn(r["strict"]) {
			c.GtidMode = "ON"
		}
		return nil
	}
	r, err := queryOne(ctx, q, "SELECT @@gtid_mode AS mode")
	if err != nil {
		return err
	}
	c.GtidMode = strings.ToUpper(r["mode"])
	return nil
}

func probeDatadir(ctx context.Context, s *state, c *v1.Capabilities) error {
	q, err := s.needServer()
	if err != nil {
		return err
	}
	r, err := queryOne(ctx, q, "SELECT @@datadir AS datadir")
	if err != nil {
		return err
	}
	d := r["datadir"]
	if d == "" || !filepath.IsAbs(d) {
		return fmt.Errorf("the server reported datadir %q, not an absolute path", d)
	}
	c.Datadir = filepath.Clean(d)
	return nil
}

// probeDataSize sums what information_schema knows (data and indexes of
// base tables); when that query fails it measures the datadir with du.
func probeDataSize(ctx context.Context, s *state, c *v1.Capabilities) error {
	var sqlErr error
	if q, err := s.needServer(); err == nil {
		r, err := queryOne(ctx, q, "SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) AS bytes FROM information_schema.TABLES "+
			"WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN ('information_schema', 'performance_schema', 'sys')")
		if err == nil {
			n, perr := strconv.ParseUint(r["bytes"], 10, 64)
			if perr == nil {
				c.DataBytes = n
				return nil
			}
			err = fmt.Errorf("information_schema.TABLES size %q: %w", r["bytes"], perr)
		}
		sqlErr = err
	} else {
		sqlErr = err
	}
	if s.Host == nil || c.Datadir == "" {
		return sqlErr
	}
	out, err := s.Host.Run(ctx, "du", "-s", "-B1", c.Datadir)
	if err != nil {
		// The SQL error explains, but must not make this look skipped.
		return fmt.Errorf("%s; du: %w", sqlErr.Error(), err)
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return fmt.Errorf("%s; du printed nothing", sqlErr.Error())
	}
	n, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return fmt.Errorf("%s; du output %q: %w", sqlErr.Error(), strings.TrimSpace(string(out)), err)
	}
	c.DataBytes = n
	return nil
}

// probeReplica asks whether the server replicates from another. MariaDB's
// SHOW ALL SLAVES STATUS covers every named connection of multi-source
// replication; MySQL lists every channel in SHOW REPLICA STATUS (8.0.22+) or,
// on older servers, SHOW SLAVE STATUS.
func probeReplica(ctx context.Context, s *state, c *v1.Capabilities) error {
	q, err := s.needServer()
	if err != nil {
		return err
	}
	var rows []Row
	if s.server.Flavor == mysqlx.MariaDB {
		rows, err = q.Query(ctx, "SHOW ALL SLAVES STATUS")
	} else {
		rows, err = q.Query(ctx, "SHOW REPLICA STATUS")
		if err != nil {
			var err2 error
			if rows, err2 = q.Query(ctx, "SHOW SLAVE STATUS"); err2 == nil {
				err = nil
			}
		}
	}
	if err != nil {
		return err
	}
	c.IsReplica = len(rows) > 0
	return nil
}

// probeStorage records whether the repository can be opened from here.
// Unreachable storage is a finding (backups go through the relay), not a
// probe failure.
func probeStorage(ctx context.Context, s *state, c *v1.Capabilities) error {
	if s.Storage == nil {
		c.StorageReachable, c.StorageError = false, "no repository configured on the agent (--repo)"
		return nil
	}
	c.StorageReachable, c.StorageError = true, ""
	if err := s.Storage(ctx); err != nil {
		c.StorageReachable, c.StorageError = false, err.Error()
	}
	return nil
}

// isOn reads a boolean system variable as the driver returns it.
func isOn(v string) bool {
	switch strings.ToUpper(strings.TrimSpace(v)) {
	case "1", "ON", "YES", "TRUE":
		return true
	}
	return false
}
