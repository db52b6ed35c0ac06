package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"
)

func sampleDDL(schema string) []string {
	q := quoteIdent(schema)
	return []string{
		"CREATE DATABASE " + q + " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
		`CREATE TABLE ` + q + `.customers (
  id INT UNSIGNED NOT NULL,
  email VARCHAR(190) NOT NULL,
  name VARCHAR(100) NOT NULL,
  country CHAR(2) NOT NULL,
  created_at DATETIME NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_email (email),
  KEY idx_country_created (country, created_at)
) ENGINE=InnoDB`,
		`CREATE TABLE ` + q + `.orders (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  customer_id INT UNSIGNED NOT NULL,
  status ENUM('new','paid','shipped','returned') NOT NULL,
  total DECIMAL(12,2) NOT NULL,
  note VARCHAR(255) NULL,
  payload BLOB NULL,
  ordered_at DATETIME(6) NOT NULL,
  shipped_at DATETIME(6) NULL,
  attrs JSON NULL,
  PRIMARY KEY (id),
  KEY idx_customer (customer_id),
  KEY idx_status_ordered (status, ordered_at)
) ENGINE=InnoDB`,
		`CREATE TABLE ` + q + `.audit_log (
  at DATETIME(6) NOT NULL,
  actor VARCHAR(64) NOT NULL,
  action VARCHAR(32) NOT NULL,
  detail TEXT NULL,
  KEY idx_at (at)
) ENGINE=InnoDB`,
		`CREATE TABLE ` + q + `.legacy_counters (
  name VARCHAR(64) NOT NULL,
  hits BIGINT NOT NULL,
  ratio DOUBLE NULL,
  touched TIMESTAMP NULL,
  PRIMARY KEY (name)
) ENGINE=MyISAM DEFAULT CHARSET=latin1`,
		`CREATE VIEW ` + q + `.customer_order_totals AS
SELECT c.id, c.name, COUNT(o.id) AS orders, COALESCE(SUM(o.total), 0) AS total
FROM ` + q + `.customers c LEFT JOIN ` + q + `.orders o ON o.customer_id = c.id
GROUP BY c.id, c.name`,
	}
}

var (
	firstNames = []string{"Ana", "Zoë", "Łukasz", "Søren", "李雷", "Mårten", "José", "Ngọc", "Aylin", "Olúwaseun", "O'Brien", "Ñusta"}
	lastNames  = []string{"García", "Müller", "Kowalski", "Nakamura", "Smith", "Øvergaard", "Dubois", "Nguyễn", "Yılmaz", "Adébáyọ̀"}
	countries  = []string{"DE", "FR", "PL", "JP", "US", "NO", "ES", "VN", "TR", "NG"}
	notes      = []string{"gift wrap 🎁", "leave at the door", "Lieferung bis Freitag", "配送は午前中にお願いします", `it's "fragile" \ handle with care`, "tab\tand\nnewline", "", "🐬🚀 x2"}
	statuses   = []string{"new", "paid", "shipped", "returned"}
	actions    = []string{"login", "logout", "update", "delete", "export"}
	sampleBase = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
)

// LoadSample creates database schema (utf8mb4) and fills it deterministically:
//
//   - customers (rows/10): InnoDB, primary key, unique and composite indexes
//   - orders (rows): InnoDB, AUTO_INCREMENT key, ENUM, DECIMAL, utf8mb4 text
//     (CJK, emoji, quotes, backslashes, tabs), BLOB with every byte value,
//     DATETIME(6), JSON, and NULLs in every nullable column
//   - audit_log (rows/4): InnoDB without a primary key, with duplicate rows
//   - legacy_counters (rows/20): MyISAM, latin1, DOUBLE and TIMESTAMP
//   - customer_order_totals: a view joining customers and orders
//
// Every value depends only on the table and the row number, so two loads with
// the same rows compare equal.
func LoadSample(t testing.TB, db *sql.DB, schema string, rows int) {
	t.Helper()
	ctx := context.Background()
	// One connection with a fixed time zone: TIMESTAMP values are stored in
	// UTC converted from the session's zone, which a caller's DSN may set.
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatalf("testenv: sample %s: %v", schema, err)
	}
	defer func() { _ = conn.Close() }()
	for _, stmt := range append([]string{"SET time_zone = '+00:00'"}, sampleDDL(schema)...) {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("testenv: sample %s: %v\n%s", schema, err, stmt)
		}
	}
	q := quoteIdent(schema)
	customers := max(rows/10, 1)
	load := func(table, cols string, n int, row func(i int) []any) {
		t.Helper()
		if err := insertRows(ctx, conn, q+"."+table, cols, n, row); err != nil {
			t.Fatalf("testenv: sample %s.%s: %v", schema, table, err)
		}
	}
	load("customers", "id, email, name, country, created_at", customers, func(i int) []any {
		r := mix(1, i)
		name := firstNames[r%uint64(len(firstNames))] + " " + lastNames[(r>>8)%uint64(len(lastNames))]
		return []any{i + 1, fmt.Sprintf("user%d@example.com", i+1), name,
			countries[(r>>16)%uint64(len(countries))], sampleBase.Add(time.Duration(i) * time.Hour).Format(time.DateTime)}
	})
	load("orders", "id, customer_id, status, total, note, payload, ordered_at, shipped_at, attrs", rows, func(i int) []any {
		r := mix(2, i)
		var note, shipped, attrs, payload any
		if i%7 != 3 {
			note = notes[r%uint64(len(notes))]
		}
		at := sampleBase.Add(time.Duration(i)*37*time.Second + time.Duration(r%1e6)*time.Microsecond)
		if i%4 != 0 {
			shipped = at.Add(time.Duration(r%72+1) * time.Hour).Format("2006-01-02 15:04:05.000000")
		}
		if i%5 != 0 {
			attrs = fmt.Sprintf(`{"channel":%q,"items":%d,"gift":%t,"tags":["a","ü","%d"]}`,
				[]string{"web", "app", "phone"}[r%3], r%9+1, r%2 == 0, i)
		}
		if i%6 != 0 {
			b := make([]byte, 8+r%56)
			for j := range b {
				b[j] = byte(mix(3, i*64+j)) // all 256 values, NUL and quotes included
			}
			payload = b
		}
		return []any{i + 1, int(r%uint64(customers)) + 1, statuses[(r>>4)%4],
			fmt.Sprintf("%d.%02d", r%100000, (r>>20)%100), note, payload,
			at.Format("2006-01-02 15:04:05.000000"), shipped, attrs}
	})
	load("audit_log", "at, actor, action, detail", max(rows/4, 1), func(i int) []any {
		if i%10 == 9 {
			i-- // an exact duplicate of the previous row: no key can tell them apart
		}
		r := mix(4, i)
		var detail any
		if i%3 != 0 {
			detail = fmt.Sprintf("changed %d fields; ref=%x", r%5, r)
		}
		return []any{sampleBase.Add(time.Duration(i) * time.Second).Format("2006-01-02 15:04:05.000000"),
			fmt.Sprintf("svc-%d", r%13), actions[r%uint64(len(actions))], detail}
	})
	load("legacy_counters", "name, hits, ratio, touched", max(rows/20, 1), func(i int) []any {
		r := mix(5, i)
		var ratio, touched any
		if i%4 != 1 {
			ratio = float64(r%10000) / 64 // exact in binary: no rounding drift
		}
		if i%3 != 2 {
			touched = sampleBase.Add(time.Duration(i) * time.Minute).Format(time.DateTime)
		}
		return []any{fmt.Sprintf("counter/%05d", i), int64(r % 1e9), ratio, touched}
	})
}

// insertRows inserts n rows in multi-row INSERTs of at most ~8000 placeholders
// (the protocol allows 65535 per statement).
func insertRows(ctx context.Context, db *sql.Conn, table, cols string, n int, row func(i int) []any) error {
	ncols := strings.Count(cols, ",") + 1
	batch := max(8000/ncols, 1)
	tuple := "(" + strings.TrimSuffix(strings.Repeat("?,", ncols), ",") + ")"
	for start := 0; start < n; start += batch {
		end := min(start+batch, n)
		var sb strings.Builder
		sb.WriteString("INSERT INTO " + table + " (" + cols + ") VALUES ")
		args := make([]any, 0, (end-start)*ncols)
		for i := start; i < end; i++ {
			if i > start {
				sb.WriteByte(',')
			}
			sb.WriteString(tuple)
			args = append(args, row(i)...)
		}
		if _, err := db.ExecContext(ctx, sb.String(), args...); err != nil {
			return err
		}
	}
	return nil
}

// mix is SplitMix64's finaliser over (table, row): deterministic,
// well-spread values without shared generator state.
func mix(table uint64, i int) uint64 {
	z := table<<40 ^ uint64(i) + 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }
