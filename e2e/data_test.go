package e2e

import (
	"context"
	"fmt"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// loadBig fills a server with enough rows that a logical backup with one
// worker takes a few seconds: the sample schema, and a narrow table of
// rows generated server-side (MariaDB's sequence engine), without binlog.
func loadBig(t *testing.T, m *testenv.MariaDB, rows int) {
	t.Helper()
	db := m.DB(t)
	testenv.LoadSample(t, db, "shop", 2000)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	for _, stmt := range []string{
		"SET SESSION sql_log_bin = 0",
		"CREATE TABLE shop.events (id INT UNSIGNED NOT NULL PRIMARY KEY, kind INT NOT NULL, tag CHAR(32) NOT NULL, at DATETIME NOT NULL) ENGINE=MyISAM",
		fmt.Sprintf("INSERT INTO shop.events SELECT seq, seq %% 17, MD5(seq), '2024-01-01' + INTERVAL seq SECOND FROM shop.seq_1_to_%d", rows),
	} {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
}
