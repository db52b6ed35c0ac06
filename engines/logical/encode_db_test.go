package logical

import (
	"bytes"
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestIntegerTextMatchesDriver checks that reading integers as text
// (selectExpr) dumps exactly the bytes the driver's parsed integers did, for
// every integer type, signed and unsigned, at their limits, NULL, and
// ZEROFILL.
func TestIntegerTextMatchesDriver(t *testing.T) {
	t.Parallel()
	m := startMariaDB(t, "ints")
	m.Exec(t,
		"CREATE DATABASE it",
		`CREATE TABLE it.i (id INT PRIMARY KEY,
  t TINYINT, tu TINYINT UNSIGNED, s SMALLINT, su SMALLINT UNSIGNED, m MEDIUMINT, mu MEDIUMINT UNSIGNED,
  i INT(3), iu INT UNSIGNED, b BIGINT, bu BIGINT UNSIGNED, z INT(6) ZEROFILL, bz BIGINT(25) UNSIGNED ZEROFILL, bo BOOLEAN)`,
		`INSERT INTO it.i VALUES
  (1, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0, 0, 0, 0),
  (2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807, 18446744073709551615, 4294967295, 18446744073709551615, 1),
  (3, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, 42, 42, 0),
  (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (5, 7, 200, 1000, 40000, 100000, 10000000, 12345, 3000000000, 1234567890123, 10000000000000000000, 7, 123, 1)`,
	)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(time.Minute))
	defer cancel()
	c, err := m.DB(t).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if _, err := c.ExecContext(ctx, "SET SESSION character_set_results = binary"); err != nil {
		t.Fatal(err)
	}
	tables, err := listTables(ctx, c, []string{"it"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := readSchema(ctx, c, []string{"it"}, tables); err != nil {
		t.Fatal(err)
	}
	var plain, exprs []string
	for _, col := range tables[0].dumpColumns() {
		plain = append(plain, qi(col.Name))
		exprs = append(exprs, selectExpr(col, readDriver))
	}
	if !strings.Contains(strings.Join(exprs, ","), "CONCAT(`bu`)") || strings.Contains(strings.Join(exprs, ","), "CONCAT(`z`)") {
		t.Fatalf("select expressions %v", exprs)
	}
	dump := func(cols []string) []byte {
		var out bytes.Buffer
		enc := newRowEncoder(&out)
		err := c.Raw(func(dc any) error {
			rows, err := dc.(driver.QueryerContext).QueryContext(ctx, "SELECT "+strings.Join(cols, ", ")+" FROM it.i ORDER BY id", nil)
			if err != nil {
				return err
			}
			defer func() { _ = rows.Close() }()
			vals := make([]driver.Value, len(cols))
			for {
				if err := rows.Next(vals); errors.Is(err, io.EOF) {
					return nil
				} else if err != nil {
					return err
				}
				if err := enc.writeRow(vals); err != nil {
					return err
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := enc.flush(); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	want, got := dump(plain), dump(exprs)
	if !bytes.Equal(got, want) {
		t.Fatalf("integers read as text dump\n%s\nthe driver's integers dumped\n%s", got, want)
	}
	if !bytes.Contains(want, []byte("\t18446744073709551615\t4294967295\t18446744073709551615\t1\n")) {
		t.Fatalf("unexpected dump:\n%s", want)
	}
}

// TestWireDumpsWhatTheDriverDumps backs the every-type schema up twice:
// off the wire (the default) and through the driver (a compressed
// connection, which the wire cannot read). Every stream must hold the same
// bytes, but for numbers: off the wire (binary rows) a FLOAT is its
// shortest float text and a DOUBLE(M,D) the double as stored, through the
// driver the server's text of the double; both read back as the same value.
func TestWireDumpsWhatTheDriverDumps(t *testing.T) {
	// Not parallel: wirePieces counts every backup in the package.
	m := startMariaDB(t, "wiredump")
	loadTypes(t, m)
	m.Exec(t, `CREATE TABLE rt.zf (id INT PRIMARY KEY, z INT(6) ZEROFILL, bz BIGINT(25) UNSIGNED ZEROFILL, y YEAR)`,
		`INSERT INTO rt.zf VALUES (1, 0, 0, 0), (2, 4294967295, 18446744073709551615, 2155), (3, 42, 42, NULL), (4, NULL, NULL, 1901)`)

	before := wirePieces.Load()
	wire, _ := backupMem(t, smallPieces, engines.BackupParams{DSN: m.DSN, History: true, Databases: []string{"rt"}, Parallel: 2})
	if wirePieces.Load() == before {
		t.Fatal("the default backup did not read off the wire")
	}
	before = wirePieces.Load()
	drv, _ := backupMem(t, smallPieces, engines.BackupParams{DSN: m.DSN + "?compress=true", History: true, Databases: []string{"rt"}, Parallel: 2})
	if n := wirePieces.Load() - before; n != 0 {
		t.Fatalf("a compressed connection read %d pieces off the wire", n)
	}
	if len(wire.streams) != len(drv.streams) {
		t.Fatalf("%d streams off the wire, %d through the driver", len(wire.streams), len(drv.streams))
	}
	for name, ws := range wire.streams {
		ds, ok := drv.streams[name]
		if !ok {
			t.Errorf("stream %s only off the wire", name)
			continue
		}
		if name == "meta" { // differs in the byte counts of floats' pieces
			continue
		}
		if d := sameDump(ws.buf.Bytes(), ds.buf.Bytes()); d != "" {
			t.Errorf("stream %s: %s", name, d)
		}
	}
	if zf := wire.streams[dataStream("rt", "zf", 0)]; zf == nil || !bytes.Contains(zf.buf.Bytes(), []byte("2\t4294967295\t18446744073709551615\t2155\n")) {
		t.Errorf("zerofill stream: %v", zf)
	}
}

// sameDump compares two dumps field by field, taking fields that parse to
// the same double as equal; it describes the first difference, or "".
func sameDump(a, b []byte) string {
	ar, br := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	if len(ar) != len(br) {
		return fmt.Sprintf("%d rows against %d", len(ar), len(br))
	}
	for i := range ar {
		af, bf := bytes.Split(ar[i], []byte("\t")), bytes.Split(br[i], []byte("\t"))
		if len(af) != len(bf) {
			return fmt.Sprintf("row %d: %d fields against %d", i, len(af), len(bf))
		}
		for j := range af {
			if bytes.Equal(af[j], bf[j]) {
				continue
			}
			x, err1 := strconv.ParseFloat(string(af[j]), 64)
			y, err2 := strconv.ParseFloat(string(bf[j]), 64)
			// A FLOAT off the wire is its shortest float text ("1.2345678"),
			// through the driver the double it widens to: the same float.
			sameFloat := float64(float32(y)) == y && float32(x) == float32(y)
			// A DOUBLE(M,D) through the driver is the server's text,
			// rounded to D places; off the wire, the double stored.
			rounded := false
			if dot := bytes.IndexByte(bf[j], '.'); dot >= 0 && !bytes.ContainsAny(bf[j], "eE") {
				rounded = strconv.FormatFloat(x, 'f', len(bf[j])-dot-1, 64) == string(bf[j])
			}
			if err1 != nil || err2 != nil || math.Float64bits(x) != math.Float64bits(y) && !sameFloat && !rounded {
				return fmt.Sprintf("row %d field %d: %q against %q", i, j, af[j], bf[j])
			}
		}
	}
	return ""
}

// TestBackupWithoutPreparedStatements: a server that refuses prepared
// statements is read as text off the wire, with a warning, and restores the
// same.
func TestBackupWithoutPreparedStatements(t *testing.T) {
	// Not parallel: wirePieces counts every backup in the package.
	m := startMariaDB(t, "noprep")
	loadTypes(t, m)
	m.Exec(t, "SET GLOBAL max_prepared_stmt_count = 0")
	before := wirePieces.Load()
	a, res := backupMem(t, smallPieces, engines.BackupParams{DSN: m.DSN, History: true, Databases: []string{"rt"}, Parallel: 2})
	if wirePieces.Load() == before {
		t.Fatal("the backup did not read off the wire")
	}
	warned := 0
	for _, w := range res.Warnings {
		if strings.Contains(w, "refused a prepared statement") {
			warned++
		}
	}
	if warned != 1 {
		t.Errorf("want one warning about prepared statements: %q", res.Warnings)
	}
	m.Exec(t, "SET GLOBAL max_prepared_stmt_count = DEFAULT")
	dst := startMariaDB(t, "noprep-dst")
	restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN, Parallel: 2})
	testenv.Compare(t, m.DB(t), dst.DB(t), "rt")
}
