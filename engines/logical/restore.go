package logical

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"golang.org/x/sync/errgroup"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

// ErrTargetNotEmpty is returned (wrapped, with the names) when the target
// already holds objects the restore would create and DropExisting is off.
var ErrTargetNotEmpty = errors.New("target already holds objects to restore")

// ErrHistoryRefused is returned (wrapped, with the tables and the reason)
// when a backup holds row history the target cannot write.
var ErrHistoryRefused = errors.New("the target cannot write row history")

// restoreSessionSQL makes a load session read values exactly as they were
// dumped: TIMESTAMPs in UTC, 0 kept in AUTO_INCREMENT columns, and no
// foreign-key checks, because tables load in parallel in no particular
// order (the data was consistent on the source). The binlog stays on, so
// replicas of the target receive the restore, unless NoBinlog.
const restoreSessionSQL = "SET SESSION time_zone = '+00:00', SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', " +
	"SESSION foreign_key_checks = 0, SESSION net_read_timeout = 3600, SESSION net_write_timeout = 3600"

type restoreRun struct {
	p         engines.RestoreParams
	srv       *mysqlx.Server
	db        *sql.DB
	meta      metaDoc
	rename    map[string]string
	useInsert atomic.Bool
	rows      atomic.Int64
	bytes     atomic.Int64
	total     int64
	tables    int
	done      atomic.Int64
	warnMu    sync.Mutex
	warnings  []string
	state     *restoreState // progress on the target; nil: not recorded
}

func (r *restoreRun) warn(format string, args ...any) {
	r.warnMu.Lock()
	r.warnings = append(r.warnings, fmt.Sprintf(format, args...))
	r.warnMu.Unlock()
}

func (r *restoreRun) progress(phase string) {
	if r.p.Progress == nil {
		return
	}
	r.p.Progress(engines.Progress{Phase: phase, BytesDone: r.bytes.Load(), BytesTotal: r.total,
		RowsDone: r.rows.Load(), TablesDone: int(r.done.Load()), Tables: r.tables})
}

func (r *restoreRun) target(db string) string {
	if n, ok := r.rename[db]; ok {
		return n
	}
	return db
}

// selection is what a partial restore keeps.
type selection struct {
	dbs     []string
	tables  map[string]bool // "db.table" (original names); nil: all
	partial bool
	// views are the names in tables that are no table of the backup: each
	// must be a view of its database's post stream (checkViews).
	views []string
}

func (s *selection) table(db, name string) bool {
	return slices.Contains(s.dbs, db) && (s.tables == nil || s.tables[db+"."+name])
}

// Restore implements engines.Engine. Order of work: check that the target
// holds none of the tables, views, routines and events to create (or drop
// them with DropExisting) before changing anything; create databases,
// sequences, and tables with their plain secondary indexes held back; load
// the data pieces in parallel, each in its own transaction, adding a
// table's indexes in one ALTER TABLE once its last piece is in; give
// sequences their state; then create routines, views (dependency order),
// triggers and events, and
// with IncludeUsers the accounts and grants. Foreign-key checks are off in
// the load sessions (pieces arrive in any order); the binlog stays on.
//
// Cancelled, or failing, it kills what its connections still run on the
// server (mysqlx.Sessions) before it returns: an ALTER TABLE left running
// would go on beside the instance's next restore.
func (e *Engine) Restore(ctx context.Context, p engines.RestoreParams) (_ *engines.RestoreResult, err error) {
	if p.Source == nil {
		return nil, errors.New("logical restore: no source")
	}
	m := p.Source.Manifest()
	if m.GetEngine() != Name {
		return nil, fmt.Errorf("backup %s was written by engine %q, not %q", m.GetBackupId(), m.GetEngine(), Name)
	}
	r := &restoreRun{p: p, rename: p.RenameDB}
	if err := r.readJSON(ctx, streamMeta, &r.meta); err != nil {
		return nil, err
	}
	if r.meta.Format > formatVersion {
		return nil, fmt.Errorf("backup %s has logical format %d; this tidemark reads up to %d: upgrade it", m.GetBackupId(), r.meta.Format, formatVersion)
	}
	sel, err := r.selectObjects()
	if err != nil {
		return nil, err
	}

	dsn, err := mysqlx.ParseDSN(p.DSN)
	if err != nil {
		return nil, err
	}
	n := p.Parallel
	if n <= 0 {
		n = DefaultParallel()
	}
	// sql_log_bin is set as the driver opens each connection, so no
	// connection of the pool can write to the binlog.
	db, sessions, err := dsn.OpenSessions(func(c *mysql.Config) {
		if p.NoBinlog {
			c.Params = maps.Clone(c.Params)
			if c.Params == nil {
				c.Params = map[string]string{}
			}
			c.Params["sql_log_bin"] = "0"
		}
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = db.Close() }()
	stopKill := sessions.KillOnCancel(ctx)
	defer func() { err = mysqlx.JoinKill(err, stopKill(err)) }()
	db.SetMaxOpenConns(n + 1)
	db.SetMaxIdleConns(n + 1)
	r.db = db
	connectOp := "connecting to " + dsn.Addr() + " as " + dsn.User()
	need := ""
	if p.NoBinlog {
		connectOp += " with sql_log_bin=0 (--no-binlog)"
		need = "BINLOG ADMIN (SUPER on MySQL), or restore without --no-binlog"
	}
	ctl, err := db.Conn(ctx)
	if err != nil {
		return nil, mysqlx.TranslateNeed(connectOp, err, need)
	}
	defer func() { _ = ctl.Close() }()
	if err := ctl.PingContext(ctx); err != nil {
		return nil, mysqlx.TranslateNeed(connectOp, err, need)
	}
	if r.srv, err = mysqlx.Detect(ctx, ctl); err != nil {
		return nil, err
	}
	if err := initRestoreSession(ctx, ctl, r.srv); err != nil {
		return nil, err
	}
	if err := r.checkHistoryTarget(ctx, ctl, sel, dsn.User()); err != nil {
		return nil, err
	}
	r.noteCurrentOnly(sel)
	var localInfile int
	if err := ctl.QueryRowContext(ctx, "SELECT @@GLOBAL.local_infile").Scan(&localInfile); err == nil && localInfile == 0 {
		r.useInsert.Store(true)
		r.warn("the target has local_infile=OFF: loading with batched INSERTs, which is slower; SET GLOBAL local_infile=ON for LOAD DATA")
	}

	schemas := map[string]*schemaDoc{}
	posts := map[string]*postDoc{}
	for _, d := range sel.dbs {
		var s schemaDoc
		if err := r.readJSON(ctx, schemaStream(d), &s); err != nil {
			return nil, err
		}
		var po postDoc
		if err := r.readJSON(ctx, postStream(d), &po); err != nil {
			return nil, err
		}
		schemas[d], posts[d] = &s, &po
	}
	if err := r.checkViews(sel, posts); err != nil {
		return nil, err
	}
	var targets []string
	for _, d := range sel.dbs {
		targets = append(targets, r.target(d))
	}
	key := stateKey(m.GetBackupId(), targets)
	if !p.Resume {
		if err := r.checkTarget(ctx, ctl, sel, schemas, posts); err != nil {
			if errors.Is(err, ErrTargetNotEmpty) && hasRecord(ctx, ctl, key) {
				return nil, fmt.Errorf("%w (an interrupted restore of this backup left them: go on with it with resume)", err)
			}
			return nil, err
		}
	}
	if r.state, err = r.openState(ctx, ctl, key, p.Resume); err != nil {
		return nil, err
	}
	st := r.state

	// Schema: databases and tables, with secondary indexes held back.
	r.progress("schema")
	referenced := map[string]bool{} // "db.table" targets of foreign keys
	for _, d := range sel.dbs {
		for _, t := range schemas[d].Tables {
			for _, ref := range referencedTables(t.Create) {
				if strings.Contains(ref, "`.`") {
					referenced[strings.ReplaceAll(strings.Trim(ref, "`"), "`.`", ".")] = true
				} else {
					referenced[d+"."+strings.Trim(ref, "`")] = true
				}
			}
		}
	}
	// Sequences before any table: a column default may draw from one
	// (DEFAULT NEXTVAL(s)), and the server checks that it exists. A resumed
	// restore creates only what is missing.
	indexes := map[string][]string{} // "db.table" (original) → ADD clauses
	schemaDone := st.has(stepSchema)
	for _, seqPass := range []bool{true, false} {
		for _, d := range sel.dbs {
			td := r.target(d)
			if seqPass && !schemaDone {
				if _, err := ctl.ExecContext(ctx, createDatabaseSQL(schemas[d].Create, d, td)); err != nil {
					return nil, mysqlx.TranslateNeed("creating database "+td, err, "CREATE on "+qi(td)+".*")
				}
			}
			if _, err := ctl.ExecContext(ctx, "USE "+qi(td)); err != nil {
				return nil, mysqlx.Translate("using database "+td, err)
			}
			for _, t := range schemas[d].Tables {
				if !sel.table(d, t.Name) || (t.Kind == "sequence") != seqPass {
					continue
				}
				create := !schemaDone
				if create && st.resuming() {
					exists, err := tableExists(ctx, ctl, td, t.Name)
					if err != nil {
						return nil, err
					}
					create = !exists
				}
				if err := r.createTable(ctx, ctl, d, t, referenced[d+"."+t.Name], indexes, create); err != nil {
					return nil, err
				}
			}
		}
	}

	if !schemaDone {
		if err := st.mark(ctx, ctl, stepSchema); err != nil {
			return nil, err
		}
	}

	// Data, then each table's indexes as soon as its last piece is in.
	var tables []*tableMeta
	for i := range r.meta.Tables {
		t := &r.meta.Tables[i]
		if !sel.table(t.DB, t.Name) {
			continue
		}
		if t.SequenceRow != nil || t.Sequence != nil {
			if err := r.setSequence(ctx, ctl, t); err != nil {
				return nil, err
			}
			continue
		}
		tables = append(tables, t)
		for _, pc := range t.Pieces {
			r.total += pc.Bytes
		}
	}
	r.tables = len(tables)
	if err := r.loadTables(ctx, n, tables, indexes); err != nil {
		return nil, err
	}

	r.progress("post")
	if !st.has(stepPost) {
		if st.resuming() {
			if err := r.dropPostObjects(ctx, ctl, sel, posts); err != nil {
				return nil, err
			}
		}
		if err := r.createPostObjects(ctx, ctl, sel, posts); err != nil {
			return nil, err
		}
		if err := st.mark(ctx, ctl, stepPost); err != nil {
			return nil, err
		}
	}
	if p.IncludeUsers && r.meta.Users && !st.has(stepUsers) {
		var u usersDoc
		if err := r.readJSON(ctx, streamUsers, &u); err != nil {
			return nil, err
		}
		for _, s := range u.Statements {
			if _, err := ctl.ExecContext(ctx, s); err != nil && (!st.resuming() || !errUserExists(err)) {
				return nil, mysqlx.TranslateNeed("restoring accounts ("+statementHead(s)+")", err, "CREATE USER and the granted privileges WITH GRANT OPTION")
			}
		}
		if err := st.mark(ctx, ctl, stepUsers); err != nil {
			return nil, err
		}
	} else if p.IncludeUsers && !r.meta.Users {
		r.warn("the backup holds no users and grants (it was taken without IncludeUsers)")
	}
	if err := st.finish(ctx, ctl); err != nil {
		return nil, err
	}
	r.progress("done")
	return &engines.RestoreResult{Tables: len(tables), Rows: r.rows.Load(), Warnings: r.warnings}, nil
}

// createTable creates one table or sequence of database d in the session's
// current database (its target), recording the secondary indexes it holds
// back in indexes.
func (r *restoreRun) createTable(ctx context.Context, ctl *sql.Conn, d string, t tableDDL, referenced bool, indexes map[string][]string, exec bool) error {
	td := r.target(d)
	create, adds := t.Create, []string(nil)
	switch {
	case t.Kind == "table":
		create, adds = splitSecondaryIndexes(create, hasForeignKeys(create) || referenced)
		create = renameReferences(create, r.rename)
	case !strings.HasPrefix(create, "CREATE SEQUENCE"):
		r.warn("sequence %s.%s: the backup holds its columns but not its options (it was taken by a tidemark before sequences were exact): "+
			"it is restored with the default start, increment, bounds and cache, and its next value", td, t.Name)
	}
	if !exec {
		indexes[d+"."+t.Name] = adds // the resumed table exists: only its indexes
		return nil
	}
	if _, err := ctl.ExecContext(ctx, create); err != nil {
		if mysqlx.ServerErrorNumber(err) == 1146 && strings.Contains(create, "nextval(") {
			return fmt.Errorf("creating table %s.%s: a column default draws from a sequence that is not restored: restore the sequence too (name it in the tables): %w",
				td, t.Name, err)
		}
		return mysqlx.TranslateNeed("creating "+t.Kind+" "+td+"."+t.Name, err, "CREATE on "+qi(td)+".*")
	}
	indexes[d+"."+t.Name] = adds
	return nil
}

// setSequence gives a created sequence the source's state row: definition,
// next_not_cached_value and cycle_count, all at once. SETVAL cannot do
// that: it keeps no round below the current one, and it ignores a value
// behind the new sequence's start (a sequence restarted below its START),
// which is how a mariadb-dump restore loses both.
func (r *restoreRun) setSequence(ctx context.Context, ctl *sql.Conn, t *tableMeta) error {
	name := qname(r.target(t.DB), t.Name)
	op := "setting sequence " + r.target(t.DB) + "." + t.Name
	if t.SequenceRow == nil { // a backup from before sequence_row
		_, err := ctl.ExecContext(ctx, fmt.Sprintf("SELECT SETVAL(%s, %d, 0)", name, *t.Sequence))
		return mysqlx.Translate(op, err)
	}
	row := t.SequenceRow
	if len(row.Columns) == 0 || len(row.Columns) != len(row.Values) {
		return fmt.Errorf("backup %s: sequence %s.%s: %d columns and %d values in its row: the backup is damaged",
			r.p.Source.Manifest().GetBackupId(), t.DB, t.Name, len(row.Columns), len(row.Values))
	}
	cols := make([]string, len(row.Columns))
	for i, c := range row.Columns {
		if !isInteger(row.Values[i]) {
			return fmt.Errorf("backup %s: sequence %s.%s: column %s holds %q, not an integer: the backup is damaged",
				r.p.Source.Manifest().GetBackupId(), t.DB, t.Name, c, row.Values[i])
		}
		cols[i] = qi(c)
	}
	_, err := ctl.ExecContext(ctx, "INSERT INTO "+name+" ("+strings.Join(cols, ", ")+") VALUES ("+strings.Join(row.Values, ", ")+")")
	return mysqlx.Translate(op, err)
}

func (r *restoreRun) readJSON(ctx context.Context, name string, v any) error {
	rc, err := r.p.Source.OpenStream(ctx, name)
	if err != nil {
		return fmt.Errorf("backup %s: %w", r.p.Source.Manifest().GetBackupId(), err)
	}
	defer func() { _ = rc.Close() }()
	return readJSON(rc, name, v)
}

func initRestoreSession(ctx context.Context, c *sql.Conn, srv *mysqlx.Server) error {
	stmts := []string{restoreSessionSQL}
	if srv.IsMariaDB() {
		stmts = append(stmts, "SET SESSION max_statement_time = 0")
	}
	for _, s := range stmts {
		if _, err := c.ExecContext(ctx, s); err != nil {
			return mysqlx.Translate("setting up a restore session", err)
		}
	}
	return nil
}

// checkHistoryTarget refuses, before anything is written, a restore of
// tables with their row history (tableMeta.History) onto a target that
// cannot write it. MariaDB ≥ 10.11 writes a row's period as given under
// system_versioning_insert_history, where secure_timestamp lets the
// session set its time: NO, anyone; SUPER or REPLICATION, a user with
// SUPER or BINLOG REPLAY; YES, nobody. The server checks the rows exactly
// as it checks SET timestamp, so that is the probe.
func (r *restoreRun) checkHistoryTarget(ctx context.Context, ctl *sql.Conn, sel *selection, user string) error {
	var tables []string
	for _, t := range r.meta.Tables {
		if t.History && sel.table(t.DB, t.Name) {
			tables = append(tables, r.target(t.DB)+"."+t.Name)
		}
	}
	if len(tables) == 0 {
		return nil
	}
	why, err := historyRefusal(ctx, ctl, r.srv, user)
	if err != nil || why == "" {
		return err
	}
	return fmt.Errorf("%w: backup %s holds the row history of %s (it was taken with --history), and %s; restore onto a server that can write it, or leave these tables out (--tables)",
		ErrHistoryRefused, r.p.Source.Manifest().GetBackupId(), strings.Join(tables, ", "), why)
}

// historyRefusal says why the session on ctl cannot write row history, or
// "" when it can. It leaves the session as it found it.
func historyRefusal(ctx context.Context, ctl *sql.Conn, srv *mysqlx.Server, user string) (string, error) {
	const op = "checking that the target can write row history"
	if !srv.IsMariaDB() {
		return "the target, " + srv.String() + ", has no system-versioned tables", nil
	}
	if _, err := ctl.ExecContext(ctx, "SET SESSION system_versioning_insert_history = ON"); err != nil {
		if mysqlx.ServerErrorNumber(err) == 1193 { // unknown system variable
			return "the target, " + srv.String() + ", cannot write it (system_versioning_insert_history came in MariaDB 10.11)", nil
		}
		return "", mysqlx.Translate(op, err)
	}
	defer func() {
		_, _ = ctl.ExecContext(context.WithoutCancel(ctx), "SET SESSION system_versioning_insert_history = OFF")
	}()
	_, err := ctl.ExecContext(ctx, "SET SESSION timestamp = UNIX_TIMESTAMP()")
	if err == nil {
		_, err = ctl.ExecContext(ctx, "SET SESSION timestamp = DEFAULT")
		return "", mysqlx.Translate(op, err)
	}
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return "", mysqlx.Translate(op, err)
	}
	switch me.Number {
	case 1290: // --secure-timestamp=YES
		return "the target runs with secure_timestamp=YES, which lets nobody write a row's time (it needs secure_timestamp NO, or SUPER with a user that has SUPER or BINLOG REPLAY; the option is set at server start)", nil
	case 1227: // access denied; the server's message names the privileges
		var mode string
		_ = ctl.QueryRowContext(ctx, "SELECT @@GLOBAL.secure_timestamp").Scan(&mode)
		return fmt.Sprintf("under the target's secure_timestamp=%s, %s may not write a row's time (%s): grant it one of those", mode, user, me.Message), nil
	}
	return "", mysqlx.Translate(op, err)
}

// noteCurrentOnly warns about system-versioned tables the backup holds
// with their current rows only: restored, their history starts at the
// restore.
func (r *restoreRun) noteCurrentOnly(sel *selection) {
	var tables []string
	for _, t := range r.meta.Tables {
		if t.CurrentOnly && sel.table(t.DB, t.Name) {
			tables = append(tables, r.target(t.DB)+"."+t.Name)
		}
	}
	if len(tables) == 0 {
		return
	}
	why := "it was taken without --history"
	if r.meta.History {
		why = "their periods are in transaction ids, which cannot be written back"
	}
	r.warn("the backup holds only the current rows of the system-versioned %s (%s): they are restored with the restore's time as their start, and no history",
		strings.Join(tables, ", "), why)
}

// selectObjects applies Databases, Tables and RenameDB, naming whatever
// they mention that the backup does not hold.
func (r *restoreRun) selectObjects() (*selection, error) {
	id := r.p.Source.Manifest().GetBackupId()
	sel := &selection{partial: len(r.p.Databases) > 0 || len(r.p.Tables) > 0}
	have := map[string]bool{}
	for _, d := range r.meta.Databases {
		have[d] = true
	}
	var missing []string
	for _, d := range r.p.Databases {
		if !have[d] {
			missing = append(missing, d)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("backup %s holds no database(s) %s (it has: %s)", id, strings.Join(missing, ", "), strings.Join(r.meta.Databases, ", "))
	}
	for from := range r.rename {
		if !have[from] {
			missing = append(missing, from)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("rename: backup %s holds no database(s) %s", id, strings.Join(missing, ", "))
	}
	if len(r.p.Tables) > 0 {
		sel.tables = map[string]bool{}
		known := map[string]bool{}
		for _, t := range r.meta.Tables {
			known[t.DB+"."+t.Name] = true
		}
		for _, t := range r.p.Tables {
			switch {
			case known[t]:
			case slices.ContainsFunc(r.meta.Databases, func(d string) bool { return strings.HasPrefix(t, d+".") }):
				sel.views = append(sel.views, t) // a view, if the database's post stream says so
			default:
				missing = append(missing, t)
			}
			sel.tables[t] = true
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("backup %s holds no table(s) or view(s) %s (name them as db.table)", id, strings.Join(missing, ", "))
		}
	}
	for _, d := range r.meta.Databases {
		if len(r.p.Databases) > 0 && !slices.Contains(r.p.Databases, d) {
			continue
		}
		if sel.tables != nil {
			used := false
			for t := range sel.tables {
				used = used || strings.HasPrefix(t, d+".")
			}
			if !used {
				continue
			}
		}
		sel.dbs = append(sel.dbs, d)
	}
	targets := map[string]string{}
	for _, d := range sel.dbs {
		t := r.target(d)
		if prev, ok := targets[t]; ok {
			return nil, fmt.Errorf("rename: databases %s and %s would both be restored into %s", prev, d, t)
		}
		targets[t] = d
	}
	return sel, nil
}

// checkViews makes sure that every name of Tables that is no table of the
// backup is one of its views.
func (r *restoreRun) checkViews(sel *selection, posts map[string]*postDoc) error {
	var missing []string
	for _, v := range sel.views {
		found := false
		for _, d := range sel.dbs {
			if name, ok := strings.CutPrefix(v, d+"."); ok && posts[d] != nil {
				found = found || slices.ContainsFunc(posts[d].Views, func(o objectDDL) bool { return o.Name == name })
			}
		}
		if !found {
			missing = append(missing, v)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("backup %s holds no table(s) or view(s) %s (name them as db.table)", r.p.Source.Manifest().GetBackupId(), strings.Join(missing, ", "))
	}
	return nil
}

// createDatabaseSQL turns SHOW CREATE DATABASE output into CREATE DATABASE
// IF NOT EXISTS under the target name, keeping the character set options.
func createDatabaseSQL(show, from, to string) string {
	opts := ""
	if i := strings.Index(show, qi(from)); i >= 0 {
		opts = show[i+len(qi(from)):]
	}
	return "CREATE DATABASE IF NOT EXISTS " + qi(to) + opts
}

// renameReferences renames databases in the lines of a CREATE TABLE that
// name other tables: foreign keys and defaults drawn from a sequence, which
// the server writes qualified (DEFAULT nextval(`db`.`s`)).
func renameReferences(create string, rename map[string]string) string {
	if len(rename) == 0 || !strings.Contains(create, "REFERENCES ") && !strings.Contains(create, "nextval(") {
		return create
	}
	lines := strings.Split(create, "\n")
	for i, l := range lines {
		if strings.Contains(l, "REFERENCES ") || strings.Contains(l, "nextval(") {
			lines[i] = renameQualified(l, rename)
		}
	}
	return strings.Join(lines, "\n")
}

// checkTarget refuses a target that already holds anything to be created,
// or with DropExisting drops it.
func (r *restoreRun) checkTarget(ctx context.Context, ctl *sql.Conn, sel *selection, schemas map[string]*schemaDoc, posts map[string]*postDoc) error {
	type obj struct{ kind, db, name string }
	want := map[obj]bool{}
	var targets []string
	for _, d := range sel.dbs {
		td := r.target(d)
		targets = append(targets, td)
		for _, t := range schemas[d].Tables {
			if sel.table(d, t.Name) {
				want[obj{"TABLE", td, t.Name}] = true
			}
		}
		for _, v := range posts[d].Views {
			if sel.tables == nil || sel.tables[d+"."+v.Name] {
				want[obj{"TABLE", td, v.Name}] = true
			}
		}
		if sel.tables == nil {
			for _, o := range posts[d].Routines {
				want[obj{o.Type, td, o.Name}] = true
			}
			for _, o := range posts[d].Events {
				want[obj{"EVENT", td, o.Name}] = true
			}
		}
	}
	if len(targets) == 0 {
		return nil
	}
	in := inList(len(targets))
	args := anyArgs(targets)
	var found []obj
	var views = map[obj]bool{}
	for _, q := range []string{
		"SELECT IF(TABLE_TYPE = 'VIEW', 'VIEW', 'TABLE'), TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA IN (" + in + ")",
		"SELECT ROUTINE_TYPE, ROUTINE_SCHEMA, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA IN (" + in + ")",
		"SELECT 'EVENT', EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA IN (" + in + ")",
	} {
		rows, err := ctl.QueryContext(ctx, q, args...)
		if err != nil {
			return mysqlx.Translate("checking the target for existing objects", err)
		}
		for rows.Next() {
			var o obj
			if err := rows.Scan(&o.kind, &o.db, &o.name); err != nil {
				_ = rows.Close()
				return err
			}
			key := o
			if o.kind == "VIEW" {
				key.kind = "TABLE"
			}
			if want[key] {
				found = append(found, o)
				views[o] = o.kind == "VIEW"
			}
		}
		_ = rows.Close()
		if err := rows.Err(); err != nil {
			return mysqlx.Translate("checking the target for existing objects", err)
		}
	}
	if len(found) == 0 {
		return nil
	}
	if !r.p.DropExisting {
		// Tables first, then views: what an operator looks for first.
		rank := func(o obj) int {
			switch o.kind {
			case "TABLE":
				return 0
			case "VIEW":
				return 1
			}
			return 2
		}
		sort.Slice(found, func(i, j int) bool {
			a, b := found[i], found[j]
			if rank(a) != rank(b) {
				return rank(a) < rank(b)
			}
			return strings.ToLower(a.kind)+" "+a.db+"."+a.name < strings.ToLower(b.kind)+" "+b.db+"."+b.name
		})
		var names []string
		for _, o := range found {
			names = append(names, strings.ToLower(o.kind)+" "+o.db+"."+o.name)
		}
		const show = 20
		more := ""
		if len(names) > show {
			more = fmt.Sprintf(" and %d more", len(names)-show)
			names = names[:show]
		}
		return fmt.Errorf("%w: %s%s; restore into another database (rename), drop them, or pass drop-existing to replace them",
			ErrTargetNotEmpty, strings.Join(names, ", "), more)
	}
	for _, o := range found {
		stmts := []string{"DROP " + o.kind + " IF EXISTS " + qname(o.db, o.name)}
		if strings.HasPrefix(o.kind, "PACKAGE") {
			// MariaDB before 11.4 parses packages in Oracle mode only
			// (SET STATEMENT comes too late: it applies after parsing).
			stmts = []string{"SET @tidemark_sql_mode = @@SESSION.sql_mode, SESSION sql_mode = 'ORACLE'", stmts[0], "SET SESSION sql_mode = @tidemark_sql_mode"}
		}
		for _, stmt := range stmts {
			if _, err := ctl.ExecContext(ctx, stmt); err != nil {
				return mysqlx.TranslateNeed("dropping "+strings.ToLower(o.kind)+" "+o.db+"."+o.name, err, "DROP on "+qi(o.db)+".*")
			}
		}
	}
	r.warn("dropped %d existing object(s) on the target before restoring", len(found))
	return nil
}

// loadTables loads every piece on n sessions, biggest tables first; the
// session that loads a table's last piece then adds its secondary indexes
// in one ALTER TABLE.
func (r *restoreRun) loadTables(ctx context.Context, n int, tables []*tableMeta, indexes map[string][]string) error {
	type job struct {
		t  *tableMeta
		pc pieceMeta
	}
	sorted := append([]*tableMeta(nil), tables...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Rows > sorted[j].Rows })
	st := r.state
	var jobs []job
	remaining := map[*tableMeta]*atomic.Int64{}
	var finishLater []*tableMeta // resumed tables whose pieces are all in
	for _, t := range sorted {
		td := r.target(t.DB)
		remaining[t] = new(atomic.Int64)
		if st.has(tableStep(td, t.Name)) {
			r.done.Add(1)
			continue
		}
		todo := t.Pieces
		if st.resuming() {
			if t.Locked {
				// Not transactional: a piece cut off by the interruption
				// left part of its rows, recorded or not. Load the table
				// again whole.
				if _, err := r.db.ExecContext(ctx, "TRUNCATE TABLE "+qname(td, t.Name)); err != nil {
					return mysqlx.Translate("resuming: emptying "+td+"."+t.Name+" to load it again", err)
				}
			} else {
				todo = slices.DeleteFunc(slices.Clone(todo), func(pc pieceMeta) bool { return st.has(pieceStep(pc.Stream)) })
			}
		}
		remaining[t].Store(int64(len(todo)))
		if len(todo) == 0 && len(t.Pieces) > 0 {
			finishLater = append(finishLater, t)
		}
		for _, pc := range todo {
			jobs = append(jobs, job{t, pc})
		}
	}
	finish := func(ctx context.Context, c *sql.Conn, t *tableMeta) error {
		r.done.Add(1)
		td := r.target(t.DB)
		if adds := indexes[t.DB+"."+t.Name]; len(adds) > 0 {
			r.progress("indexes")
			if st.resuming() {
				if err := addIndexesAgain(ctx, c, td, t.Name, adds); err != nil {
					return err
				}
			} else if _, err := c.ExecContext(ctx, "ALTER TABLE "+qname(td, t.Name)+" "+strings.Join(adds, ", ")); err != nil {
				return mysqlx.Translate("adding the secondary indexes of "+td+"."+t.Name, err)
			}
		}
		return st.mark(ctx, c, tableStep(td, t.Name))
	}
	// Tables with no piece (no columns to dump) only need their indexes.
	next := make(chan job)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(next)
		for _, j := range jobs {
			select {
			case next <- j:
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	})
	for range n {
		g.Go(func() error {
			c, err := r.db.Conn(gctx)
			if err != nil {
				return mysqlx.Translate("connecting for the load", err)
			}
			defer func() { _ = c.Close() }()
			if err := initRestoreSession(gctx, c, r.srv); err != nil {
				return err
			}
			for j := range next {
				if err := r.loadPiece(gctx, c, j.t, j.pc); err != nil {
					return err
				}
				r.progress("data")
				if remaining[j.t].Add(-1) == 0 {
					if err := finish(gctx, c, j.t); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, t := range sorted {
		if (len(t.Pieces) == 0 && !st.has(tableStep(r.target(t.DB), t.Name))) || slices.Contains(finishLater, t) {
			c, err := r.db.Conn(ctx)
			if err != nil {
				return mysqlx.Translate("connecting", err)
			}
			err = finish(ctx, c, t)
			_ = c.Close()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// createPostObjects creates routines, views (in dependency order: a view
// whose base is not there yet is retried after the others), triggers and
// events, each under the sql_mode it was defined with.
func (r *restoreRun) createPostObjects(ctx context.Context, ctl *sql.Conn, sel *selection, posts map[string]*postDoc) error {
	type pending struct {
		db string
		o  objectDDL
	}
	var views []pending
	for _, d := range sel.dbs {
		for _, v := range posts[d].Views {
			if sel.tables == nil || sel.tables[d+"."+v.Name] {
				views = append(views, pending{d, v})
			}
		}
	}
	exec := func(d string, o objectDDL, what string) error {
		td := r.target(d)
		op := "creating " + what + " " + td + "." + o.Name
		// The text is UTF-8 (it came over a utf8mb4 session). The object
		// keeps the character set of the client that created it, which
		// decides the character set of its string literals: the text is
		// sent in that character set, under it. The session is back to
		// utf8mb4 first: a statement that failed (a view retried later)
		// may have left another one.
		if _, err := ctl.ExecContext(ctx, "SET NAMES utf8mb4"); err != nil {
			return mysqlx.Translate(op, err)
		}
		create, err := r.inCharset(ctx, ctl, renameQualified(o.Create, r.rename), o.Charset)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		stmts := []string{"USE " + qi(td), "SET SESSION sql_mode = " + mysqlx.QuoteString(o.SQLMode)}
		if o.Charset != "" {
			stmts = append(stmts, "SET SESSION character_set_client = "+mysqlx.QuoteString(o.Charset))
		}
		if o.Collation != "" {
			// collation_connection keeps how its literals compare.
			stmts = append(stmts, "SET SESSION collation_connection = "+mysqlx.QuoteString(o.Collation))
		}
		if o.TimeZone != "" {
			stmts = append(stmts, "SET SESSION time_zone = "+mysqlx.QuoteString(o.TimeZone))
		}
		stmts = append(stmts, create)
		if o.Altered > 0 {
			// Only for an event, and not a reason to fail: a target with
			// secure_timestamp refuses it, and the event is created now.
			if _, err := ctl.ExecContext(ctx, "SET SESSION timestamp = "+strconv.FormatInt(o.Altered, 10)); err != nil {
				r.warn("event %s.%s is created with the target's time, which refuses SET timestamp (%v): if its schedule is over and it is not preserved, the target drops it",
					td, o.Name, err)
			} else {
				defer func() { _, _ = ctl.ExecContext(context.WithoutCancel(ctx), "SET SESSION timestamp = DEFAULT") }()
			}
		}
		for from, to := range r.rename {
			if from != to && namesUnquoted(o.Create, from) {
				r.warn("%s %s.%s names database %s unquoted (%s.): such names are not renamed, so it may still read or change %s; check its definition",
					what, td, o.Name, from, from, from)
			}
		}
		for _, s := range stmts {
			if _, err := ctl.ExecContext(ctx, s); err != nil {
				return mysqlx.Translate(op, err)
			}
			if s == create && what == "event" {
				// 1588: the schedule is over and the event not preserved,
				// so the server dropped it at once.
				var n int
				if err := ctl.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? AND EVENT_NAME = ?", td, o.Name).Scan(&n); err != nil {
					return mysqlx.Translate(op, err)
				}
				if n == 0 {
					r.warn("event %s.%s was dropped by the target as soon as it was created: its schedule is over and it is ON COMPLETION NOT PRESERVE", td, o.Name)
				}
			}
		}
		return nil
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = ctl.ExecContext(rctx, "SET NAMES utf8mb4")
		_ = initRestoreSession(rctx, ctl, r.srv)
	}()
	// Routines first: a view that calls a stored function cannot be
	// created before it (1305), while routine bodies are checked only
	// when they run.
	if sel.tables == nil {
		for _, d := range sel.dbs {
			for _, o := range posts[d].Routines {
				if err := exec(d, o, strings.ToLower(o.Type)); err != nil {
					return err
				}
			}
		}
	}
	for len(views) > 0 {
		var retry []pending
		var lastErr error
		for _, v := range views {
			if err := exec(v.db, v.o, "view"); err != nil {
				// 1146: a base table or view is missing (maybe not created
				// yet); 1305: a function (not restored with Tables).
				if num := mysqlx.ServerErrorNumber(err); num == 1146 || num == 1356 || num == 1305 {
					retry, lastErr = append(retry, v), err
					continue
				}
				return err
			}
		}
		if len(retry) == len(views) {
			if sel.partial {
				for _, v := range retry {
					r.warn("view %s.%s not restored: it refers to an object outside the restored set (%v)", r.target(v.db), v.o.Name, lastErr)
				}
				break
			}
			return lastErr
		}
		views = retry
	}
	for _, d := range sel.dbs {
		po := posts[d]
		for _, o := range po.Triggers {
			if sel.table(d, o.Table) {
				// The statement is as its creator wrote it, maybe with
				// the name and table qualified by the database: kept
				// as is, unless the database has a new name.
				if r.target(d) != d {
					o.Create = unqualifyTrigger(o.Create, o.Name, o.Table)
				}
				if err := exec(d, o, "trigger"); err != nil {
					return err
				}
			}
		}
		if sel.tables == nil {
			for _, o := range po.Events {
				if err := exec(d, o, "event"); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// inCharset returns the UTF-8 text in character set cs, the server
// converting it, on a session whose client character set is utf8mb4.
// UTF-8 and ASCII text need nothing. The conversion is checked both ways: a
// character cs cannot hold would become "?" and change the object.
func (r *restoreRun) inCharset(ctx context.Context, c *sql.Conn, text, cs string) (string, error) {
	if cs == "" || strings.HasPrefix(strings.ToLower(cs), "utf8") || isASCII(text) {
		return text, nil
	}
	if !charsetName.MatchString(cs) {
		return "", fmt.Errorf("backup %s: character set %q is not a name: the backup is damaged", r.p.Source.Manifest().GetBackupId(), cs)
	}
	var out []byte
	var back string
	op := "converting the definition to character set " + cs
	if err := c.QueryRowContext(ctx, "SELECT CAST(CONVERT(? USING "+cs+") AS BINARY)", text).Scan(&out); err != nil {
		return "", mysqlx.Translate(op, err)
	}
	if err := c.QueryRowContext(ctx, "SELECT CONVERT(CAST(CAST(? AS BINARY) AS CHAR CHARACTER SET "+cs+") USING utf8mb4)", out).Scan(&back); err != nil {
		return "", mysqlx.Translate(op, err)
	}
	if back != text {
		return "", fmt.Errorf("%s: it holds characters %s cannot represent", op, cs)
	}
	return string(out), nil
}

var charsetName = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// statementHead names an account statement without its password hash.
func statementHead(s string) string {
	if i := strings.Index(s, " IDENTIFIED"); i >= 0 {
		s = s[:i]
	}
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return s
}
