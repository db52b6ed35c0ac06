package apply

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/tidemark-backup/tidemark/engines/binlog/gtid"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

// varNames are the target's names of the replica settings Apply reads and
// changes: MariaDB's, MySQL's before 8.0.26 (slave_*), MySQL's since
// (replica_*; 8.4 dropped most of the old ones).
type varNames struct {
	logUpdates, parallel, preserveOrder, skipErrors, execMode string
}

var (
	mariadbNames  = varNames{"log_slave_updates", "slave_parallel_threads", "", "slave_skip_errors", "slave_exec_mode"}
	mysqlOldNames = varNames{"log_slave_updates", "slave_parallel_workers", "slave_preserve_commit_order", "slave_skip_errors", "slave_exec_mode"}
	mysqlNewNames = varNames{"log_replica_updates", "replica_parallel_workers", "replica_preserve_commit_order", "replica_skip_errors", "replica_exec_mode"}
)

// mysqlTarget is what Apply knows of a MySQL target beyond target.
type mysqlTarget struct {
	ver           [3]int
	uuid          string // @@server_uuid
	gtidMode      string // OFF, OFF_PERMISSIVE, ON_PERMISSIVE, ON
	executed      string // @@GLOBAL.gtid_executed
	preserveOrder bool
}

func (m *mysqlTarget) atLeast(a, b, c int) bool {
	v := m.ver
	return v[0] > a || (v[0] == a && (v[1] > b || (v[1] == b && v[2] >= c)))
}

// parseVersion reads "8.0.36-28" as 8, 0, 36.
func parseVersion(s string) [3]int {
	var v [3]int
	for i, f := range strings.SplitN(s, ".", 3) {
		end := strings.IndexFunc(f, func(r rune) bool { return r < '0' || r > '9' })
		if end >= 0 {
			f = f[:end]
		}
		v[i], _ = strconv.Atoi(f)
	}
	return v
}

func probeMySQL(ctx context.Context, db *sql.DB, t *target) (*target, error) {
	m := &mysqlTarget{ver: parseVersion(t.version)}
	t.mysql = m
	t.names = mysqlOldNames
	if m.atLeast(8, 0, 26) {
		t.names = mysqlNewNames
	}
	t.haveSSL = "YES" // MySQL is always built with TLS; @@have_ssl is gone in 8.4
	n := t.names
	var skip, execMode string
	var executed sql.NullString
	q := fmt.Sprintf("SELECT @@server_id, @@log_bin, @@server_uuid, @@GLOBAL.gtid_mode, @@GLOBAL.gtid_executed, @@%s, @@%s, @@%s, @@%s, @@%s", n.logUpdates, n.parallel, n.preserveOrder, n.skipErrors, n.execMode)
	if err := db.QueryRowContext(ctx, q).Scan(&t.serverID, &t.logBin, &m.uuid, &m.gtidMode, &executed, &t.logSlaveUpdates, &t.parallel, &m.preserveOrder, &skip, &execMode); err != nil {
		return nil, mysqlx.Translate("reading the replication settings of MySQL "+t.version, err)
	}
	m.executed = executed.String
	t.idempotent = !strings.EqualFold(execMode, "STRICT")
	if skip != "" && !strings.EqualFold(skip, "OFF") {
		t.inexact = append(t.inexact, n.skipErrors+"="+skip)
	}
	// Replication filters are startup options in MySQL, listed here (8.0+).
	rows, err := db.QueryContext(ctx, "SELECT FILTER_NAME, FILTER_RULE FROM performance_schema.replication_applier_global_filters")
	if err == nil {
		defer func() { _ = rows.Close() }()
		for rows.Next() {
			var name, rule string
			if rows.Scan(&name, &rule) == nil && rule != "" {
				t.inexact = append(t.inexact, strings.ToLower(name)+"="+rule)
			}
		}
	}
	return t, nil
}

// canApply refuses a plan the target cannot apply by any method.
func (t *target) canApply(plan *PlanResult) error {
	mariadbFiles := !plan.MySQL && !plan.anonymous && plan.Transactions > 0
	switch {
	case t.mysql == nil && (plan.MySQL || plan.anonymous):
		return fmt.Errorf("the binlog files are MySQL's and the target is MariaDB %s: restore them onto MySQL", t.version)
	case t.mysql != nil && mariadbFiles:
		return fmt.Errorf("the binlog files are MariaDB's and the target is MySQL %s: restore them onto MariaDB", t.version)
	case t.mysql != nil && plan.mysqlGTIDs && strings.EqualFold(t.mysql.gtidMode, "OFF"):
		return fmt.Errorf("the target has gtid_mode=OFF and the planned transactions carry GTIDs, which MySQL applies only with gtid_mode ON_PERMISSIVE or ON (change it step by step: SET GLOBAL gtid_mode=OFF_PERMISSIVE, then ON_PERMISSIVE)")
	case t.mysql != nil && plan.anonymous && strings.EqualFold(t.mysql.gtidMode, "ON"):
		return fmt.Errorf("the target has gtid_mode=ON and the planned transactions are anonymous (their source had gtid_mode OFF), which MySQL applies only with gtid_mode OFF_PERMISSIVE or ON_PERMISSIVE")
	case t.mysql != nil && plan.mysqlGTIDs:
		// MySQL would skip them (a guard); here it means the target is not
		// at the plan's start, so what it holds is not the base's data.
		have, err := gtid.ParseMySQLSet(t.mysql.executed)
		if err != nil {
			return fmt.Errorf("its gtid_executed: %w", err)
		}
		if had := plan.mysqlApplied.Sub(plan.mysqlApplied.Sub(have)); !had.IsEmpty() {
			return fmt.Errorf("the target has already executed %s of the transactions to apply (its gtid_executed is %s, the restore starts after %s): it does not hold the base's data; restore the base onto it first", had, t.mysql.executed, plan.StartGTID)
		}
	}
	return nil
}

// binlogProgram and clientProgram name the sql method's programs.
func (t *target) binlogProgram() string {
	if t.mysql != nil {
		return "mysqlbinlog"
	}
	return "mariadb-binlog"
}

func (t *target) clientProgram() string {
	if t.mysql != nil {
		return "mysql"
	}
	return "mariadb"
}

// replStmts are the statements that run a named replication connection.
type replStmts struct {
	stop, reset, start, status string
	changeName, startName      string // for errors
}

// stmts spells them for the target: MariaDB's named connections, MySQL's
// channels (START/STOP/SHOW/RESET REPLICA since 8.0.22; 8.4 removed the
// SLAVE spellings).
func (t *target) stmts(name string) replStmts {
	if t.mysql == nil {
		q := quote(name)
		return replStmts{stop: "STOP SLAVE " + q, reset: "RESET SLAVE " + q + " ALL", start: "START SLAVE " + q,
			status: "SHOW SLAVE " + q + " STATUS", changeName: "CHANGE MASTER", startName: "START SLAVE"}
	}
	ch := " FOR CHANNEL " + quote(name)
	word := "SLAVE"
	if t.mysql.atLeast(8, 0, 22) {
		word = "REPLICA"
	}
	change := "CHANGE MASTER"
	if t.mysql.atLeast(8, 0, 23) {
		change = "CHANGE REPLICATION SOURCE"
	}
	return replStmts{stop: "STOP " + word + ch, reset: "RESET " + word + " ALL" + ch, start: "START " + word + ch,
		status: "SHOW " + word + " STATUS" + ch, changeName: change, startName: "START " + word}
}

// change spells CHANGE MASTER TO opts (written with MASTER_ options) FOR
// CHANNEL name for the MySQL target: CHANGE REPLICATION SOURCE TO with
// SOURCE_ options since 8.0.23.
func (m *mysqlTarget) change(opts, name string) string {
	if m.atLeast(8, 0, 23) {
		return "CHANGE REPLICATION SOURCE TO " + strings.ReplaceAll(opts, "MASTER_", "SOURCE_") + " FOR CHANNEL " + quote(name)
	}
	return "CHANGE MASTER TO " + opts + " FOR CHANNEL " + quote(name)
}

// freeUUID returns a server UUID for the Tidemark source that is neither
// the target's (a replica refuses a source with its own UUID) nor one of
// the files' sources.
func (m *mysqlTarget) freeUUID(plan *PlanResult) string {
	taken := map[string]bool{strings.ToLower(m.uuid): true}
	if set, err := gtid.ParseMySQLSet(plan.EndGTID); err == nil {
		for u := range set {
			taken[u.String()] = true
		}
	}
	for {
		if u := uuid.NewString(); !taken[u] {
			return u
		}
	}
}

// replicateFromMySQL starts the target's default channel replicating from
// a live source with auto-positioning from the restored set: MySQL's
// replica sends its gtid_executed, so that set must be the restored one.
// A base restored without its GTIDs (a logical dump loaded without
// SET GLOBAL gtid_purged) leaves some of them out of gtid_executed; they
// are added to gtid_purged, else the source would send them again.
func replicateFromMySQL(ctx context.Context, conn *sql.Conn, t *target, host, port, user, password string, plan *PlanResult) ([]string, error) {
	if !plan.MySQL {
		return nil, errors.New("the restored position has no GTIDs (the source had gtid_mode OFF), and replicating on from it by auto-positioning needs them: point the target at the source by file and position yourself")
	}
	rs := t.stmts("")
	_, _ = conn.ExecContext(ctx, rs.stop)
	var warn []string
	executed, err := gtidExecuted(ctx, conn)
	if err != nil {
		return nil, err
	}
	have, err := gtid.ParseMySQLSet(executed)
	if err != nil {
		return nil, fmt.Errorf("the target's gtid_executed: %w", err)
	}
	want, err := gtid.ParseMySQLSet(plan.EndGTID)
	if err != nil {
		return nil, fmt.Errorf("the restored GTID set: %w", err)
	}
	if missing := want.Sub(have); !missing.IsEmpty() {
		if !t.mysql.atLeast(8, 0, 0) {
			return nil, fmt.Errorf("the target's gtid_executed (%s) lacks %s of the restored set %s, and MySQL %s cannot add to gtid_purged: set it yourself, then start replication", executed, missing, plan.EndGTID, t.version)
		}
		if _, err := conn.ExecContext(ctx, "SET GLOBAL gtid_purged = "+quote("+"+missing.String())); err != nil {
			return nil, mysqlx.Translate("adding "+missing.String()+" to gtid_purged", err)
		}
		warn = append(warn, fmt.Sprintf("the target's gtid_executed lacked %s, which the restored base holds (it was loaded without its GTIDs): added to gtid_purged, so that the source does not send those transactions again", missing))
	}
	if extra := have.Sub(want); !extra.IsEmpty() {
		warn = append(warn, fmt.Sprintf("the target's gtid_executed holds %s beyond the restored set %s: the source will not send transactions of those GTIDs", extra, plan.EndGTID))
	}
	change := t.mysql.change(fmt.Sprintf("MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, MASTER_PASSWORD=%s, MASTER_AUTO_POSITION=1",
		quote(host), port, quote(user), quote(password)), "")
	if _, err := conn.ExecContext(ctx, change); err != nil {
		return warn, mysqlx.Translate(rs.changeName, err)
	}
	if _, err := conn.ExecContext(ctx, rs.start); err != nil {
		return warn, mysqlx.Translate(rs.startName, err)
	}
	return warn, nil
}

// gtidExecuted reads @@GLOBAL.gtid_executed ("" when empty).
func gtidExecuted(ctx context.Context, conn *sql.Conn) (string, error) {
	var executed sql.NullString
	if err := conn.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_executed").Scan(&executed); err != nil {
		return "", mysqlx.Translate("reading gtid_executed", err)
	}
	return executed.String, nil
}
