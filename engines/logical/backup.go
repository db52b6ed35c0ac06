package logical

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// writeBufferSize is the buffer between the row encoder and a stream.
const writeBufferSize = 1 << 20

// lockWaitTimeout bounds how long taking the backup lock may queue behind
// long statements, which would stall every writer behind us meanwhile.
const lockWaitTimeout = 60

// DefaultParallel is the number of dump or load connections when
// Parallel is 0: the server does most of the work, so more connections than
// cores only add contention.
func DefaultParallel() int { return max(2, runtime.GOMAXPROCS(0)) }

type backupRun struct {
	p          engines.BackupParams
	srv        *mysqlx.Server
	workers    []*sql.Conn
	wires      []*mysqlx.Wire // workers' sockets, or nil where only the driver can read
	noBinary   atomic.Bool    // the server refused a prepared statement: wires read text
	rows       atomic.Int64
	bytes      atomic.Int64
	tablesDone atomic.Int64
	tables     int
	bytesTotal int64
	warnMu     sync.Mutex
	warnings   []string
	noSums     bool // Engine.NoRowChecksums
}

func (r *backupRun) warn(format string, args ...any) {
	r.warnMu.Lock()
	r.warnings = append(r.warnings, fmt.Sprintf(format, args...))
	r.warnMu.Unlock()
}

func (r *backupRun) progress(phase string) {
	if r.p.Progress == nil {
		return
	}
	r.p.Progress(engines.Progress{Phase: phase, BytesDone: r.bytes.Load(), BytesTotal: r.bytesTotal,
		RowsDone: r.rows.Load(), TablesDone: int(r.tablesDone.Load()), Tables: r.tables})
}

// Backup implements engines.Engine.
//
// Consistency: the schema is read first; then one pinned connection takes
// the shortest global lock the server offers (MariaDB ≥ 10.4: BACKUP STAGE
// START + BLOCK_COMMIT; MySQL and older MariaDB: FLUSH TABLES WITH READ
// LOCK), every worker connection opens START TRANSACTION WITH CONSISTENT
// SNAPSHOT under it, the binlog coordinates and GTID state are read on the
// lock connection inside the window, and non-transactional tables (MyISAM,
// Aria, ...) are dumped before the lock is released on the same connection.
// InnoDB tables are then dumped from the snapshots with writes flowing
// again. DDL run after the lock is released is not blocked on MariaDB: a
// table rebuilt meanwhile fails the backup with ErrTableChanged.
func (e *Engine) Backup(ctx context.Context, p engines.BackupParams) (res *engines.BackupResult, err error) {
	return e.backup(ctx, p, nil, nil)
}

// backup is Backup of only the tables keep accepts (nil: all), with the
// history of the system-versioned ones history accepts (nil: all when
// p.History); Verify reads a restore's tables back through it, each as
// its backup read it.
func (e *Engine) backup(ctx context.Context, p engines.BackupParams, keep, history func(db, name string) bool) (res *engines.BackupResult, err error) {
	if p.Sink == nil {
		return nil, errors.New("logical backup: no sink")
	}
	dsn, err := mysqlx.ParseDSN(p.DSN)
	if err != nil {
		return nil, err
	}
	n := p.Parallel
	if n <= 0 {
		n = DefaultParallel()
	}
	db, tap, err := dsn.OpenTapped(func(c *mysql.Config) { c.InterpolateParams = true })
	if err != nil {
		return nil, err
	}
	defer func() { _ = db.Close() }() // also ends every session, so a lock never outlives us
	// Closing a socket does not stop a statement the server is busy with
	// (a FLUSH TABLES WITH READ LOCK waiting behind a long query blocks
	// every write meanwhile): kill them before returning.
	stopKill := tap.Sessions().KillOnCancel(ctx)
	defer func() { err = mysqlx.JoinKill(err, stopKill(err)) }()
	db.SetMaxOpenConns(n + 1)
	db.SetMaxIdleConns(n + 1)

	connectOp := "connecting to " + dsn.Addr() + " as " + dsn.User()
	ctl, err := db.Conn(ctx)
	if err != nil {
		return nil, mysqlx.Translate(connectOp, err)
	}
	defer func() { _ = ctl.Close() }()
	if err := ctl.PingContext(ctx); err != nil {
		return nil, mysqlx.Translate(connectOp, err)
	}
	srv, err := mysqlx.Detect(ctx, ctl)
	if err != nil {
		return nil, err
	}
	r := &backupRun{p: p, srv: srv, noSums: e.NoRowChecksums}
	p.Sink.SetServer(srv.Proto())
	p.Sink.SetEngineMetadata("logical.format", strconv.Itoa(formatVersion))
	p.Sink.SetEngineMetadata("lower_case_table_names", strconv.Itoa(srv.LowerCaseTableNames))
	if len(p.Databases) > 0 {
		// A point-in-time restore replays every database's binlog, so it
		// must know a base holds only some.
		p.Sink.SetEngineMetadata(MetaDatabases, strings.Join(p.Databases, ","))
	}
	if p.History {
		p.Sink.SetEngineMetadata(MetaHistory, "true")
	}
	if history == nil {
		history = func(string, string) bool { return p.History }
	}

	// UTC, as restore creates the schema: SHOW CREATE TABLE prints a
	// TIMESTAMP default (and a SYSTEM_TIME partitioning's STARTS), points
	// in time, in the session's time zone.
	if _, err := ctl.ExecContext(ctx, "SET SESSION sql_mode = '', SESSION time_zone = '+00:00', SESSION lock_wait_timeout = "+strconv.Itoa(lockWaitTimeout)); err != nil {
		return nil, mysqlx.Translate("setting up the session", err)
	}
	dbs, err := listDatabases(ctx, ctl, p.Databases, p.IncludeSystem)
	if err != nil {
		return nil, err
	}
	if err := checkBackupPrivileges(ctx, ctl, srv, dbs); err != nil {
		return nil, err
	}
	all, err := listTables(ctx, ctl, dbs)
	if err != nil {
		return nil, err
	}
	if keep != nil {
		all = slices.DeleteFunc(all, func(t *tableInfo) bool { return !keep(t.DB, t.Name) })
	}
	for _, t := range all {
		if history(t.DB, t.Name) {
			t.setHistory()
		}
	}
	schemas, posts, err := readSchema(ctx, ctl, dbs, all)
	if err != nil {
		return nil, err
	}
	var users []string
	if p.IncludeUsers {
		if users, err = readUsers(ctx, ctl, srv); err != nil {
			return nil, err
		}
	}
	r.progress("schema")
	for _, d := range dbs {
		if err := writeJSON(p.Sink, schemaStream(d), map[string]string{"db": d, "kind": "schema"}, schemas[d]); err != nil {
			return nil, err
		}
		if err := writeJSON(p.Sink, postStream(d), map[string]string{"db": d, "kind": "post"}, posts[d]); err != nil {
			return nil, err
		}
	}
	if p.IncludeUsers {
		if err := writeJSON(p.Sink, streamUsers, map[string]string{"kind": "users"}, usersDoc{Statements: users}); err != nil {
			return nil, err
		}
	}

	// Plan the pieces before the lock, so it is held for as short as possible.
	pieceRows, pieceBytes := e.PieceRows, e.PieceBytes
	if pieceRows <= 0 {
		pieceRows = defaultPieceRows
	}
	if pieceBytes <= 0 {
		pieceBytes = defaultPieceBytes
	}
	var tables, locked, unlocked []*tableInfo
	var sequences []*tableInfo
	for _, t := range all {
		switch {
		case t.isView():
			continue
		case t.isSequence():
			sequences = append(sequences, t)
			continue
		}
		if err := planPieces(ctx, ctl, t, pieceRows, pieceBytes); err != nil {
			return nil, err
		}
		tables = append(tables, t)
		r.bytesTotal += t.DataLength
		if t.transactional() {
			unlocked = append(unlocked, t)
		} else {
			locked = append(locked, t)
		}
	}
	r.tables = len(tables)
	for _, t := range locked {
		r.warn("%s.%s uses %s, which has no snapshots: it was dumped while writes were blocked, which lengthens the lock", t.DB, t.Name, t.Engine)
	}
	var current []string
	for _, t := range tables {
		switch {
		case !t.versioned() || t.History:
		case history(t.DB, t.Name):
			r.warn("%s.%s is system-versioned by transaction id: only its current rows are backed up, not its history (a period in transaction ids cannot be written back)", t.DB, t.Name)
		default:
			current = append(current, t.DB+"."+t.Name)
		}
	}
	if len(current) > 0 {
		r.warn("system-versioned tables backed up with their current rows only, not their history: %s; back up with --history (a policy's history: true) to keep it, which restores onto MariaDB ≥ 10.11",
			strings.Join(current, ", "))
	}
	if !srv.LogBin {
		r.warn("the server's binary log is off: the backup records no binlog position, so it cannot be the base of a point-in-time recovery")
	}
	if !srv.IsMariaDB() && srv.AtLeast(8, 0, 0) {
		// MySQL 8 can block DDL (not DML) for the whole dump, so no table
		// changes under the snapshots; without BACKUP_ADMIN the dump still
		// runs, with DDL unguarded as on MariaDB.
		if _, err := ctl.ExecContext(ctx, "LOCK INSTANCE FOR BACKUP"); err != nil {
			r.warn("LOCK INSTANCE FOR BACKUP refused (%v): DDL during the dump is not blocked; grant BACKUP_ADMIN to block it", err)
		} else {
			defer func() {
				uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				defer cancel()
				_, _ = ctl.ExecContext(uctx, "UNLOCK INSTANCE")
			}()
		}
	}

	// Workers: each a pinned session that will hold one snapshot. Each
	// is a fresh dial (the pool has no idle connection), so the tap holds
	// exactly its socket.
	_, _ = tap.Take() // the control connection's
	for range n {
		c, err := db.Conn(ctx)
		if err != nil {
			return nil, mysqlx.Translate(connectOp, err)
		}
		defer func() { _ = c.Close() }()
		w, err := tap.Take()
		if err != nil && !errors.Is(err, mysqlx.ErrNotTapped) {
			r.warn("reading rows through the driver, which is slower: %v", err)
		}
		if err := initDumpSession(ctx, c, srv); err != nil {
			return nil, err
		}
		r.workers = append(r.workers, c)
		r.wires = append(r.wires, w)
	}

	cp, seqRows, lockDur, err := r.consistentPoint(ctx, ctl, locked, sequences)
	if err != nil {
		return nil, err
	}
	p.Sink.SetLockDuration(lockDur)
	p.Sink.SetConsistency(cp)
	r.progress("data")

	if err := r.dumpPieces(ctx, unlocked); err != nil {
		return nil, err
	}
	for _, c := range r.workers {
		if _, err := c.ExecContext(ctx, "COMMIT"); err != nil {
			return nil, mysqlx.Translate("ending the snapshot", err)
		}
	}

	meta := metaDoc{Format: formatVersion, Flavor: srv.Flavor, Version: srv.Version, Databases: dbs, Users: p.IncludeUsers, History: p.History}
	for _, t := range tables {
		meta.Tables = append(meta.Tables, t.meta(r.noSums))
	}
	for _, t := range sequences {
		tm := tableMeta{DB: t.DB, Name: t.Name, Engine: t.Engine, SequenceRow: seqRows[t]}
		if v, ok := tm.SequenceRow.next(); ok {
			tm.Sequence = &v
		}
		meta.Tables = append(meta.Tables, tm)
	}
	if err := writeJSON(p.Sink, streamMeta, map[string]string{"kind": "meta"}, meta); err != nil {
		return nil, err
	}
	r.progress("done")
	return &engines.BackupResult{Tables: len(tables), Rows: r.rows.Load(), LockDuration: lockDur, Warnings: r.warnings}, nil
}

func (t *tableInfo) meta(noSums bool) tableMeta {
	tm := tableMeta{DB: t.DB, Name: t.Name, Engine: t.Engine, SplitKey: t.SplitKey, Locked: !t.transactional(),
		History: t.History, CurrentOnly: t.versioned() && !t.History}
	for _, c := range t.dumpColumns() {
		tm.Columns = append(tm.Columns, c.Name)
		tm.Types = append(tm.Types, c.DataType)
	}
	var sum rowSum
	for _, p := range t.pieces {
		pm := pieceMeta{Stream: dataStream(t.DB, t.Name, p.n), Rows: p.rows, Bytes: p.bytes}
		if !noSums {
			pm.Checksum = p.sum.hex()
		}
		tm.Pieces = append(tm.Pieces, pm)
		tm.Rows += p.rows
		sum.Sum += p.sum.Sum
	}
	if !noSums {
		tm.Checksum = sum.hex()
	}
	return tm
}

// initDumpSession makes a worker read every value as raw bytes in its own
// character set, TIMESTAMPs in UTC (so no DST hour is ambiguous), with no
// statement time limit and a generous write timeout: the server waits on us
// while the archive uploads.
func initDumpSession(ctx context.Context, c *sql.Conn, srv *mysqlx.Server) error {
	stmts := []string{
		"SET SESSION character_set_results = binary, SESSION time_zone = '+00:00', SESSION net_write_timeout = 3600, SESSION sql_mode = ''",
		"SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
	}
	if srv.IsMariaDB() {
		stmts = append(stmts, "SET SESSION max_statement_time = 0")
	} else if srv.AtLeast(5, 7, 8) {
		stmts = append(stmts, "SET SESSION max_execution_time = 0")
	}
	for _, s := range stmts {
		if _, err := c.ExecContext(ctx, s); err != nil {
			return mysqlx.Translate("setting up a dump session", err)
		}
	}
	return nil
}

// consistentPoint takes the lock, opens every worker's snapshot, reads the
// coordinates, dumps the non-transactional tables and the sequences'
// state, and releases the lock on the same connection on every path.
func (r *backupRun) consistentPoint(ctx context.Context, ctl *sql.Conn, locked, sequences []*tableInfo) (cp *v1.ConsistencyPoint, seqRows map[*tableInfo]*sequenceRow, lockDur time.Duration, err error) {
	srv := r.srv
	var lockStmts []string
	var unlockStmt, lockName string
	switch {
	case srv.IsMariaDB() && srv.AtLeast(10, 4, 0):
		lockStmts, unlockStmt, lockName = []string{"BACKUP STAGE START", "BACKUP STAGE BLOCK_COMMIT"}, "BACKUP STAGE END", "BACKUP STAGE BLOCK_COMMIT"
	default:
		lockStmts, unlockStmt, lockName = []string{"FLUSH TABLES WITH READ LOCK"}, "UNLOCK TABLES", "FLUSH TABLES WITH READ LOCK"
	}
	start := time.Now()
	held := false
	release := func() error {
		if !held {
			return nil
		}
		held = false
		// A fresh context: a canceled backup must still unlock. If this
		// fails, db.Close ends the session and the server unlocks.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, err := ctl.ExecContext(rctx, unlockStmt)
		lockDur = time.Since(start)
		return mysqlx.Translate("releasing the backup lock", err)
	}
	defer func() {
		if rerr := release(); err == nil && rerr != nil {
			err = rerr
		}
	}()
	for i, s := range lockStmts {
		held = true // BACKUP STAGE START already needs BACKUP STAGE END
		if i == len(lockStmts)-1 {
			// Writes are blocked from the last statement on (BACKUP STAGE
			// START alone blocks nothing): that is the lock time reported.
			start = time.Now()
		}
		if _, err := ctl.ExecContext(ctx, s); err != nil {
			if mysqlx.ServerErrorNumber(err) == 1205 { // lock wait timeout
				return nil, nil, 0, fmt.Errorf("taking the backup lock (%s): waited %d s behind long-running statements or transactions; run the backup when they are done: %w", lockName, lockWaitTimeout, err)
			}
			return nil, nil, 0, mysqlx.TranslateNeed("taking the backup lock ("+lockName+")", err, "the RELOAD privilege (GRANT RELOAD ON *.*)")
		}
	}
	for _, c := range r.workers {
		if _, err := c.ExecContext(ctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"); err != nil {
			return nil, nil, 0, mysqlx.Translate("starting a consistent snapshot", err)
		}
	}
	cp, err = readCoordinates(ctx, ctl, srv)
	if err != nil {
		return nil, nil, 0, err
	}
	// Sequences and non-transactional tables are not versioned: read them
	// while writes are still blocked.
	seqRows = map[*tableInfo]*sequenceRow{}
	for _, t := range sequences {
		row, err := readSequenceRow(ctx, ctl, t)
		if err != nil {
			return nil, nil, 0, err
		}
		seqRows[t] = row
	}
	if len(locked) > 0 {
		if err := r.dumpPieces(ctx, locked); err != nil {
			return nil, nil, 0, err
		}
	}
	if err := release(); err != nil {
		return nil, nil, 0, err
	}
	if err := r.verifySnapshots(ctx, cp); err != nil {
		return nil, nil, 0, err
	}
	return cp, seqRows, lockDur, nil
}

// readSequenceRow reads a sequence's state row, under the lock. Its
// next_not_cached_value is where the source itself continues: the values a
// source caches below it live only in its memory (no replica, no binlog
// sees them), and the lock's flush (BACKUP STAGE FLUSH, FLUSH TABLES WITH
// READ LOCK) closes the sequence and drops its cache, so the source's
// next NEXTVAL starts a new block there, as the restored copy does. A
// NEXTVAL that runs into the lock may already have reserved its block in
// the row (it waits, or fails, on the commit): the copy then starts after
// that block, a gap, never a value the source handed out.
func readSequenceRow(ctx context.Context, ctl *sql.Conn, t *tableInfo) (*sequenceRow, error) {
	op := "reading sequence " + t.DB + "." + t.Name
	rows, err := ctl.QueryContext(ctx, "SELECT * FROM "+qname(t.DB, t.Name))
	if err != nil {
		return nil, mysqlx.TranslateNeed(op, err, "SELECT on "+qi(t.DB)+".*")
	}
	defer func() { _ = rows.Close() }()
	cols, err := rows.Columns()
	if err != nil {
		return nil, mysqlx.Translate(op, err)
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, mysqlx.Translate(op, err)
		}
		return nil, fmt.Errorf("%s: the sequence has no row", op)
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, mysqlx.Translate(op, err)
	}
	row := &sequenceRow{Columns: cols}
	for i, v := range vals {
		if !v.Valid || !isInteger(v.String) {
			return nil, fmt.Errorf("%s: column %s holds %q, not an integer", op, cols[i], v.String)
		}
		row.Values = append(row.Values, v.String)
	}
	return row, mysqlx.Translate(op, rows.Err())
}

// isInteger reports whether s is a decimal integer literal.
func isInteger(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// next returns the row's next_not_cached_value, if it has one that fits.
func (s *sequenceRow) next() (int64, bool) {
	for i, c := range s.Columns {
		if c == "next_not_cached_value" {
			v, err := strconv.ParseInt(s.Values[i], 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// readCoordinates reads binlog file, position and GTID state; it runs on the
// lock connection while commits are blocked.
func readCoordinates(ctx context.Context, ctl *sql.Conn, srv *mysqlx.Server) (*v1.ConsistencyPoint, error) {
	cp := &v1.ConsistencyPoint{}
	var ts string
	if err := ctl.QueryRowContext(ctx, "SELECT CONCAT(UNIX_TIMESTAMP(NOW(6)))").Scan(&ts); err != nil {
		return nil, mysqlx.Translate("reading the server time", err)
	}
	if f, err := strconv.ParseFloat(ts, 64); err == nil {
		sec := int64(f)
		cp.Time = timestamppb.New(time.Unix(sec, int64((f-float64(sec))*1e9)).UTC())
	}
	need := "BINLOG MONITOR (MariaDB ≥ 10.5) or REPLICATION CLIENT: GRANT BINLOG MONITOR ON *.*"
	if !srv.IsMariaDB() {
		need = "REPLICATION CLIENT: GRANT REPLICATION CLIENT ON *.*"
	}
	if srv.LogBin {
		row, err := showRow(ctx, ctl, "SHOW MASTER STATUS")
		if mysqlx.ServerErrorNumber(err) == 1064 { // MySQL ≥ 8.4 renamed it
			row, err = showRow(ctx, ctl, "SHOW BINARY LOG STATUS")
		}
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return nil, mysqlx.TranslateNeed("reading the binlog position", err, need)
		default:
			cp.BinlogFile = row["file"]
			cp.BinlogPosition, _ = strconv.ParseUint(row["position"], 10, 64)
		}
	}
	gtidQuery := "SELECT @@GLOBAL.gtid_executed"
	if srv.IsMariaDB() {
		gtidQuery = "SELECT @@GLOBAL.gtid_binlog_pos"
	}
	var gtid sql.NullString
	if err := ctl.QueryRowContext(ctx, gtidQuery).Scan(&gtid); err != nil && mysqlx.ServerErrorNumber(err) != 1193 {
		return nil, mysqlx.TranslateNeed("reading the GTID state", err, need)
	}
	cp.GtidSet = strings.ReplaceAll(gtid.String, "\n", "")
	return cp, nil
}

// verifySnapshots checks, on MariaDB, that every worker's snapshot sits at
// the recorded binlog position (binlog_snapshot_* are per-session status
// variables set by START TRANSACTION WITH CONSISTENT SNAPSHOT). A mismatch
// would mean a commit slipped through the lock.
func (r *backupRun) verifySnapshots(ctx context.Context, cp *v1.ConsistencyPoint) error {
	if !r.srv.IsMariaDB() || cp.BinlogFile == "" {
		return nil
	}
	for i, c := range r.workers {
		rows, err := c.QueryContext(ctx, "SHOW SESSION STATUS LIKE 'binlog_snapshot_%'")
		if err != nil {
			return mysqlx.Translate("checking the snapshot position", err)
		}
		vals := map[string]string{}
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				_ = rows.Close()
				return err
			}
			vals[strings.ToLower(k)] = v
		}
		_ = rows.Close()
		if f, pos := vals["binlog_snapshot_file"], vals["binlog_snapshot_position"]; f != "" &&
			(f != cp.BinlogFile || pos != strconv.FormatUint(cp.BinlogPosition, 10)) {
			return fmt.Errorf("worker %d's snapshot is at %s:%s but the lock recorded %s:%d: a commit was not blocked; the backup is not consistent, run it again",
				i, f, pos, cp.BinlogFile, cp.BinlogPosition)
		}
	}
	return nil
}

// dumpPieces dumps every piece of tables in pieceOrder, one piece per
// worker at a time.
func (r *backupRun) dumpPieces(ctx context.Context, tables []*tableInfo) error {
	queue := pieceOrder(tables)
	remaining := map[*tableInfo]*atomic.Int64{}
	for _, t := range tables {
		remaining[t] = new(atomic.Int64)
		remaining[t].Store(int64(len(t.pieces)))
	}
	next := make(chan *piece)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(next)
		for _, p := range queue {
			select {
			case next <- p:
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	})
	for i, c := range r.workers {
		g.Go(func() error {
			for p := range next {
				if err := r.dumpPiece(gctx, c, r.wires[i], p); err != nil {
					return err
				}
				if remaining[p.table].Add(-1) == 0 {
					r.tablesDone.Add(1)
				}
				r.progress("data")
			}
			return nil
		})
	}
	return g.Wait()
}

// pieceOrder deals the pieces out round by round, biggest tables first:
// the first piece of every table, then every second piece, and so on. So
// workers running at the same time mostly scan different tables, as
// whole-table dumpers do, rather than contend for one table's index pages
// and counters; and a table split in many pieces still ends in pieces no
// bigger than one, so no worker is left with a long tail.
func pieceOrder(tables []*tableInfo) []*piece {
	sorted := sortBySize(tables)
	var queue []*piece
	for round := 0; ; round++ {
		added := false
		for _, t := range sorted {
			if round < len(t.pieces) {
				queue = append(queue, &t.pieces[round])
				added = true
			}
		}
		if !added {
			return queue
		}
	}
}

func sortBySize(tables []*tableInfo) []*tableInfo {
	out := append([]*tableInfo(nil), tables...)
	// Stable: equal sizes keep schema order, which keeps runs reproducible.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].DataLength > out[j-1].DataLength; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// dumpPiece streams one piece's rows straight from the server into its
// stream: the read buffer (the wire's, or the driver's when wire is nil;
// values are slices of it, never copied) and the encoder's 1 MiB buffer are
// all that sit between them.
func (r *backupRun) dumpPiece(ctx context.Context, c *sql.Conn, wire *mysqlx.Wire, p *piece) (err error) {
	t := p.table
	cols := t.dumpColumns()
	path := readDriver
	if wire != nil {
		path = readWireBinary
		if r.noBinary.Load() {
			path = readWireText
		}
	}
	queryFor := func(path readPath) string {
		exprs := make([]string, len(cols))
		for i, col := range cols {
			exprs[i] = selectExpr(col, path)
		}
		q := "SELECT " + strings.Join(exprs, ", ") + " FROM " + t.fromClause()
		if p.where != "" {
			q += " WHERE " + p.where
		}
		return q
	}
	md := map[string]string{"db": t.DB, "table": t.Name, "piece": strconv.Itoa(p.n), "kind": "data"}
	if p.lo != "" {
		md["from"] = p.lo
	}
	if p.hi != "" {
		md["below"] = p.hi
	}
	name := dataStream(t.DB, t.Name, p.n)
	w, err := r.p.Sink.Stream(name, md)
	if err != nil {
		return fmt.Errorf("opening stream %s: %w", name, err)
	}
	defer func() {
		if cerr := w.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("closing stream %s: %w", name, cerr)
		}
	}()
	if len(cols) == 0 {
		return nil
	}
	cw := &countingWriter{w: w, total: &r.bytes}
	enc := newRowEncoder(cw)
	enc.noSum = r.noSums
	query := queryFor(path)
	op := "dumping " + t.DB + "." + t.Name
	var rows int64
	counted := func() {
		rows++
		if rows&0xffff == 0 {
			r.rows.Add(0xffff + 1)
			r.progress("data")
		}
	}
	err = c.Raw(func(dc any) error {
		if wire != nil {
			wirePieces.Add(1)
			each := func(fields [][]byte) error {
				if err := enc.writeFields(fields); err != nil {
					return &encodeError{err}
				}
				counted()
				return nil
			}
			var err error
			if path == readWireBinary {
				err = wire.QueryBinary(ctx, query, each)
				if errors.Is(err, mysqlx.ErrNoBinary) {
					// Refused before any row, the connection intact.
					if !r.noBinary.Swap(true) {
						r.warn("the server refused a prepared statement (%v): reading rows as text, which costs the server more CPU", err)
					}
					err = wire.Query(ctx, queryFor(readWireText), each)
				}
			} else {
				err = wire.Query(ctx, query, each)
			}
			var ee *encodeError
			if errors.As(err, &ee) {
				return fmt.Errorf("%s: %w", op, ee.err)
			}
			return mysqlx.TranslateNeed(op, err, "SELECT on "+qi(t.DB)+".*")
		}
		// Raw driver rows: database/sql would convert every value once more.
		qc, ok := dc.(driver.QueryerContext)
		if !ok {
			return errors.New("driver connection cannot run queries")
		}
		drows, err := qc.QueryContext(ctx, query, nil)
		if err != nil {
			return mysqlx.TranslateNeed(op, err, "SELECT on "+qi(t.DB)+".*")
		}
		defer func() { _ = drows.Close() }()
		vals := make([]driver.Value, len(cols))
		for {
			if err := drows.Next(vals); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return mysqlx.Translate(op, err)
			}
			if err := enc.writeRow(vals); err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			counted()
		}
	})
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, context.Canceled) {
			// The driver reports a canceled query as a broken connection.
			return fmt.Errorf("%s: %w", op, ctx.Err())
		}
		return err
	}
	if err := enc.flush(); err != nil {
		return fmt.Errorf("writing stream %s: %w", name, err)
	}
	r.rows.Add(rows & 0xffff)
	p.rows, p.bytes, p.sum = rows, cw.n, enc.sum
	return nil
}

// encodeError marks a failure of the stream we write, not of the server
// we read, so it is not taken for a lost connection.
type encodeError struct{ err error }

func (e *encodeError) Error() string { return e.err.Error() }

// wirePieces counts the pieces read off the wire, for the tests.
var wirePieces atomic.Int64

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w     io.Writer
	n     int64
	total *atomic.Int64
}

// AvailableBuffer passes the stream's through, so the encoder can append
// rows in place.
func (c *countingWriter) AvailableBuffer() []byte {
	if ab, ok := c.w.(availableBuffer); ok {
		return ab.AvailableBuffer()
	}
	return nil
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.total.Add(int64(n))
	return n, err
}
