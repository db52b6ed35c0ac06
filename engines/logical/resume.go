package logical

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

// A restore records its progress on the target, so that one interrupted
// (killed, connection lost, target restarted) can go on with Resume
// instead of starting over: a row per step done, in a database of the
// restore's own that the restore removes when it ends. A piece's row is
// written in the piece's own transaction, so the two commit together.
const (
	stateDB    = "_tidemark_restore"
	stateTable = "`" + stateDB + "`.`steps`"
)

// Steps besides a piece ("piece:<stream>") and a table whose data and
// indexes are in ("table:<db>.<name>", target names).
const (
	stepSchema = "schema" // every database, table and sequence created
	stepPost   = "post"   // views, routines, triggers and events created
	stepUsers  = "users"
)

// restoreState is one restore's record on the target; nil methods do
// nothing (a target where the record could not be made).
type restoreState struct {
	key  string          // the backup and where it goes
	done map[string]bool // steps found at a resume
}

// stateKey names a restore: the backup id and its target databases, so that
// two restores of one backup into different databases keep apart.
func stateKey(backupID string, targets []string) string {
	t := slices.Clone(targets)
	slices.Sort(t)
	return backupID + " into " + strings.Join(t, ",")
}

// openState makes the record for a new restore (clearing one left by an
// earlier, interrupted run of the same restore), or on resume reads it,
// refusing when there is none. A target where the record cannot be made
// restores without one, with a warning.
func (r *restoreRun) openState(ctx context.Context, ctl *sql.Conn, key string, resume bool) (*restoreState, error) {
	st := &restoreState{key: key, done: map[string]bool{}}
	if resume {
		rows, err := ctl.QueryContext(ctx, "SELECT step FROM "+stateTable+" WHERE restore_key = ?", key)
		if mysqlx.ServerErrorNumber(err) == 1146 || mysqlx.ServerErrorNumber(err) == 1049 {
			return nil, fmt.Errorf("%w: the target holds no interrupted restore (%s has no record; a restore removes it when it ends); restore without resume", engines.ErrNothingToResume, stateDB)
		}
		if err != nil {
			return nil, mysqlx.Translate("reading the interrupted restore's record", err)
		}
		defer func() { _ = rows.Close() }()
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				return nil, err
			}
			st.done[s] = true
		}
		if err := rows.Err(); err != nil {
			return nil, mysqlx.Translate("reading the interrupted restore's record", err)
		}
		if len(st.done) == 0 {
			return nil, fmt.Errorf("%w: the target holds no interrupted restore of %s; restore without resume", engines.ErrNothingToResume, key)
		}
		return st, nil
	}
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS `" + stateDB + "`",
		"CREATE TABLE IF NOT EXISTS " + stateTable + " (restore_key VARBINARY(1024) NOT NULL, step VARBINARY(2048) NOT NULL, PRIMARY KEY (restore_key, step)) ENGINE=InnoDB",
		"DELETE FROM " + stateTable + " WHERE restore_key = ?",
		// The first row: a record exists from now on, so a resume knows
		// there is something to go on with.
		"INSERT INTO " + stateTable + " VALUES (?, 'started')",
	} {
		var args []any
		if strings.Contains(q, "?") {
			args = []any{key}
		}
		if _, err := ctl.ExecContext(ctx, q, args...); err != nil {
			r.warn("this restore cannot be resumed if it is interrupted: recording its progress in %s failed (%v); grant the restore's user CREATE, INSERT and DELETE on %s.* for that", stateDB, err, stateDB)
			return nil, nil
		}
	}
	return st, nil
}

// has reports whether a resumed restore already did step.
func (s *restoreState) has(step string) bool { return s != nil && s.done[step] }

// resuming reports whether this run goes on with an interrupted one.
func (s *restoreState) resuming() bool { return s != nil && len(s.done) > 0 }

// mark records step on c, in c's transaction if one is open.
func (s *restoreState) mark(ctx context.Context, c *sql.Conn, step string) error {
	if s == nil {
		return nil
	}
	_, err := c.ExecContext(ctx, "INSERT IGNORE INTO "+stateTable+" VALUES (?, ?)", s.key, step)
	return mysqlx.Translate("recording the restore's progress ("+step+")", err)
}

// finish removes the record, and the database once no restore has one.
func (s *restoreState) finish(ctx context.Context, c *sql.Conn) error {
	if s == nil {
		return nil
	}
	if _, err := c.ExecContext(ctx, "DELETE FROM "+stateTable+" WHERE restore_key = ?", s.key); err != nil {
		return mysqlx.Translate("removing the restore's record", err)
	}
	var n int
	if err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+stateTable).Scan(&n); err != nil {
		return mysqlx.Translate("removing the restore's record", err)
	}
	if n == 0 {
		if _, err := c.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+stateDB+"`"); err != nil {
			return mysqlx.Translate("removing "+stateDB, err)
		}
	}
	return nil
}

func pieceStep(stream string) string   { return "piece:" + stream }
func tableStep(db, name string) string { return "table:" + db + "." + name }

// tableExists reports whether db.name exists on the target.
func tableExists(ctx context.Context, c *sql.Conn, db, name string) (bool, error) {
	var n int
	err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?", db, name).Scan(&n)
	return n > 0, mysqlx.Translate("looking for "+db+"."+name, err)
}

// addIndexesAgain adds a resumed table's secondary indexes one clause at a
// time, skipping those already there: the interrupted run's ALTER may have
// finished on the server after its client went away.
func addIndexesAgain(ctx context.Context, c *sql.Conn, db, name string, adds []string) error {
	for _, a := range adds {
		_, err := c.ExecContext(ctx, "ALTER TABLE "+qname(db, name)+" "+a)
		switch mysqlx.ServerErrorNumber(err) {
		case 0:
		case 1061, 1826, 1022: // duplicate key name, foreign key name, key
		default:
			return mysqlx.Translate("adding the secondary indexes of "+db+"."+name, err)
		}
	}
	return nil
}

// dropPostObjects drops the views, routines, triggers and events a resumed
// restore creates, which the interrupted run may have created in part.
func (r *restoreRun) dropPostObjects(ctx context.Context, ctl *sql.Conn, sel *selection, posts map[string]*postDoc) error {
	var stmts []string
	for _, d := range sel.dbs {
		td := r.target(d)
		for _, v := range posts[d].Views {
			if sel.tables == nil || sel.tables[d+"."+v.Name] {
				stmts = append(stmts, "DROP VIEW IF EXISTS "+qname(td, v.Name))
			}
		}
		for _, t := range posts[d].Triggers {
			if sel.table(d, t.Table) {
				stmts = append(stmts, "DROP TRIGGER IF EXISTS "+qname(td, t.Name))
			}
		}
		if sel.tables != nil {
			continue
		}
		for _, o := range posts[d].Routines {
			if strings.HasPrefix(o.Type, "PACKAGE") {
				continue // dropped below, in Oracle mode
			}
			stmts = append(stmts, "DROP "+o.Type+" IF EXISTS "+qname(td, o.Name))
		}
		for _, o := range posts[d].Events {
			stmts = append(stmts, "DROP EVENT IF EXISTS "+qname(td, o.Name))
		}
	}
	for _, s := range stmts {
		if _, err := ctl.ExecContext(ctx, s); err != nil {
			return mysqlx.Translate("resuming: "+strings.ToLower(s), err)
		}
	}
	for _, d := range sel.dbs {
		if sel.tables != nil {
			continue
		}
		for _, o := range posts[d].Routines {
			if !strings.HasPrefix(o.Type, "PACKAGE") {
				continue
			}
			// MariaDB before 11.4 parses packages in Oracle mode only.
			for _, s := range []string{"SET @tidemark_sql_mode = @@SESSION.sql_mode, SESSION sql_mode = 'ORACLE'",
				"DROP " + o.Type + " IF EXISTS " + qname(r.target(d), o.Name), "SET SESSION sql_mode = @tidemark_sql_mode"} {
				if _, err := ctl.ExecContext(ctx, s); err != nil {
					return mysqlx.Translate("resuming: dropping "+strings.ToLower(o.Type)+" "+r.target(d)+"."+o.Name, err)
				}
			}
		}
	}
	return nil
}

// errUserExists is CREATE USER's refusal of an account that exists (1396),
// which a resumed restore of accounts expects for those done before.
func errUserExists(err error) bool {
	return err != nil && mysqlx.ServerErrorNumber(err) == 1396
}

// hasRecord reports whether the target holds an interrupted restore's
// record under key (false when it cannot tell).
func hasRecord(ctx context.Context, c *sql.Conn, key string) bool {
	var n int
	err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+stateTable+" WHERE restore_key = ?", key).Scan(&n)
	return err == nil && n > 0
}
