package logical

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

// readerSeq makes reader-handler names unique across concurrent restores
// in one process: the driver's registry is global.
var readerSeq atomic.Int64

// insertBatchBytes bounds one INSERT statement, well under the default
// max_allowed_packet of every supported server.
const insertBatchBytes = 1 << 20

// loadDataSQL builds the LOAD DATA statement for one piece. Columns load
// directly, BIT included (LOAD DATA stores a string's bytes into a BIT
// column, and the dump holds BIT's raw bytes). Only JSON on MySQL, which
// refuses JSON from a binary string, needs a conversion; then every column
// goes through a user variable, because with a SET clause the server
// ignores NO_AUTO_VALUE_ON_ZERO and would renumber a 0 in an AUTO_INCREMENT
// column.
func loadDataSQL(t *tableMeta, db, reader string, mysqlFlavor bool) string {
	viaVars := false
	for _, typ := range t.Types {
		viaVars = viaVars || loadsAsText(typ, mysqlFlavor)
	}
	var cols, sets []string
	for i, c := range t.Columns {
		if !viaVars {
			cols = append(cols, qi(c))
			continue
		}
		v := "@c" + strconv.Itoa(i)
		cols = append(cols, v)
		if loadsAsText(t.Types[i], mysqlFlavor) {
			sets = append(sets, qi(c)+" = CONVERT("+v+" USING utf8mb4)")
		} else {
			sets = append(sets, qi(c)+" = "+v)
		}
	}
	q := "LOAD DATA LOCAL INFILE 'Reader::" + reader + "' INTO TABLE " + qname(db, t.Name) +
		" CHARACTER SET binary (" + strings.Join(cols, ", ") + ")"
	if len(sets) > 0 {
		q += " SET " + strings.Join(sets, ", ")
	}
	return q
}

// loadsAsText tells the column types that must not receive a binary
// string: MySQL's JSON refuses one, and MariaDB's INET6, INET4 and UUID
// take a binary string for their 16- or 4-byte internal form, so "::1"
// would load as an invalid value (NULL, with only a warning).
func loadsAsText(typ string, mysqlFlavor bool) bool {
	switch typ {
	case "json":
		return mysqlFlavor
	case "inet6", "inet4", "uuid":
		return true
	}
	return false
}

// checkWarnings fails a load the server completed with warnings: a value
// it could not store as dumped became something else (NULL, zero, a
// truncated string), and a restore must not pass that off as the data.
// Notes are not warnings.
func checkWarnings(ctx context.Context, c *sql.Conn, op string) error {
	var n int
	if err := c.QueryRowContext(ctx, "SELECT @@warning_count").Scan(&n); err != nil {
		return mysqlx.Translate(op, err)
	}
	if n == 0 {
		return nil
	}
	rows, err := c.QueryContext(ctx, "SHOW WARNINGS LIMIT 3")
	if err != nil {
		return mysqlx.Translate(op, err)
	}
	defer func() { _ = rows.Close() }()
	var msgs []string
	for rows.Next() {
		var level, msg string
		var code int
		if err := rows.Scan(&level, &code, &msg); err != nil {
			return mysqlx.Translate(op, err)
		}
		if level != "Note" {
			msgs = append(msgs, fmt.Sprintf("%s %d: %s", level, code, msg))
		}
	}
	if err := rows.Err(); err != nil {
		return mysqlx.Translate(op, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("%s: the server changed values while loading them (%d warnings; %s): nothing of this table piece was kept; the backup itself is intact, and the target's column types or settings differ from what it expects",
		op, n, strings.Join(msgs, "; "))
}

// loadPiece loads one stream into its table in one transaction, so a
// stream that breaks off (damaged chunk, lost connection) leaves no half
// piece behind.
func (r *restoreRun) loadPiece(ctx context.Context, c *sql.Conn, t *tableMeta, pc pieceMeta) error {
	if len(t.Columns) == 0 {
		return nil
	}
	if t.History {
		// A system-versioned table with its history: its period columns
		// are written as dumped. Restore checked that the target takes
		// them (checkHistoryTarget) before it wrote anything.
		if _, err := c.ExecContext(ctx, "SET SESSION system_versioning_insert_history = ON"); err != nil {
			return mysqlx.Translate("loading "+r.target(t.DB)+"."+t.Name+" with its history", err)
		}
	}
	return r.loadRows(ctx, c, t, pc)
}

// loadRows loads a piece's rows as they are in the stream.
func (r *restoreRun) loadRows(ctx context.Context, c *sql.Conn, t *tableMeta, pc pieceMeta) error {
	if r.useInsert.Load() {
		return r.insertPiece(ctx, c, t, pc)
	}
	td := r.target(t.DB)
	op := "loading " + td + "." + t.Name + " from stream " + pc.Stream
	rc, err := r.p.Source.OpenStream(ctx, pc.Stream)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer func() { _ = rc.Close() }()
	name := "tidemark-" + strconv.FormatInt(readerSeq.Add(1), 10)
	var readErr error
	src := &countingReader{r: rc, total: &r.bytes, err: &readErr}
	mysql.RegisterReaderHandler(name, func() io.Reader { return src })
	defer mysql.DeregisterReaderHandler(name)

	if _, err := c.ExecContext(ctx, "BEGIN"); err != nil {
		return mysqlx.Translate(op, err)
	}
	res, err := c.ExecContext(ctx, loadDataSQL(t, td, name, !r.srv.IsMariaDB()))
	if err != nil {
		rollback(ctx, c)
		if readErr != nil {
			return fmt.Errorf("%s: %w", op, readErr)
		}
		if errors.Is(mysqlx.Translate(op, err), mysqlx.ErrLocalInfile) {
			if !r.useInsert.Swap(true) {
				r.warn("the target refused LOAD DATA LOCAL INFILE (%v): loading with batched INSERTs, which is slower; SET GLOBAL local_infile=ON for LOAD DATA", err)
			}
			return r.insertPiece(ctx, c, t, pc)
		}
		return mysqlx.TranslateNeed(op, err, "INSERT on "+qi(td)+".*")
	}
	if err := checkWarnings(ctx, c, op); err != nil {
		rollback(ctx, c)
		return err
	}
	if err := r.state.mark(ctx, c, pieceStep(pc.Stream)); err != nil {
		rollback(ctx, c)
		return err
	}
	if _, err := c.ExecContext(ctx, "COMMIT"); err != nil {
		return mysqlx.Translate(op, err)
	}
	loaded, _ := res.RowsAffected()
	r.rows.Add(loaded)
	if loaded != pc.Rows {
		return fmt.Errorf("%s: loaded %d rows of %d: the target skipped rows (a duplicate key on a table that was not empty?)", op, loaded, pc.Rows)
	}
	return nil
}

func rollback(ctx context.Context, c *sql.Conn) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, _ = c.ExecContext(rctx, "ROLLBACK")
}

// insertPiece is the path for servers with local_infile=OFF: the stream is
// parsed back and sent as multi-row INSERTs of hex literals (pure ASCII, so
// no character set conversion can touch the bytes).
func (r *restoreRun) insertPiece(ctx context.Context, c *sql.Conn, t *tableMeta, pc pieceMeta) (err error) {
	td := r.target(t.DB)
	op := "loading " + td + "." + t.Name + " from stream " + pc.Stream + " with INSERT"
	rc, err := r.p.Source.OpenStream(ctx, pc.Stream)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer func() { _ = rc.Close() }()
	src := &countingReader{r: rc, total: &r.bytes}
	rr := newRowReader(src)
	mysqlFlavor := !r.srv.IsMariaDB()
	cols := make([]string, len(t.Columns))
	for i, col := range t.Columns {
		cols[i] = qi(col)
	}
	prefix := "INSERT INTO " + qname(td, t.Name) + " (" + strings.Join(cols, ", ") + ") VALUES "
	buf := make([]byte, 0, insertBatchBytes+64<<10)
	buf = append(buf, prefix...)
	var rows, inserted, batch int64
	if _, err := c.ExecContext(ctx, "BEGIN"); err != nil {
		return mysqlx.Translate(op, err)
	}
	defer func() {
		if err != nil {
			rollback(ctx, c)
		}
	}()
	flush := func() error {
		if batch == 0 {
			return nil
		}
		if _, err := c.ExecContext(ctx, string(buf)); err != nil {
			return mysqlx.TranslateNeed(op, err, "INSERT on "+qi(td)+".*")
		}
		if err := checkWarnings(ctx, c, op); err != nil {
			return err
		}
		buf, batch = append(buf[:0], prefix...), 0
		return nil
	}
	for {
		fields, err := rr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if len(fields) != len(t.Columns) {
			return fmt.Errorf("%s: row %d has %d fields, the table %d columns", op, rows+1, len(fields), len(t.Columns))
		}
		rows++
		if batch > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, '(')
		for i, f := range fields {
			if i > 0 {
				buf = append(buf, ',')
			}
			switch {
			case f != nil && loadsAsText(t.Types[i], mysqlFlavor):
				buf = append(buf, "CONVERT("...)
				buf = appendHexLiteral(buf, f)
				buf = append(buf, " USING utf8mb4)"...)
			default:
				buf = appendHexLiteral(buf, f)
			}
		}
		buf = append(buf, ')')
		inserted++
		batch++
		if len(buf) >= insertBatchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if err := r.state.mark(ctx, c, pieceStep(pc.Stream)); err != nil {
		return err
	}
	if _, err := c.ExecContext(ctx, "COMMIT"); err != nil {
		return mysqlx.Translate(op, err)
	}
	r.rows.Add(inserted)
	if rows != pc.Rows {
		return fmt.Errorf("%s: the stream holds %d rows, the backup recorded %d", op, rows, pc.Rows)
	}
	return nil
}

// countingReader counts bytes for progress and remembers a read error, which
// the driver would otherwise only hand back after the server's own reply.
type countingReader struct {
	r     io.Reader
	total *atomic.Int64
	err   *error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.total.Add(int64(n))
	if err != nil && !errors.Is(err, io.EOF) && c.err != nil {
		*c.err = err
	}
	return n, err
}
