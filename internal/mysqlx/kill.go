package mysqlx

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Sessions records the server connection id of every connection a pool
// opens, so that an engine that is cancelled (or fails) can stop its own
// statements on the server. Cancelling a context only makes the driver drop
// its socket: the server goes on with a running ALTER TABLE, a statement
// waiting for a metadata lock or a long SELECT until it next touches the
// socket, which may be minutes or hours later, while the agent already
// starts the instance's next job. KILL QUERY, sent on a connection of its
// own, stops the statement where it is.
//
// Ids are kept for the pool's whole life (a pool of an engine run opens a
// handful); an id whose connection is gone is skipped when killing.
type Sessions struct {
	dsn *DSN
	mu  sync.Mutex
	ids []uint64
}

// OpenSessions is Open with every connection's id recorded in the returned
// Sessions. adjust may be nil; it changes the pool's configuration only:
// Kill connects with the DSN as given.
func (d *DSN) OpenSessions(adjust func(*mysql.Config)) (*sql.DB, *Sessions, error) {
	c := d.cfg.Clone()
	if adjust != nil {
		adjust(c)
	}
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return nil, nil, fmt.Errorf("MySQL DSN %s: %w", d, err)
	}
	s := &Sessions{dsn: d}
	return sql.OpenDB(&sessionConnector{Connector: conn, s: s}), s, nil
}

// sessionConnector reads each new connection's id before the pool gets it.
// The connection itself is returned as the driver made it, so every
// optional interface of the driver's connection stays visible.
type sessionConnector struct {
	driver.Connector
	s *Sessions
}

func (c *sessionConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	id, err := connectionID(ctx, conn)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("reading the new connection's CONNECTION_ID(): %w", err)
	}
	c.s.mu.Lock()
	c.s.ids = append(c.s.ids, id)
	c.s.mu.Unlock()
	return conn, nil
}

func connectionID(ctx context.Context, conn driver.Conn) (uint64, error) {
	q, ok := conn.(driver.QueryerContext)
	if !ok {
		return 0, fmt.Errorf("driver connection %T cannot run a query", conn)
	}
	rows, err := q.QueryContext(ctx, "SELECT CONNECTION_ID()", nil)
	if err != nil {
		return 0, err
	}
	defer func() { _ = rows.Close() }()
	dest := make([]driver.Value, 1)
	if err := rows.Next(dest); err != nil {
		return 0, err
	}
	switch v := dest[0].(type) {
	case int64:
		return uint64(v), nil
	case uint64:
		return v, nil
	case []byte:
		return strconv.ParseUint(string(v), 10, 64)
	}
	return 0, fmt.Errorf("CONNECTION_ID() returned %T", dest[0])
}

// IDs returns the connection ids the pool opened, oldest first.
func (s *Sessions) IDs() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.ids...)
}

// ErrStatementsLeft marks an error of Kill: the server may still run
// statements of the pool, so the instance is not known to be quiet.
var ErrStatementsLeft = errors.New("statements may still run on the server")

// errUnknownThread is the server's answer to KILL of a connection that is
// gone (ER_NO_SUCH_THREAD).
const errUnknownThread = 1094

// Kill stops every statement the pool's connections run on the server and
// returns once none runs one: it lists them in
// information_schema.PROCESSLIST, sends KILL QUERY for each from a
// connection of its own, and looks again every 20 ms (a killed ALTER TABLE
// first rolls back), killing again what started meanwhile. A connection
// that is gone, or idle, is left alone. It returns an error naming what
// still runs when ctx ends first, or when the server cannot be reached.
// It needs no privilege: a user may kill its own connections.
func (s *Sessions) Kill(ctx context.Context) error {
	ids := s.IDs()
	if len(ids) == 0 {
		return nil
	}
	db, err := s.dsn.Open(nil)
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()
	db.SetMaxOpenConns(1)
	list := make([]string, len(ids))
	for i, id := range ids {
		list[i] = strconv.FormatUint(id, 10)
	}
	query := "SELECT ID, COMMAND, COALESCE(STATE, ''), LEFT(COALESCE(INFO, ''), 80) FROM information_schema.PROCESSLIST WHERE ID IN (" +
		strings.Join(list, ",") + ") AND COMMAND <> 'Sleep'"
	var running []string
	for {
		rows, err := db.QueryContext(ctx, query)
		if err != nil {
			return s.killErr(ctx, running, Translate("listing the connections to kill in information_schema.PROCESSLIST", err))
		}
		var busy []uint64
		running = running[:0]
		for rows.Next() {
			var id uint64
			var cmd, state, info string
			if err := rows.Scan(&id, &cmd, &state, &info); err != nil {
				_ = rows.Close()
				return err
			}
			busy = append(busy, id)
			running = append(running, fmt.Sprintf("connection %d (%s, %s: %q)", id, cmd, state, info))
		}
		err = rows.Err()
		_ = rows.Close()
		if err != nil {
			return s.killErr(ctx, running, err)
		}
		if len(busy) == 0 {
			return nil
		}
		for _, id := range busy {
			if _, err := db.ExecContext(ctx, "KILL QUERY "+strconv.FormatUint(id, 10)); err != nil && ServerErrorNumber(err) != errUnknownThread {
				return s.killErr(ctx, running, Translate(fmt.Sprintf("KILL QUERY %d", id), err))
			}
		}
		select {
		case <-ctx.Done():
			return s.killErr(ctx, running, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Sessions) killErr(ctx context.Context, running []string, err error) error {
	if len(running) == 0 {
		return fmt.Errorf("%w: stopping the statements of %s: %w", ErrStatementsLeft, s.dsn.Addr(), err)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w: on %s after KILL QUERY: %s: %w", ErrStatementsLeft, s.dsn.Addr(), strings.Join(running, "; "), err)
	}
	return fmt.Errorf("%w: killing %s on %s: %w", ErrStatementsLeft, strings.Join(running, "; "), s.dsn.Addr(), err)
}

// KillTimeout bounds the kills of KillOnCancel.
const KillTimeout = 30 * time.Second

// KillOnCancel starts Kill (bounded by KillTimeout) as soon as ctx ends.
// The returned stop is for the engine to call when it returns, with its
// error: it waits for a kill under way, runs one when the engine failed
// for another reason (its other connections may still run statements
// that the driver only stopped reading), and returns the kill's error. So
// an engine returns only once its statements stopped on the server too.
func (s *Sessions) KillOnCancel(ctx context.Context) (stop func(engineErr error) error) {
	done := make(chan struct{})
	var killErr error
	kill := func() error {
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), KillTimeout)
		defer cancel()
		return s.Kill(kctx)
	}
	unwatch := context.AfterFunc(ctx, func() {
		defer close(done)
		killErr = kill()
	})
	return func(engineErr error) error {
		if !unwatch() {
			<-done
			return killErr
		}
		if engineErr != nil {
			return kill()
		}
		return nil
	}
}

// JoinKill adds the error of a kill to an engine's error: the engine's
// comes first, it is what the job failed of.
func JoinKill(engineErr, killErr error) error {
	if killErr == nil {
		return engineErr
	}
	return errors.Join(engineErr, killErr)
}
