package logical

import (
	"bytes"
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

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
		exprs = append(exprs, selectExpr(col))
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
