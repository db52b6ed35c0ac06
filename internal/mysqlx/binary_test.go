package mysqlx

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

func binaryRows(ctx context.Context, c *sql.Conn, w *Wire, q string) ([][][]byte, error) {
	return copyRows(c, func(row func([][]byte) error) error { return w.QueryBinary(ctx, q, row) })
}

// binaryTypes are the columns of the test table: name, type, and the
// expression the text protocol is read with to give the same text (a
// ZEROFILL integer unpadded; a float in full, compared as a number).
var binaryTypes = []struct{ name, typ, textExpr string }{
	{"ti", "TINYINT", ""}, {"tu", "TINYINT UNSIGNED", ""},
	{"si", "SMALLINT", ""}, {"su", "SMALLINT UNSIGNED", ""},
	{"mi", "MEDIUMINT", ""}, {"mu", "MEDIUMINT UNSIGNED", ""}, {"mz", "MEDIUMINT(6) UNSIGNED ZEROFILL", "mz+0"},
	{"ii", "INT", ""}, {"iu", "INT UNSIGNED", ""},
	{"bi", "BIGINT", ""}, {"bu", "BIGINT UNSIGNED", ""},
	{"f", "FLOAT", "f+0e0"}, {"d", "DOUBLE", ""}, {"dd", "DOUBLE(10,3)", ""},
	{"dc", "DECIMAL(65,30)", ""},
	{"dt", "DATE", ""}, {"t0", "DATETIME", ""}, {"t3", "DATETIME(3)", ""}, {"t6", "DATETIME(6)", ""},
	{"ts", "TIMESTAMP(6) NULL", ""}, {"tm", "TIME", ""}, {"tm6", "TIME(6)", ""},
	{"y", "YEAR", ""}, {"b1", "BIT(1)", ""}, {"b64", "BIT(64)", ""},
	{"e", "ENUM('a','b c','')", ""}, {"st", "SET('x','y','z')", ""},
	{"c", "CHAR(10)", ""}, {"vc", "VARCHAR(100) CHARACTER SET utf8mb4", ""}, {"l1", "VARCHAR(20) CHARACTER SET latin1", ""},
	{"bin", "BINARY(4)", ""}, {"blb", "LONGBLOB", ""}, {"js", "JSON", ""}, {"g", "POINT", ""},
	{"i6", "INET6", ""}, {"i4", "INET4", ""}, {"uu", "UUID", ""},
}

var binaryValues = []string{
	// every column NULL
	strings.TrimSuffix(strings.Repeat("NULL,", len(binaryTypes)), ","),
	"-128, 255, -32768, 65535, -8388608, 16777215, 42, -2147483648, 4294967295, -9223372036854775808, 18446744073709551615," +
		" 0.1, 0.1, 1.5, -12345678901234567890123456789012345.123456789012345678901234567890," +
		" '0000-00-00', '0000-00-00 00:00:00', '2024-02-29 23:59:59.999', '1000-01-01 00:00:00.000001'," +
		" '2038-01-19 03:14:07.123456', '-838:59:59', '838:59:59.999999', 0, 0, 0xFFFFFFFFFFFFFFFF," +
		" 'b c', 'x,z', 'ab', '😀 ü', 'caf\xe9', 0x00FF0A5C, REPEAT(0x00FF0A5C0D, 1000), '{\"a\": [1, 2.5, null]}', POINT(1.5, -2.25), '::1', '10.0.0.1', '123e4567-e89b-12d3-a456-426614174000'",
	"127, 0, 32767, 0, 8388607, 0, 0, 2147483647, 0, 9223372036854775807, 0," +
		" 3.4028235e38, 1.7976931348623157e308, -0.001, 0," +
		" '9999-12-31', '9999-12-31 23:59:59', '1970-01-01 00:00:00.000', '2000-01-01 12:00:00.5'," +
		" '1970-01-01 00:00:01.000000', '-00:00:01', '00:00:00.000001', 1901, 1, 0," +
		" '', '', '', '', '', 0x00000000, '', '[]', POINT(0, 0), '2001:db8::ff00:42:8329', '0.0.0.0', '00000000-0000-0000-0000-000000000000'",
	"-1, 1, -1, 1, -1, 1, 999999, -1, 1, -1, 1," +
		" 1.4e-45, 5e-324, 0, 0.000000000000000000000000000001," +
		" '2024-01-01', '2024-01-01 00:00:00', '2024-01-01 00:00:00.001', '2024-01-01 00:00:00.000000'," +
		" '2024-06-01 10:00:00', '100:00:00', '-00:00:00.5', 2155, 0, 1," +
		" 'a', 'x,y,z', ' a', '\\t\\n\\\\', 'x', 0x5C5C5C5C, X'', '\"s\"', POINT(-1e300, 1e-300), '::', '255.255.255.255', 'ffffffff-ffff-ffff-ffff-ffffffffffff'",
	"0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0," +
		" -0.0, -1.0e-10, 1234567.8915, 1," +
		" '2000-02-29', '2000-02-29 02:03:04', '2000-02-29 02:03:04.120', '2000-02-29 02:03:04.000120'," +
		" '2000-02-29 02:03:04.000001', '12:34:56', '-12:34:56.000001', 2000, 1, 9223372036854775808," +
		" 'a', 'y', 'zz', 'plain', 'plain', 0x41424344, 0x41, 'null', ST_GeomFromText('POINT(3 4)'), '::ffff:1.2.3.4', '127.0.0.1', '6ccd780c-baba-1026-9564-5b8c656024db'",
}

// TestWireBinaryReadsWhatTheTextSays reads a table of every column type in
// the binary protocol and in the text one: every value comes out as the
// same text, floats as the same number, NULL as NULL.
func TestWireBinaryReadsWhatTheTextSays(t *testing.T) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "wirebin", ExtraArgs: []string{"--max-allowed-packet=64M"}})
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(2*time.Minute))
	defer cancel()
	var defs, exprs, names []string
	for _, c := range binaryTypes {
		defs = append(defs, c.name+" "+c.typ)
		names = append(names, c.name)
		e := c.textExpr
		if e == "" {
			e = c.name
		}
		exprs = append(exprs, e)
	}
	stmts := []string{"CREATE DATABASE wb", "SET SESSION sql_mode = '', time_zone = '+00:00'",
		"CREATE TABLE wb.t (n INT PRIMARY KEY, " + strings.Join(defs, ", ") + ")"}
	for i, v := range binaryValues {
		stmts = append(stmts, fmt.Sprintf("INSERT INTO wb.t VALUES (%d, %s)", i, v))
	}
	m.Exec(t, stmts...)

	c, w, err := wireConn(t, m.RootDSN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx, "SET SESSION character_set_results = binary, time_zone = '+00:00'"); err != nil {
		t.Fatal(err)
	}
	got, err := binaryRows(ctx, c, w, "SELECT "+strings.Join(names, ", ")+" FROM wb.t ORDER BY n")
	if err != nil {
		t.Fatalf("binary: %v", err)
	}
	want, err := wireRows(ctx, c, w, "SELECT "+strings.Join(exprs, ", ")+" FROM wb.t ORDER BY n")
	if err != nil {
		t.Fatalf("text: %v", err)
	}
	if len(got) != len(binaryValues) || len(want) != len(got) {
		t.Fatalf("%d rows in binary, %d in text, want %d", len(got), len(want), len(binaryValues))
	}
	for r := range got {
		for i, col := range binaryTypes {
			g, w := got[r][i], want[r][i]
			if (g == nil) != (w == nil) {
				t.Errorf("row %d %s %s: binary %q, text %q: NULL on one side only", r, col.name, col.typ, g, w)
				continue
			}
			switch col.typ {
			case "FLOAT", "DOUBLE":
				gf, gerr := strconv.ParseFloat(string(g), 64)
				wf, werr := strconv.ParseFloat(string(w), 64)
				if col.typ == "FLOAT" {
					gf = float64(float32(gf)) // what the server does when it loads the text
				}
				if g != nil && (gerr != nil || werr != nil || math.Float64bits(gf) != math.Float64bits(wf)) {
					t.Errorf("row %d %s %s: binary %q, text %q: not the same number", r, col.name, col.typ, g, w)
				}
			case "DOUBLE(10,3)":
				// The text protocol rounds to the column's decimals; the
				// binary value is the double as stored.
				gf, err := strconv.ParseFloat(string(g), 64)
				if g != nil && (err != nil || strconv.FormatFloat(gf, 'f', 3, 64) != string(w)) {
					t.Errorf("row %d %s %s: binary %q, text %q: not the same number", r, col.name, col.typ, g, w)
				}
			default:
				if string(g) != string(w) {
					t.Errorf("row %d %s %s: binary %q, text %q", r, col.name, col.typ, g, w)
				}
			}
		}
	}
	// The float text is the short one where it is exact.
	if f := string(got[1][11]); f != "0.1" {
		t.Errorf("FLOAT 0.1 reads as %q, want 0.1", f)
	}

	// Statements are closed: none left open on the server.
	var open int
	if err := c.QueryRowContext(ctx, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'PREPARED_STMT_COUNT'").Scan(&open); err != nil || open != 0 {
		t.Errorf("prepared statements left open: %d (%v)", open, err)
	}

	// A value longer than a packet, and many rows.
	big, err := binaryRows(ctx, c, w, "SELECT REPEAT('b', 20 * 1024 * 1024), seq, NULL FROM test.seq_1_to_3")
	if err != nil || len(big) != 3 || len(big[2][0]) != 20<<20 || string(big[2][1]) != "3" || big[2][2] != nil {
		t.Fatalf("big values: %d rows, %v", len(big), err)
	}
	n := 0
	err = c.Raw(func(any) error {
		return w.QueryBinary(ctx, "SELECT seq, seq * 2.5e0, CONCAT('x', seq) FROM test.seq_1_to_200000", func(f [][]byte) error {
			n++
			if want := strconv.Itoa(n); string(f[0]) != want || string(f[2]) != "x"+want {
				return fmt.Errorf("row %d: %q", n, f)
			}
			return nil
		})
	})
	if err != nil || n != 200000 {
		t.Fatalf("200000 rows: %d, %v", n, err)
	}
}

// TestWireBinaryErrors: a refused prepare leaves the connection usable and
// says so; an error in the middle of the rows is the server's and closes it.
func TestWireBinaryErrors(t *testing.T) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "wirebinerr"})
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(2*time.Minute))
	defer cancel()
	c, w, err := wireConn(t, m.RootDSN)
	if err != nil {
		t.Fatal(err)
	}
	m.Exec(t, "SET GLOBAL max_prepared_stmt_count = 0")
	_, err = binaryRows(ctx, c, w, "SELECT 1")
	var me *mysql.MySQLError
	if !errors.Is(err, ErrNoBinary) || !errors.As(err, &me) || me.Number != 1461 {
		t.Fatalf("prepare refused: %v", err)
	}
	rows, err := wireRows(ctx, c, w, "SELECT 'still here'")
	if err != nil || string(rows[0][0]) != "still here" {
		t.Fatalf("wire after a refused prepare: %q %v", rows, err)
	}
	if err := c.PingContext(ctx); err != nil {
		t.Fatalf("driver after a refused prepare: %v", err)
	}
	m.Exec(t, "SET GLOBAL max_prepared_stmt_count = DEFAULT")

	// A syntax error is refused at prepare too.
	if _, err := binaryRows(ctx, c, w, "SELEC 1"); !errors.Is(err, ErrNoBinary) {
		t.Fatalf("syntax error: %v", err)
	}

	n := 0
	err = c.Raw(func(any) error {
		return w.QueryBinary(ctx, "SELECT seq, IF(seq < 100000, seq, (SELECT 1 UNION ALL SELECT 2)) FROM test.seq_1_to_200000",
			func([][]byte) error { n++; return nil })
	})
	if !errors.As(err, &me) || me.Number != 1242 || n < 1000 {
		t.Fatalf("error mid-stream: %v after %d rows", err, n)
	}
	if _, err := binaryRows(ctx, c, w, "SELECT 1"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("wire after an error: %v", err)
	}
}

func TestAppendPadded(t *testing.T) {
	for _, c := range []struct {
		v, width int
		want     string
	}{{0, 4, "0000"}, {5, 2, "05"}, {123, 2, "123"}, {2024, 4, "2024"}, {0, 1, "0"}, {838, 2, "838"}} {
		if got := string(appendPadded(nil, c.v, c.width)); got != c.want {
			t.Errorf("appendPadded(%d, %d) = %q, want %q", c.v, c.width, got, c.want)
		}
	}
}
