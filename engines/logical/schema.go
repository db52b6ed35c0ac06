package logical

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

// tableInfo is one table or view as discovered before the lock.
type tableInfo struct {
	DB, Name, Type, Engine      string
	Rows, DataLength, AvgRowLen int64
	Columns                     []columnInfo
	SplitKey                    string // single integer column of a PK or NOT NULL unique key
	SplitUnsigned               bool
	// History: a system-versioned table whose rows are dumped with their
	// history (FOR SYSTEM_TIME ALL) and period columns, which restore
	// writes through system_versioning_insert_history. Set by setHistory,
	// when the backup asks for history.
	History bool
	period  []columnInfo // ROW START and ROW END, when History
	pieces  []piece
}

type columnInfo struct {
	Name, DataType, ColumnType string
	Generated                  bool
	Period                     string // "ROW START" or "ROW END" for a system-versioned table's period columns
}

func (t *tableInfo) isView() bool     { return t.Type == "VIEW" }
func (t *tableInfo) isSequence() bool { return t.Type == "SEQUENCE" }

// transactional reports whether the table's rows come from the workers'
// consistent snapshots; others are dumped while writes are blocked.
func (t *tableInfo) transactional() bool {
	e := strings.ToLower(t.Engine)
	return e == "innodb" || e == "rocksdb" || e == "tokudb"
}

// dumpColumns are the columns that travel: generated ones are recomputed.
func (t *tableInfo) dumpColumns() []columnInfo {
	var out []columnInfo
	for _, c := range t.Columns {
		if !c.Generated {
			out = append(out, c)
		}
	}
	return append(out, t.period...)
}

func (t *tableInfo) versioned() bool { return t.Type == "SYSTEM VERSIONED" }

// setHistory is called for a backup with history (BackupParams.History)
// and decides whether a system-versioned table's history travels: when
// its period is kept in timestamps. The period columns are the named
// ones (GENERATED ALWAYS AS ROW START/END) or the implicit row_start and
// row_end. Periods in transaction ids (InnoDB's BIGINT UNSIGNED) cannot be
// written back, so such a table keeps only its current rows.
func (t *tableInfo) setHistory() {
	if !t.versioned() {
		return
	}
	var start, end *columnInfo
	for i := range t.Columns {
		switch t.Columns[i].Period {
		case "ROW START":
			start = &t.Columns[i]
		case "ROW END":
			end = &t.Columns[i]
		}
	}
	if start == nil || end == nil {
		start = &columnInfo{Name: "row_start", DataType: "timestamp", ColumnType: "timestamp(6)"}
		end = &columnInfo{Name: "row_end", DataType: "timestamp", ColumnType: "timestamp(6)"}
	}
	if start.DataType != "timestamp" || end.DataType != "timestamp" {
		return
	}
	t.History = true
	t.period = []columnInfo{*start, *end}
}

// fromClause is what a dump reads: with the history, every row version.
func (t *tableInfo) fromClause() string {
	if t.History {
		return qname(t.DB, t.Name) + " FOR SYSTEM_TIME ALL"
	}
	return qname(t.DB, t.Name)
}

// readPath is how a worker reads a piece's rows.
type readPath int

const (
	// readDriver: text rows through go-sql-driver (TLS or compressed
	// connections).
	readDriver readPath = iota
	// readWireText: text rows off the socket (mysqlx.Wire.Query), when the
	// server refuses prepared statements.
	readWireText
	// readWireBinary: binary rows off the socket (mysqlx.Wire.QueryBinary),
	// formatted on our side: the server formats no numbers or dates.
	readWireBinary
)

// selectExpr is how a column is read so that its text parses back to the
// same value.
//
// In the binary protocol every column is read as it is: the wire formats
// FLOAT exactly and YEAR in four digits, and integers come unpadded.
//
// As text, FLOAT prints with 6 digits unless widened to DOUBLE, and the
// driver turns YEAR 0000 into the number 0, which would load as 2000.
// Through the driver, integers are read as text too: the driver would parse
// each one and box it in an interface (an allocation per value) only for
// the encoder to print it back, and the server's text is the same decimal.
// ZEROFILL columns are the exception: the server pads their text, and the
// dump holds them unpadded. Off the wire every text value is the server's
// text already; only ZEROFILL needs unpadding there.
func selectExpr(c columnInfo, path readPath) string {
	if path == readWireBinary {
		return qi(c.Name)
	}
	wire := path == readWireText
	switch c.DataType {
	case "float":
		return qi(c.Name) + "+0e0"
	case "year":
		return "CONCAT(" + qi(c.Name) + ")"
	case "tinyint", "smallint", "mediumint", "int", "bigint":
		zerofill := strings.Contains(strings.ToLower(c.ColumnType), "zerofill")
		switch {
		case wire && zerofill:
			return qi(c.Name) + "+0"
		case !wire && !zerofill:
			return "CONCAT(" + qi(c.Name) + ")"
		}
	}
	return qi(c.Name)
}

func inList(n int) string { return strings.TrimSuffix(strings.Repeat("?,", n), ",") }

func anyArgs(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// listDatabases returns the databases to dump: the named ones (each must
// exist) or every one but the system schemas.
func listDatabases(ctx context.Context, q *sql.Conn, want []string, includeSystem bool) ([]string, error) {
	rows, err := q.QueryContext(ctx, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME")
	if err != nil {
		return nil, mysqlx.Translate("listing databases", err)
	}
	defer func() { _ = rows.Close() }()
	var all []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		all = append(all, s)
	}
	if err := rows.Err(); err != nil {
		return nil, mysqlx.Translate("listing databases", err)
	}
	if len(want) > 0 {
		var missing []string
		for _, w := range want {
			if !slices.Contains(all, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("database(s) not found on the server (or not visible to the user): %s", strings.Join(missing, ", "))
		}
		return want, nil
	}
	var out []string
	for _, s := range all {
		if s == "information_schema" || s == "performance_schema" {
			continue // never dumpable: the server builds them
		}
		if systemSchemas[s] && !includeSystem {
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

// listTables discovers tables, views, columns and split keys of dbs.
func listTables(ctx context.Context, q *sql.Conn, dbs []string) ([]*tableInfo, error) {
	if len(dbs) == 0 {
		return nil, nil
	}
	args := anyArgs(dbs)
	byName := map[[2]string]*tableInfo{}
	var tables []*tableInfo
	rows, err := q.QueryContext(ctx, `SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, IFNULL(ENGINE, ''),
		IFNULL(TABLE_ROWS, 0), IFNULL(DATA_LENGTH, 0), IFNULL(AVG_ROW_LENGTH, 0)
		FROM information_schema.TABLES WHERE TABLE_SCHEMA IN (`+inList(len(dbs))+`) ORDER BY TABLE_SCHEMA, TABLE_NAME`, args...)
	if err != nil {
		return nil, mysqlx.Translate("listing tables", err)
	}
	for rows.Next() {
		t := &tableInfo{}
		if err := rows.Scan(&t.DB, &t.Name, &t.Type, &t.Engine, &t.Rows, &t.DataLength, &t.AvgRowLen); err != nil {
			_ = rows.Close()
			return nil, err
		}
		tables = append(tables, t)
		byName[[2]string{t.DB, t.Name}] = t
	}
	_ = rows.Close()
	if err := rows.Err(); err != nil {
		return nil, mysqlx.Translate("listing tables", err)
	}

	rows, err = q.QueryContext(ctx, `SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IFNULL(EXTRA, '')
		FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN (`+inList(len(dbs))+`) ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION`, args...)
	if err != nil {
		return nil, mysqlx.Translate("listing columns", err)
	}
	for rows.Next() {
		var db, tn, extra string
		var c columnInfo
		if err := rows.Scan(&db, &tn, &c.Name, &c.DataType, &c.ColumnType, &extra); err != nil {
			_ = rows.Close()
			return nil, err
		}
		c.DataType = strings.ToLower(c.DataType)
		x := strings.ToUpper(extra)
		c.Generated = strings.Contains(x, "VIRTUAL GENERATED") || strings.Contains(x, "STORED GENERATED") || strings.Contains(x, "PERSISTENT GENERATED")
		if t := byName[[2]string{db, tn}]; t != nil {
			t.Columns = append(t.Columns, c)
		}
	}
	_ = rows.Close()
	if err := rows.Err(); err != nil {
		return nil, mysqlx.Translate("listing columns", err)
	}
	if err := readPeriods(ctx, q, args, dbs, tables, byName); err != nil {
		return nil, err
	}

	// Single-column unique keys; NULLABLE is '' for a NOT NULL column.
	rows, err = q.QueryContext(ctx, `SELECT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, MIN(COLUMN_NAME), MIN(NULLABLE)
		FROM information_schema.STATISTICS WHERE NON_UNIQUE = 0 AND TABLE_SCHEMA IN (`+inList(len(dbs))+`)
		GROUP BY TABLE_SCHEMA, TABLE_NAME, INDEX_NAME HAVING COUNT(*) = 1`, args...)
	if err != nil {
		return nil, mysqlx.Translate("listing keys", err)
	}
	for rows.Next() {
		var db, tn, idx, col, nullable string
		if err := rows.Scan(&db, &tn, &idx, &col, &nullable); err != nil {
			_ = rows.Close()
			return nil, err
		}
		t := byName[[2]string{db, tn}]
		if t == nil || nullable != "" || (t.SplitKey != "" && idx != "PRIMARY") {
			continue
		}
		for _, c := range t.Columns {
			if c.Name == col && isIntegerType(c.DataType) && !c.Generated {
				t.SplitKey, t.SplitUnsigned = col, strings.Contains(strings.ToLower(c.ColumnType), "unsigned")
			}
		}
	}
	_ = rows.Close()
	if err := rows.Err(); err != nil {
		return nil, mysqlx.Translate("listing keys", err)
	}
	return tables, nil
}

// readPeriods finds the period columns of system-versioned tables (named
// ones are GENERATED ALWAYS AS ROW START/END; the server reports them as
// stored generated columns), which setHistory looks at. Only MariaDB has
// such tables, and only it is asked.
func readPeriods(ctx context.Context, q *sql.Conn, args []any, dbs []string, tables []*tableInfo, byName map[[2]string]*tableInfo) error {
	versioned := false
	for _, t := range tables {
		versioned = versioned || t.versioned()
	}
	if !versioned {
		return nil
	}
	rows, err := q.QueryContext(ctx, `SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, UPPER(GENERATION_EXPRESSION)
		FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN (`+inList(len(dbs))+`) AND GENERATION_EXPRESSION IN ('ROW START', 'ROW END')`, args...)
	if err != nil {
		return mysqlx.Translate("listing period columns", err)
	}
	for rows.Next() {
		var db, tn, col, expr string
		if err := rows.Scan(&db, &tn, &col, &expr); err != nil {
			_ = rows.Close()
			return err
		}
		if t := byName[[2]string{db, tn}]; t != nil {
			for i := range t.Columns {
				if t.Columns[i].Name == col {
					t.Columns[i].Period = expr
				}
			}
		}
	}
	_ = rows.Close()
	if err := rows.Err(); err != nil {
		return mysqlx.Translate("listing period columns", err)
	}
	return nil
}

func isIntegerType(t string) bool {
	switch t {
	case "tinyint", "smallint", "mediumint", "int", "integer", "bigint":
		return true
	}
	return false
}

// showRow runs a SHOW statement and returns its first row by lower-cased
// column name; NULL columns are absent.
func showRow(ctx context.Context, q *sql.Conn, query string) (map[string]string, error) {
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, err
		}
		return nil, sql.ErrNoRows
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for i, c := range cols {
		if vals[i].Valid {
			out[strings.ToLower(c)] = vals[i].String
		}
	}
	return out, rows.Err()
}

// readSchema reads the CREATE statements of dbs' databases, tables and
// sequences, and of the objects created after the data.
func readSchema(ctx context.Context, q *sql.Conn, dbs []string, tables []*tableInfo) (map[string]*schemaDoc, map[string]*postDoc, error) {
	schemas := map[string]*schemaDoc{}
	posts := map[string]*postDoc{}
	for _, db := range dbs {
		r, err := showRow(ctx, q, "SHOW CREATE DATABASE "+qi(db))
		if err != nil {
			return nil, nil, mysqlx.Translate("reading the definition of database "+db, err)
		}
		schemas[db] = &schemaDoc{Database: db, Create: r["create database"]}
		posts[db] = &postDoc{Database: db}
	}
	for _, t := range tables {
		if t.isView() {
			r, err := showRow(ctx, q, "SHOW CREATE VIEW "+qname(t.DB, t.Name))
			if err != nil {
				return nil, nil, mysqlx.TranslateNeed("reading view "+t.DB+"."+t.Name, err, "SHOW VIEW on "+qi(t.DB)+".*")
			}
			posts[t.DB].Views = append(posts[t.DB].Views, objectDDL{Name: t.Name, Create: r["create view"],
				Charset: r["character_set_client"], Collation: r["collation_connection"]})
			continue
		}
		// A sequence's SHOW CREATE TABLE has its columns but none of its
		// options: a table created from it starts at 1 and steps by 1.
		kind, show := "table", "SHOW CREATE TABLE "
		if t.isSequence() {
			kind, show = "sequence", "SHOW CREATE SEQUENCE "
		}
		r, err := showRow(ctx, q, show+qname(t.DB, t.Name))
		if err != nil {
			return nil, nil, mysqlx.TranslateNeed("reading "+kind+" "+t.DB+"."+t.Name, err, "SELECT on "+qi(t.DB)+".*")
		}
		schemas[t.DB].Tables = append(schemas[t.DB].Tables, tableDDL{Name: t.Name, Kind: kind, Create: r["create table"]})
	}
	args := anyArgs(dbs)

	type obj struct{ db, name, typ, table string }
	list := func(query, what string) ([]obj, error) {
		if len(dbs) == 0 {
			return nil, nil // a server with no database to back up: "IN ()" is a syntax error
		}
		rows, err := q.QueryContext(ctx, query, args...)
		if err != nil {
			return nil, mysqlx.Translate("listing "+what, err)
		}
		defer func() { _ = rows.Close() }()
		var out []obj
		for rows.Next() {
			var o obj
			if err := rows.Scan(&o.db, &o.name, &o.typ, &o.table); err != nil {
				return nil, err
			}
			out = append(out, o)
		}
		return out, mysqlx.Translate("listing "+what, rows.Err())
	}
	in := inList(len(dbs))
	routines, err := list("SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE, '' FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA IN ("+in+") ORDER BY 1, 2, 3", "routines")
	if err != nil {
		return nil, nil, err
	}
	for _, o := range routines {
		r, err := showRow(ctx, q, "SHOW CREATE "+o.typ+" "+qname(o.db, o.name))
		if err != nil {
			return nil, nil, mysqlx.TranslateNeed("reading "+strings.ToLower(o.typ)+" "+o.db+"."+o.name, err, "SELECT on mysql.proc (or SHOW CREATE ROUTINE)")
		}
		create := r["create "+strings.ToLower(o.typ)]
		if create == "" {
			return nil, nil, &mysqlx.Error{Kind: mysqlx.ErrPrivilege, Op: "reading " + strings.ToLower(o.typ) + " " + o.db + "." + o.name,
				Msg: "the server hides its body from this user: grant SELECT on mysql.proc (MariaDB < 11.3), SHOW CREATE ROUTINE, or back up as the routine's definer"}
		}
		posts[o.db].Routines = append(posts[o.db].Routines, objectDDL{Name: o.name, Type: o.typ, Create: create,
			SQLMode: r["sql_mode"], Charset: r["character_set_client"], Collation: r["collation_connection"]})
	}
	triggers, err := list("SELECT TRIGGER_SCHEMA, TRIGGER_NAME, '', EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA IN ("+in+") ORDER BY TRIGGER_SCHEMA, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER", "triggers")
	if err != nil {
		return nil, nil, err
	}
	for _, o := range triggers {
		r, err := showRow(ctx, q, "SHOW CREATE TRIGGER "+qname(o.db, o.name))
		if err != nil {
			return nil, nil, mysqlx.TranslateNeed("reading trigger "+o.db+"."+o.name, err, "TRIGGER on "+qi(o.db)+".*")
		}
		posts[o.db].Triggers = append(posts[o.db].Triggers, objectDDL{Name: o.name, Table: o.table, Create: r["sql original statement"],
			SQLMode: r["sql_mode"], Charset: r["character_set_client"], Collation: r["collation_connection"]})
	}
	// typ holds when the event was last changed, in seconds since the epoch.
	events, err := list("SELECT EVENT_SCHEMA, EVENT_NAME, IFNULL(CONCAT(UNIX_TIMESTAMP(LAST_ALTERED)), ''), '' FROM information_schema.EVENTS WHERE EVENT_SCHEMA IN ("+in+") ORDER BY 1, 2", "events")
	if err != nil {
		return nil, nil, err
	}
	for _, o := range events {
		altered, _ := strconv.ParseInt(o.typ, 10, 64)
		r, err := showRow(ctx, q, "SHOW CREATE EVENT "+qname(o.db, o.name))
		if err != nil {
			return nil, nil, mysqlx.TranslateNeed("reading event "+o.db+"."+o.name, err, "EVENT on "+qi(o.db)+".*")
		}
		posts[o.db].Events = append(posts[o.db].Events, objectDDL{Name: o.name, Create: r["create event"], SQLMode: r["sql_mode"],
			TimeZone: r["time_zone"], Charset: r["character_set_client"], Collation: r["collation_connection"], Altered: altered})
	}
	return schemas, posts, nil
}

// systemAccounts are never dumped: the server creates them itself.
var systemAccounts = map[string]bool{"mariadb.sys": true, "mysql.sys": true, "mysql.session": true, "mysql.infoschema": true}

// localRoots are the root accounts every server creates for itself; the
// target keeps its own.
var localRoots = map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true}

// readUsers returns the statements that recreate accounts, roles and
// grants, system and local root accounts left out.
func readUsers(ctx context.Context, q *sql.Conn, srv *mysqlx.Server) ([]string, error) {
	query := "SELECT User, Host, 'N' FROM mysql.user ORDER BY 1, 2"
	if srv.IsMariaDB() {
		query = "SELECT User, Host, is_role FROM mysql.user ORDER BY is_role DESC, 1, 2"
	}
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return nil, mysqlx.TranslateNeed("listing users", err, "SELECT on mysql.*")
	}
	type acct struct{ user, host, role string }
	var accts []acct
	for rows.Next() {
		var a acct
		if err := rows.Scan(&a.user, &a.host, &a.role); err != nil {
			_ = rows.Close()
			return nil, err
		}
		if systemAccounts[a.user] || (a.user == "root" && localRoots[a.host]) || a.user == "" {
			continue
		}
		accts = append(accts, a)
	}
	_ = rows.Close()
	if err := rows.Err(); err != nil {
		return nil, mysqlx.Translate("listing users", err)
	}
	var creates, grants []string
	for _, a := range accts {
		name := mysqlx.QuoteString(a.user) + "@" + mysqlx.QuoteString(a.host)
		if a.role == "Y" {
			name = qi(a.user)
			creates = append(creates, "CREATE ROLE IF NOT EXISTS "+name)
		} else {
			r, err := showRow(ctx, q, "SHOW CREATE USER "+name)
			if err != nil {
				return nil, mysqlx.TranslateNeed("reading user "+a.user+"@"+a.host, err, "SELECT on mysql.*")
			}
			for _, v := range r {
				creates = append(creates, strings.Replace(v, "CREATE USER ", "CREATE USER IF NOT EXISTS ", 1))
			}
		}
		gr, err := q.QueryContext(ctx, "SHOW GRANTS FOR "+name)
		if err != nil {
			return nil, mysqlx.TranslateNeed("reading grants of "+a.user+"@"+a.host, err, "SELECT on mysql.*")
		}
		for gr.Next() {
			var g string
			if err := gr.Scan(&g); err != nil {
				_ = gr.Close()
				return nil, err
			}
			grants = append(grants, g)
		}
		_ = gr.Close()
		if err := gr.Err(); err != nil {
			return nil, mysqlx.Translate("reading grants", err)
		}
	}
	return append(creates, grants...), nil
}
