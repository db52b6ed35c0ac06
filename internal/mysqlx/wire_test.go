package mysqlx

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// wireConn opens a tapped pool on dsn and one connection with its wire.
func wireConn(t *testing.T, dsn string) (*sql.Conn, *Wire, error) {
	t.Helper()
	d, err := ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db, tap, err := d.OpenTapped(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	w, err := tap.Take()
	return c, w, err
}

// rowsText renders rows as "a|b|NULL\n" lines.
func rowsText(rows [][][]byte) string {
	var b strings.Builder
	for _, r := range rows {
		for i, f := range r {
			if i > 0 {
				b.WriteByte('|')
			}
			if f == nil {
				b.WriteString("NULL")
			} else {
				fmt.Fprintf(&b, "%q", f)
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func wireRows(ctx context.Context, c *sql.Conn, w *Wire, q string) ([][][]byte, error) {
	return copyRows(c, func(row func([][]byte) error) error { return w.Query(ctx, q, row) })
}

// copyRows runs query inside c.Raw and keeps a copy of every row it reads.
func copyRows(c *sql.Conn, query func(row func([][]byte) error) error) ([][][]byte, error) {
	var out [][][]byte
	err := c.Raw(func(any) error {
		return query(func(fields [][]byte) error {
			row := make([][]byte, len(fields))
			for i, f := range fields {
				if f != nil {
					row[i] = append([]byte{}, f...)
				}
			}
			out = append(out, row)
			return nil
		})
	})
	return out, err
}

func driverRows(ctx context.Context, c *sql.Conn, q string) ([][][]byte, error) {
	var out [][][]byte
	err := c.Raw(func(dc any) error {
		rows, err := dc.(driver.QueryerContext).QueryContext(ctx, q, nil)
		if err != nil {
			return err
		}
		defer func() { _ = rows.Close() }()
		vals := make([]driver.Value, len(rows.Columns()))
		for {
			if err := rows.Next(vals); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			row := make([][]byte, len(vals))
			for i, v := range vals {
				switch v := v.(type) {
				case nil:
				case []byte:
					row[i] = append([]byte{}, v...)
				default:
					row[i] = fmt.Append(nil, v)
				}
			}
			out = append(out, row)
		}
	})
	return out, err
}

// TestWireReadsWhatTheDriverReads reads the same result sets off the wire
// and through the driver, on one connection, interleaved: NULL against
// empty, every byte value, rows spanning many buffer fills, values longer
// than one packet and one whose row fills a packet exactly (so an empty
// packet follows it).
func TestWireReadsWhatTheDriverReads(t *testing.T) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "wire", ExtraArgs: []string{"--max-allowed-packet=64M"}})
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(2*time.Minute))
	defer cancel()
	c, w, err := wireConn(t, m.RootDSN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx, "SET SESSION character_set_results = binary"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"SELECT CONCAT(seq), IF(seq % 3 = 0, NULL, REPEAT('x', seq % 50)), '', NULL, CONCAT(seq * 7) FROM test.seq_1_to_200000",
		"SELECT CONCAT(seq), CHAR(seq USING binary) FROM test.seq_0_to_255",
		"SELECT REPEAT('a', 20 * 1024 * 1024), 'after'",
		"SELECT 'before', REPEAT('b', 40 * 1024 * 1024)",
		// 4-byte length prefix + 0xfffffb bytes = one full 0xffffff packet.
		fmt.Sprintf("SELECT REPEAT('c', %d)", maxPacket-4),
		fmt.Sprintf("SELECT REPEAT('d', %d)", maxPacket-3),
		"SELECT 1 FROM test.seq_1_to_10 WHERE seq > 10", // no rows
	} {
		got, err := wireRows(ctx, c, w, q)
		if err != nil {
			t.Fatalf("%.60s: wire: %v", q, err)
		}
		want, err := driverRows(ctx, c, q)
		if err != nil {
			t.Fatalf("%.60s: driver: %v", q, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%.60s: %d rows off the wire, %d through the driver", q, len(got), len(want))
		}
		if g, w := rowsText(got), rowsText(want); g != w {
			t.Fatalf("%.60s: rows differ:\nwire   %.300s\ndriver %.300s", q, g, w)
		}
		if len(got) > 0 && got[0][len(got[0])-1] != nil && len(got[0][len(got[0])-1]) == 0 {
			t.Errorf("%.60s: empty value should be non-nil", q)
		}
	}
	// The empty string and NULL stay apart.
	got, err := wireRows(ctx, c, w, "SELECT '', NULL")
	if err != nil || got[0][0] == nil || got[0][1] != nil {
		t.Fatalf("'' and NULL: %q %v", got, err)
	}
	// The driver still works on the connection, session state intact.
	var cs string
	if err := c.QueryRowContext(ctx, "SELECT @@character_set_results").Scan(&cs); err != nil || cs != "binary" {
		t.Fatalf("driver after the wire: %q %v", cs, err)
	}
}

// TestWireErrors: an error before the rows and one in the middle of them
// come back as the server's errors; a cancel stops a blocked read; after an
// error the wire refuses more work and the driver reports the connection
// bad instead of reading garbage.
func TestWireErrors(t *testing.T) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "wireerr"})
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(2*time.Minute))
	defer cancel()

	c, w, err := wireConn(t, m.RootDSN)
	if err != nil {
		t.Fatal(err)
	}
	_, err = wireRows(ctx, c, w, "SELECT * FROM no_such_db.t")
	var me *mysql.MySQLError
	if !errors.As(err, &me) || me.Number != 1049 && me.Number != 1146 {
		t.Fatalf("unknown table: %v", err)
	}
	if _, err := wireRows(ctx, c, w, "SELECT 1"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("wire after an error: %v", err)
	}
	if err := c.PingContext(ctx); err == nil {
		t.Fatal("the driver should find the connection closed")
	}

	c, w, err = wireConn(t, m.RootDSN)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = c.Raw(func(any) error {
		return w.Query(ctx, "SELECT seq, IF(seq < 100000, seq, (SELECT 1 UNION ALL SELECT 2)) FROM test.seq_1_to_200000",
			func([][]byte) error { n++; return nil })
	})
	if !errors.As(err, &me) || me.Number != 1242 {
		t.Fatalf("error mid-stream: %v after %d rows", err, n)
	}
	if n < 1000 {
		t.Errorf("the error should come after rows, came after %d", n)
	}

	c, w, err = wireConn(t, m.RootDSN)
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer ccancel()
	start := time.Now()
	_, err = wireRows(cctx, c, w, "SELECT SLEEP(30)")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("canceled read: %v after %v", err, time.Since(start))
	}

	// A callback's error ends the read and is returned as is.
	c, w, err = wireConn(t, m.RootDSN)
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	err = c.Raw(func(any) error {
		return w.Query(ctx, "SELECT seq FROM test.seq_1_to_100000", func([][]byte) error { return stop })
	})
	if !errors.Is(err, stop) {
		t.Fatalf("callback error: %v", err)
	}
}

// TestTapOffersOnlyPlainConnections: a compressed connection is not
// offered, and Take wants exactly one new connection.
func TestTapOffersOnlyPlainConnections(t *testing.T) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "tap"})
	if _, _, err := wireConn(t, m.RootDSN+"?compress=true"); !errors.Is(err, ErrNotTapped) {
		t.Fatalf("compressed connection: %v", err)
	}
	d, err := ParseDSN(m.RootDSN)
	if err != nil {
		t.Fatal(err)
	}
	db, tap, err := d.OpenTapped(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	ctx := context.Background()
	if _, err := tap.Take(); err == nil {
		t.Error("take with no connection")
	}
	a, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.Close() }()
	b, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tap.Take(); err == nil {
		t.Error("take with two new connections")
	}
	_ = b.Close()
	_ = db.Close() // closes both sockets
	if _, err := tap.Take(); err == nil {
		t.Error("take after close")
	}
}
