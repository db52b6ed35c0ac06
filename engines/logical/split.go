package logical

import (
	"context"
	"database/sql"
	"math/big"

	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

// piece is one range of one table, dumped into one stream.
type piece struct {
	table *tableInfo
	n     int    // 0-based piece number within the table
	where string // "" for the whole table
	lo    string // bounds for the stream metadata; "" when open
	hi    string
	rows  int64
	bytes int64
	sum   rowSum // the rows' checksum
}

// Default piece sizes: large enough that per-statement overhead vanishes,
// small enough that several workers share one big table and that one LOAD
// DATA transaction stays modest on the target.
const (
	defaultPieceRows  = 250_000
	defaultPieceBytes = 64 << 20
	maxPieces         = 4096
)

// planPieces splits t by its integer key into about equal key ranges. The
// first and last ranges are open, so rows inserted outside MIN..MAX after
// the estimate are still covered; the ranges only shape the work.
func planPieces(ctx context.Context, q *sql.Conn, t *tableInfo, pieceRows, pieceBytes int64) error {
	n := int64(1)
	if t.SplitKey != "" {
		n = max(ceilDiv(t.Rows, pieceRows), ceilDiv(t.DataLength, pieceBytes))
	}
	if n <= 1 {
		t.pieces = []piece{{table: t}}
		return nil
	}
	n = min(n, maxPieces)
	k := qi(t.SplitKey)
	var lo, hi sql.NullString
	if err := q.QueryRowContext(ctx, "SELECT CONCAT(MIN("+k+")), CONCAT(MAX("+k+")) FROM "+qname(t.DB, t.Name)).Scan(&lo, &hi); err != nil {
		return mysqlx.TranslateNeed("reading the key range of "+t.DB+"."+t.Name, err, "SELECT on "+qi(t.DB)+".*")
	}
	if !lo.Valid || !hi.Valid {
		t.pieces = []piece{{table: t}}
		return nil
	}
	minV, ok1 := new(big.Int).SetString(lo.String, 10)
	maxV, ok2 := new(big.Int).SetString(hi.String, 10)
	if !ok1 || !ok2 {
		t.pieces = []piece{{table: t}}
		return nil
	}
	span := new(big.Int).Sub(maxV, minV)
	span.Add(span, big.NewInt(1))
	if span.Cmp(big.NewInt(n)) < 0 {
		n = span.Int64()
	}
	if n <= 1 {
		// One key value, however big the table looks: its estimates are
		// stale (rows deleted) or its space is empty partitions.
		t.pieces = []piece{{table: t}}
		return nil
	}
	step := new(big.Int).Div(span, big.NewInt(n))
	bounds := make([]string, 0, n-1)
	for i := int64(1); i < n; i++ {
		b := new(big.Int).Mul(step, big.NewInt(i))
		b.Add(b, minV)
		bounds = append(bounds, b.String())
	}
	t.pieces = t.pieces[:0]
	for i := 0; i <= len(bounds); i++ {
		p := piece{table: t, n: i}
		switch {
		case i == 0:
			p.hi = bounds[0]
			p.where = k + " < " + p.hi
		case i == len(bounds):
			p.lo = bounds[i-1]
			p.where = k + " >= " + p.lo
		default:
			p.lo, p.hi = bounds[i-1], bounds[i]
			p.where = k + " >= " + p.lo + " AND " + k + " < " + p.hi
		}
		t.pieces = append(t.pieces, p)
	}
	return nil
}

func ceilDiv(a, b int64) int64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	return (a + b - 1) / b
}
