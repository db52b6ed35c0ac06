package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestCancelledRestoreThenNext runs issue 20 item 3 through the real
// controller and agent (`tidemark dev`): a restore is cancelled while its
// ALTER TABLE ... ADD INDEX waits on the server (a reader holds the
// table's metadata lock), and a second restore of the same instance is
// submitted right away. The second one's first DROP reaches the server only
// after the first one's ALTER is gone from the processlist (by the
// server's general log and clock), and the data ends exactly as the
// second backup has it. Before the fix the controller assigned the second
// restore at once and the agent ran it while the ALTER still waited.
func TestCancelledRestoreThenNext(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "serial-e2e"})
	db := src.DB(t)
	rows := 200000
	if testing.Short() {
		rows = 100000
	}
	src.Exec(t, "CREATE DATABASE serial", "CREATE TABLE serial.t (id INT PRIMARY KEY, v INT NOT NULL, KEY v (v))",
		fmt.Sprintf("INSERT INTO serial.t SELECT seq, seq %% 1000 FROM serial.seq_1_to_%d", rows))

	dir := t.TempDir()
	addr := testenv.FreeAddr(t)
	startDev(t, filepath.Join(dir, "dev"), src.DSN, addr, "--heartbeat-interval", "200ms", "--lease-duration", "3s")
	ctl := []string{"--controller", addr}
	testenv.WaitFor(t, "the local agent to be connected", 30*time.Second, func() error {
		r := tm(t, 10*time.Second, append([]string{"agents", "-o", "json"}, ctl...)...)
		if r.code != 0 {
			return fmt.Errorf("agents: %s", r.err)
		}
		for _, a := range decode[[]map[string]any](t, r) {
			if a["connected"] == true {
				return nil
			}
		}
		return fmt.Errorf("not connected: %s", r.out)
	})
	backupA := lastLine(must(t, 120*time.Second, append([]string{"backup", "--instance", "local", "--wait"}, ctl...)...).out)
	src.Exec(t, "UPDATE serial.t SET v = v + 5000", fmt.Sprintf("INSERT INTO serial.t SELECT seq, 7 FROM serial.seq_%d_to_%d", rows+1, rows+100))
	backupB := lastLine(must(t, 120*time.Second, append([]string{"backup", "--instance", "local", "--wait"}, ctl...)...).out)
	summary := func() string {
		var n, sum int64
		if err := db.QueryRow("SELECT COUNT(*), SUM(v) FROM serial.t").Scan(&n, &sum); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%d rows, sum %d", n, sum)
	}
	want := summary()

	src.Exec(t, "DROP DATABASE serial", "TRUNCATE mysql.general_log", "SET GLOBAL log_output = 'TABLE'", "SET GLOBAL general_log = ON")
	// The reader takes serial.t's metadata lock the moment the restore
	// creates it, so the restore's ALTER waits once the data is in.
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	locked := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(testenv.Wait(2 * time.Minute))
		for time.Now().Before(deadline) {
			if _, err := conn.ExecContext(context.Background(), "START TRANSACTION"); err != nil {
				locked <- err
				return
			}
			if _, err := conn.ExecContext(context.Background(), "SELECT 1 FROM serial.t LIMIT 0"); err == nil {
				locked <- nil
				return
			}
			_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
		}
		locked <- fmt.Errorf("serial.t not created in time")
	}()
	job1 := lastLine(must(t, 30*time.Second, append([]string{"restore", backupA, "--to-instance", "local", "--no-wait"}, ctl...)...).out)
	var alter int64
	testenv.WaitFor(t, "restore 1's ALTER TABLE waiting for the metadata lock", 120*time.Second, func() error {
		return db.QueryRow("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'ALTER TABLE%' AND STATE LIKE '%metadata lock%'").Scan(&alter)
	})
	must(t, 30*time.Second, append([]string{"job", "cancel", job1, "--reason", "e2e"}, ctl...)...)
	job2 := lastLine(must(t, 30*time.Second, append([]string{"restore", backupB, "--to-instance", "local", "--drop-existing", "--no-wait"}, ctl...)...).out)

	// DATETIME(6) text sorts as the times do. lastAlive is the server's
	// time of the last look that still saw the ALTER: a DROP logged at or
	// before it ran beside the ALTER. (Comparing with the first look that
	// missed it would blame the poll's own delay.)
	var lastAlive string
	var firstDrop sql.NullString
	deadline := time.Now().Add(testenv.Wait(60 * time.Second))
	for {
		if time.Now().After(deadline) {
			t.Fatal("restore 1's ALTER still runs a minute after the cancel")
		}
		var now string
		var n int
		if err := db.QueryRow("SELECT NOW(6), COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", alter).Scan(&now, &n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		lastAlive = now
		if err := db.QueryRow("SELECT MIN(event_time) FROM mysql.general_log WHERE argument LIKE 'DROP %'").Scan(&firstDrop); err != nil {
			t.Fatal(err)
		}
		if firstDrop.Valid && firstDrop.String <= lastAlive {
			t.Fatalf("restore 2 (job %s) started (its DROP at %s) while restore 1's ALTER (connection %d) still ran (seen at %s)", job2, firstDrop.String, alter, lastAlive)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := <-locked; err != nil {
		t.Fatal(err)
	}
	_, _ = conn.ExecContext(context.Background(), "COMMIT")
	w := tm(t, 120*time.Second, append([]string{"job", "watch", job2}, ctl...)...)
	if w.code != 0 {
		t.Fatalf("restore 2 (job %s): exit %d\n%s\n%s", job2, w.code, w.out, w.err)
	}
	if err := db.QueryRow("SELECT MIN(event_time) FROM mysql.general_log WHERE argument LIKE 'DROP %'").Scan(&firstDrop); err != nil || !firstDrop.Valid {
		t.Fatalf("no DROP by restore 2 in the general log: %v", err)
	}
	src.Exec(t, "SET GLOBAL general_log = OFF")
	t.Logf("restore 1's ALTER last seen at %s, restore 2's first DROP at %s", lastAlive, firstDrop.String)
	if firstDrop.String <= lastAlive {
		t.Errorf("restore 2's first DROP at %s, while restore 1's ALTER still ran at %s", firstDrop.String, lastAlive)
	}
	if got := summary(); got != want {
		t.Errorf("after restore 2: %s, want backup %s's %s", got, backupB, want)
	}
	for _, j := range decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"jobs", "-o", "json"}, ctl...)...)) {
		if j["id"] == job1 && !strings.Contains(strings.ToLower(fmt.Sprint(j["state"])), "cancel") {
			t.Errorf("job %s: %v", job1, j)
		}
	}
}
