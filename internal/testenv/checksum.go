package testenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TableSum is what Checksums records for one table.
type TableSum struct {
	Rows     int64  // SELECT COUNT(*)
	Checksum uint64 // CHECKSUM TABLE ... EXTENDED: row by row, whatever the engine
}

var systemSchemas = []string{"mysql", "information_schema", "performance_schema", "sys"}

// Checksums returns the row count and checksum of every base table in schemas
// (every non-system schema when none is named), keyed "db.table". Views are
// skipped; system-versioned tables are included. The checksum is order
// independent, so tables without a primary key compare too.
func Checksums(t testing.TB, db *sql.DB, schemas ...string) map[string]TableSum {
	t.Helper()
	sums, err := checksums(context.Background(), db, schemas)
	if err != nil {
		t.Fatalf("testenv: checksums: %v", err)
	}
	return sums
}

func checksums(ctx context.Context, db *sql.DB, schemas []string) (map[string]TableSum, error) {
	q := "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')"
	var args []any
	if len(schemas) > 0 {
		q += " AND TABLE_SCHEMA IN (" + placeholders(len(schemas)) + ")"
		for _, s := range schemas {
			args = append(args, s)
		}
	} else {
		q += " AND TABLE_SCHEMA NOT IN (" + placeholders(len(systemSchemas)) + ")"
		for _, s := range systemSchemas {
			args = append(args, s)
		}
	}
	rows, err := db.QueryContext(ctx, q+" ORDER BY TABLE_SCHEMA, TABLE_NAME", args...)
	if err != nil {
		return nil, err
	}
	var tables [][2]string
	for rows.Next() {
		var s, n string
		if err := rows.Scan(&s, &n); err != nil {
			_ = rows.Close()
			return nil, err
		}
		tables = append(tables, [2]string{s, n})
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}

	sums := make(map[string]TableSum, len(tables))
	for _, tb := range tables {
		name := tb[0] + "." + tb[1]
		qn := quoteIdent(tb[0]) + "." + quoteIdent(tb[1])
		var sum TableSum
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+qn).Scan(&sum.Rows); err != nil {
			return nil, fmt.Errorf("count %s: %w", name, err)
		}
		var table string
		var checksum sql.NullString // unsigned, may not fit int64
		if err := db.QueryRowContext(ctx, "CHECKSUM TABLE "+qn+" EXTENDED").Scan(&table, &checksum); err != nil {
			return nil, fmt.Errorf("checksum %s: %w", name, err)
		}
		if !checksum.Valid { // CHECKSUM TABLE reports a vanished table as NULL, not an error
			return nil, fmt.Errorf("checksum %s: table is gone", name)
		}
		if sum.Checksum, err = strconv.ParseUint(checksum.String, 10, 64); err != nil {
			return nil, fmt.Errorf("checksum %s: %w", name, err)
		}
		sums[name] = sum
	}
	return sums, nil
}

// Compare reports with t.Errorf every base table of schemas (every non-system
// schema when none is named) that differs between a and b or exists on one
// side only, and every named schema missing on a side, so that a typo cannot
// make two empty sides compare equal.
func Compare(t testing.TB, a, b *sql.DB, schemas ...string) {
	t.Helper()
	ctx := context.Background()
	for _, s := range schemas {
		for _, side := range []struct {
			name string
			db   *sql.DB
		}{{"a", a}, {"b", b}} {
			var n int
			if err := side.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", s).Scan(&n); err != nil {
				t.Fatalf("testenv: compare: %v", err)
			}
			if n == 0 {
				t.Errorf("testenv: compare: schema %s missing on %s", s, side.name)
			}
		}
	}
	sa, err := checksums(ctx, a, schemas)
	if err != nil {
		t.Fatalf("testenv: compare: checksums of a: %v", err)
	}
	sb, err := checksums(ctx, b, schemas)
	if err != nil {
		t.Fatalf("testenv: compare: checksums of b: %v", err)
	}
	names := make([]string, 0, len(sa)+len(sb))
	for n := range sa {
		names = append(names, n)
	}
	for n := range sb {
		if _, ok := sa[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		x, inA := sa[n]
		y, inB := sb[n]
		switch {
		case !inA:
			t.Errorf("testenv: compare: table %s missing on a (b has %d rows)", n, y.Rows)
		case !inB:
			t.Errorf("testenv: compare: table %s missing on b (a has %d rows)", n, x.Rows)
		case x != y:
			t.Errorf("testenv: compare: table %s differs: a has %d rows, checksum %d; b has %d rows, checksum %d", n, x.Rows, x.Checksum, y.Rows, y.Checksum)
		}
	}
}

func placeholders(n int) string { return strings.TrimSuffix(strings.Repeat("?,", n), ",") }
