package e2e

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestRetentionFleet runs retention on a real fleet: tidemark dev streams
// its instance's binlog and takes three backups a few seconds apart, with a
// binlog rotation between them. A pinned backup is kept; unpinned, `retention
// apply` with keep-last 1 and a PITR window whose base is the second backup
// expires the first: its manifest leaves the repository, the binlog segment
// that ends before the base goes, and a point-in-time restore to a point
// inside the window still equals the source exactly, from the primary
// repository and from a copy of the base with its binlog
// (repo copy --with-binlog).
func TestRetentionFleet(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "ret-src"})
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "ret-dst"})
	testenv.LoadSample(t, src.DB(t), "shop", 300)
	dir := t.TempDir()
	addr := testenv.FreeAddr(t)
	startDev(t, filepath.Join(dir, "dev"), src.DSN, addr, "--heartbeat-interval", "200ms", "--lease-duration", "3s")
	ctl := []string{"--controller", addr}
	repo := "file://" + filepath.Join(dir, "dev", "repo")
	startProc(t, "agent-other", append([]string{"agent", "--controller", addr, "--name", "other", "--mysql", dst.DSN},
		devAgentCreds(t, filepath.Join(dir, "dev"), "other")...)...)
	testenv.WaitFor(t, "both agents' instances", 20*time.Second, func() error {
		if r := tm(t, 10*time.Second, append([]string{"instances"}, ctl...)...); !strings.Contains(r.out, "other") || !strings.Contains(r.out, "local") {
			return fmt.Errorf("instances: %s", r.out)
		}
		return nil
	})
	must(t, 10*time.Second, append([]string{"binlog", "start", "--instance", "local", "--flush", "200ms"}, ctl...)...)
	backup := func() string {
		return lastLine(must(t, 60*time.Second, append([]string{"backup", "--instance", "local", "--wait"}, ctl...)...).out)
	}
	b1 := backup()
	src.Exec(t, "UPDATE shop.customers SET name = CONCAT(name, ' a') WHERE id % 7 = 0", "FLUSH BINARY LOGS")
	time.Sleep(1100 * time.Millisecond)
	b2 := backup()
	time.Sleep(1100 * time.Millisecond) // the point is seconds after b2
	src.Exec(t, "CREATE TABLE shop.notes (id INT PRIMARY KEY, body TEXT)", "INSERT INTO shop.notes VALUES (1, 'inside the window')")
	p := markPoint(t, src, "shop")
	src.Exec(t, "DROP TABLE shop.notes", "FLUSH BINARY LOGS")
	b3 := backup()
	atB3 := testenv.Checksums(t, src.DB(t), "shop")
	src.Exec(t, "DELETE FROM shop.orders WHERE id % 2 = 0")
	var gtid string
	if err := src.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&gtid); err != nil {
		t.Fatal(err)
	}
	segments := func() float64 {
		st := decode[[]map[string]any](t, must(t, 10*time.Second, "binlog", "status", "--repo", repo, "-o", "json"))
		if len(st) != 1 {
			t.Fatalf("binlog status: %v", st)
		}
		if st[0]["gtid_position"] != gtid {
			return -1
		}
		return st[0]["segments"].(float64)
	}
	var before float64
	testenv.WaitFor(t, "the archive to reach "+gtid, 30*time.Second, func() error {
		if before = segments(); before < 3 {
			return fmt.Errorf("%v segments", before)
		}
		return nil
	})

	// The window's cutoff falls between the second and third backups.
	times := map[string]time.Time{}
	for _, b := range decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"backups", "--instance", "local", "-o", "json"}, ctl...)...)) {
		at, err := time.Parse(time.RFC3339Nano, b["consistency"].(map[string]any)["time"].(string))
		if err != nil {
			t.Fatal(err)
		}
		times[b["id"].(string)] = at
	}
	cutoff := times[b2].Add(times[b3].Sub(times[b2]) / 2)
	rules := func() []string {
		w := time.Since(cutoff).Round(100 * time.Millisecond)
		return append([]string{"--instance", "local", "--keep-last", "1", "--pitr-window", w.String()}, ctl...)
	}

	must(t, 10*time.Second, append([]string{"backup", "pin", b1, "--reason", "audit"}, ctl...)...)
	if l := must(t, 10*time.Second, append([]string{"backups", "--instance", "local"}, ctl...)...); !strings.Contains(l.out, "pinned (audit) by") {
		t.Errorf("backups does not show the pin:\n%s", l.out)
	}
	plan := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"retention", "plan", "-o", "json"}, rules()...)...))
	verdicts := map[string]bool{}
	for _, v := range plan[0]["backups"].([]any) {
		m := v.(map[string]any)
		verdicts[m["id"].(string)] = m["keep"].(bool)
	}
	if !verdicts[b1] || !verdicts[b2] || !verdicts[b3] || plan[0]["pitr_base_backup_id"] != b2 {
		t.Fatalf("plan with b1 pinned: %v", plan)
	}
	must(t, 10*time.Second, append([]string{"backup", "unpin", b1}, ctl...)...)
	applied := decode[map[string]any](t, must(t, 10*time.Second, append([]string{"retention", "apply", "-o", "json"}, rules()...)...))
	jobs := applied["job_ids"].([]any)
	if len(jobs) != 1 {
		t.Fatalf("apply: %v", applied)
	}
	must(t, 60*time.Second, append([]string{"job", "watch", jobs[0].(string)}, ctl...)...)

	listed := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"backups", "--instance", "local", "-o", "json"}, ctl...)...))
	var ids []string
	for _, b := range listed {
		ids = append(ids, b["id"].(string))
	}
	slices.Sort(ids)
	want := []string{b2, b3}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("catalog after expiry: %v, want %v", ids, want)
	}
	inRepo := decode[[]map[string]any](t, must(t, 10*time.Second, "backups", "--repo", repo, "-o", "json"))
	for _, b := range inRepo {
		if b["id"] == b1 {
			t.Errorf("the expired backup's manifest is still in the repository")
		}
	}
	if after := segments(); after >= before || after < 2 {
		t.Errorf("binlog segments %v before expiry, %v after: the one before the base should have gone, no more", before, after)
	}

	// The controller picks the newest backup at or before the time: the
	// window's base, b2.
	r := must(t, 120*time.Second, append([]string{"restore", "--instance", "local", "--to-time", p.time.Format(time.DateTime), "--to-instance", "other"}, ctl...)...)
	if !strings.Contains(r.err, "from backup "+b2) {
		t.Errorf("the restore did not start from the window's base %s:\n%s", b2, r.err)
	}
	sameAs(t, "restore --to-time "+p.time.Format(time.DateTime)+" after retention", dst, "shop", p.sums)
	// A copy of the base with its binlog serves the same point in time
	// from the copy alone.
	second := "file://" + filepath.Join(dir, "second")
	must(t, 20*time.Second, "repo", "init", "--repo", second)
	cp := decode[map[string]any](t, must(t, 60*time.Second, "repo", "copy", b2, "--from", repo, "--to", second, "--with-binlog", "-o", "json"))
	if bl, _ := cp["binlog"].(map[string]any); bl == nil || bl["segments"].(float64) < 2 {
		t.Errorf("copy with binlog: %v", cp)
	}
	dst2 := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "ret-dst2"})
	must(t, 120*time.Second, "restore", "--repo", second, "--instance", "local", "--to-time", p.time.Format(time.DateTime), "--to-mysql", dst2.DSN)
	sameAs(t, "point-in-time restore from the copy", dst2, "shop", p.sums)

	// A copy job through the controller, then a restore job from the copy
	// (--repo-preference) into another database name on the other agent.
	must(t, 60*time.Second, append([]string{"backup", "copy", b3, "--to", second, "--wait"}, ctl...)...)
	var copies []any
	for _, b := range decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"backups", "--instance", "local", "-o", "json"}, ctl...)...)) {
		if b["id"] == b3 {
			copies, _ = b["copies"].([]any)
		}
	}
	if len(copies) != 1 || copies[0].(map[string]any)["repository_uri"] != second {
		t.Fatalf("catalog copies of %s: %v", b3, copies)
	}
	must(t, 120*time.Second, append([]string{"restore", b3, "--to-instance", "other", "--repo-preference", "file:///nonexistent," + second, "--rename-db", "shop:shop_b3"}, ctl...)...)
	got := testenv.Checksums(t, dst.DB(t), "shop_b3")
	if len(got) != len(atB3) {
		t.Errorf("restored from the copy: %v, want %v", got, atB3)
	}
	for k, v := range atB3 {
		if got["shop_b3"+strings.TrimPrefix(k, "shop")] != v {
			t.Errorf("restored from the copy: %s = %v, want %v", k, got["shop_b3"+strings.TrimPrefix(k, "shop")], v)
		}
	}

	if r := tm(t, 10*time.Second, append([]string{"backup", "expire", b3}, ctl...)...); r.code == 0 || !strings.Contains(r.err, "is the last complete backup") {
		t.Errorf("backup expire of the last backup: exit %d, %q", r.code, r.err)
	}
	must(t, 10*time.Second, append([]string{"binlog", "stop", "--instance", "local"}, ctl...)...)
}
