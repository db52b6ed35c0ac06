package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// sourcePoint is a moment of a source: its GTID position, its time (a
// second after which nothing more commits) and its data.
type sourcePoint struct {
	gtid string
	time time.Time
	sums map[string]testenv.TableSum
}

func markPoint(t *testing.T, m *testenv.MariaDB, schema string) sourcePoint {
	t.Helper()
	var p sourcePoint
	var unix int64
	if err := m.DB(t).QueryRow("SELECT @@gtid_binlog_pos, UNIX_TIMESTAMP()").Scan(&p.gtid, &unix); err != nil {
		t.Fatal(err)
	}
	p.time = time.Unix(unix, 0).UTC()
	p.sums = testenv.Checksums(t, m.DB(t), schema)
	time.Sleep(1100 * time.Millisecond) // later commits get a later second
	return p
}

func sameAs(t *testing.T, what string, m *testenv.MariaDB, schema string, want map[string]testenv.TableSum) {
	t.Helper()
	got := testenv.Checksums(t, m.DB(t), schema)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: restored tables %v, want %v", what, got, want)
	}
}

// TestPITRStandalone runs the README's standalone point-in-time commands as
// processes: binlog stream, backup, binlog status, restore --to-time and
// --to-gtid onto fresh servers, and a stream stopped by SIGTERM exits 0.
func TestPITRStandalone(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "pitr-src"})
	testenv.LoadSample(t, src.DB(t), "shop", 500)
	repo := "file://" + filepath.Join(t.TempDir(), "repo")
	must(t, 20*time.Second, "repo", "init", "--repo", repo)
	stream := startProc(t, "stream", "binlog", "stream", "--mysql", src.DSN, "--repo", repo, "--flush", "200ms")
	must(t, 60*time.Second, "backup", "--mysql", src.DSN, "--repo", repo)
	src.Exec(t, "UPDATE shop.customers SET name = CONCAT(name, ' jr') WHERE id % 5 = 0",
		"CREATE TABLE shop.notes (id INT PRIMARY KEY, body TEXT)", "INSERT INTO shop.notes VALUES (1, 'first')")
	p1 := markPoint(t, src, "shop")
	src.Exec(t, "DELETE FROM shop.notes", "ALTER TABLE shop.notes ADD COLUMN at DATETIME", "INSERT INTO shop.notes VALUES (2, 'second', NOW())")
	p2 := markPoint(t, src, "shop")
	src.Exec(t, "DROP TABLE shop.notes")

	var want string
	if err := src.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&want); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "binlog status at "+want, 30*time.Second, func() error {
		r := tm(t, 10*time.Second, "binlog", "status", "--repo", repo, "-o", "json")
		if r.code != 0 {
			return fmt.Errorf("status: %s", r.err)
		}
		st := decode[[]map[string]any](t, r)
		if len(st) != 1 || st[0]["gtid_position"] != want {
			return fmt.Errorf("status %v", st)
		}
		for _, k := range []string{"last_event_time", "file", "position", "rpo_seconds", "gaps"} {
			if _, ok := st[0][k]; !ok {
				t.Errorf("binlog status JSON lacks %q: %v", k, st[0])
			}
		}
		return nil
	})
	stream.Signal(syscall.SIGTERM)
	select {
	case <-stream.Done():
		if !strings.Contains(stream.Log(), "everything received is durable") {
			t.Errorf("stream stopped without saying it flushed:\n%s", stream.LogTail())
		}
	case <-time.After(testenv.Wait(20 * time.Second)):
		t.Fatalf("binlog stream did not stop on SIGTERM:\n%s", stream.LogTail())
	}

	inst := fmt.Sprintf("127.0.0.1:%d", src.Port) // the default instance name of backup and stream
	for _, c := range []struct {
		flag, value string
		want        sourcePoint
	}{
		{"--to-time", p1.time.Format(time.DateTime), p1},
		{"--to-gtid", p2.gtid, p2},
	} {
		dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "pitr-dst"})
		r := must(t, 120*time.Second, "restore", "--repo", repo, "--instance", inst, "--to-mysql", dst.DSN, c.flag, c.value)
		t.Logf("restore %s %s: %s", c.flag, c.value, strings.TrimSpace(r.out))
		sameAs(t, c.flag+" "+c.value, dst, "shop", c.want.sums)
	}

	// Mistakes: each a clear error, nothing written.
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "pitr-bad"})
	for _, c := range []struct {
		args []string
		say  string
	}{
		{[]string{"--instance", inst, "--to-time", "yesterday"}, "expected 'YYYY-MM-DD HH:MM:SS'"},
		{[]string{"--instance", "nope", "--to-gtid", p1.gtid}, `instance "nope"`},
		{[]string{"--instance", inst, "--to-time", "2001-01-01 00:00:00"}, "before the oldest backup"},
		{[]string{"--instance", inst, "--to-gtid", p1.gtid, "--databases", "shop"}, "whole instance"},
	} {
		r := tm(t, 60*time.Second, append([]string{"restore", "--repo", repo, "--to-mysql", dst.DSN}, c.args...)...)
		if r.code == 0 || !strings.Contains(r.err, c.say) {
			t.Errorf("restore %v: exit %d, stderr %q, want it to say %q", c.args, r.code, r.err, c.say)
		}
	}
	var n int
	if err := dst.DB(t).QueryRow("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = 'shop'").Scan(&n); err != nil || n != 0 {
		t.Errorf("a refused restore wrote to the target (%d, %v)", n, err)
	}
}

// TestPITRFleet runs the fleet's point-in-time path with the real engine:
// tidemark dev streams its instance (binlog start), a backup through the
// controller, instances shows the RPO, and a restore job --to-gtid onto a
// second agent's server equals the source at that point.
func TestPITRFleet(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "pitrf-src"})
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "pitrf-dst"})
	testenv.LoadSample(t, src.DB(t), "shop", 500)
	dir := t.TempDir()
	addr := testenv.FreeAddr(t)
	startDev(t, filepath.Join(dir, "dev"), src.DSN, addr, "--heartbeat-interval", "200ms", "--lease-duration", "3s")
	ctl := []string{"--controller", addr}
	startProc(t, "agent-other", append([]string{"agent", "--controller", addr, "--name", "other", "--mysql", dst.DSN},
		devAgentCreds(t, filepath.Join(dir, "dev"), "other")...)...)
	testenv.WaitFor(t, "both agents' instances", 20*time.Second, func() error {
		if r := tm(t, 10*time.Second, append([]string{"instances"}, ctl...)...); !strings.Contains(r.out, "other") || !strings.Contains(r.out, "local") {
			return fmt.Errorf("instances: %s", r.out)
		}
		return nil
	})
	must(t, 10*time.Second, append([]string{"binlog", "start", "--instance", "local", "--flush", "200ms"}, ctl...)...)
	must(t, 60*time.Second, append([]string{"backup", "--instance", "local", "--wait"}, ctl...)...)
	src.Exec(t, "UPDATE shop.orders SET status = 'shipped' WHERE id % 3 = 0", "CREATE TABLE shop.audit (id INT PRIMARY KEY)", "INSERT INTO shop.audit VALUES (1), (2)")
	p := markPoint(t, src, "shop")
	src.Exec(t, "DROP TABLE shop.audit", "DELETE FROM shop.orders WHERE id % 2 = 0")

	var want string
	if err := src.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&want); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "instances to show the stream at "+want, 30*time.Second, func() error {
		list := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"instances", "-o", "json"}, ctl...)...))
		for _, in := range list {
			if b, _ := in["binlog"].(map[string]any); in["name"] == "local" && b != nil && b["gtid_position"] == want {
				return nil
			}
		}
		return fmt.Errorf("instances %v", list)
	})
	st := must(t, 10*time.Second, append([]string{"binlog", "status", "--instance", "local"}, ctl...)...)
	if !strings.Contains(st.out, want) {
		t.Errorf("binlog status through the controller:\n%s", st.out)
	}
	r := must(t, 120*time.Second, append([]string{"restore", "--instance", "local", "--to-gtid", p.gtid, "--to-instance", "other"}, ctl...)...)
	t.Logf("fleet restore: %s", strings.TrimSpace(r.err))
	sameAs(t, "fleet restore --to-gtid "+p.gtid, dst, "shop", p.sums)
	must(t, 10*time.Second, append([]string{"binlog", "stop", "--instance", "local"}, ctl...)...)
}
