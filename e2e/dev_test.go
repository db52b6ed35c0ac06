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

// TestDev runs `tidemark dev` as a process against a real MariaDB, adds a
// second agent on a second (empty) server, and drives the fleet commands
// against it: backup --wait, backups, agents, instances, jobs, restore onto
// the other instance, and the usual mistakes.
func TestDev(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "dev-src"})
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "dev-dst"})
	srcDB, dstDB := src.DB(t), dst.DB(t)
	testenv.LoadSample(t, srcDB, "shop", 2000)

	dir := t.TempDir()
	addr := testenv.FreeAddr(t)
	dev := startDev(t, filepath.Join(dir, "dev"), src.DSN, addr, "--heartbeat-interval", "200ms", "--lease-duration", "2s", "--log-level", "debug")
	ctl := []string{"--controller", addr}
	// No --repo: restores onto it read the repository the catalog records.
	startProc(t, "agent-other", append([]string{"agent", "--controller", addr, "--name", "other", "--labels", "role=target",
		"--mysql", dst.DSN, "--log-level", "debug"}, devAgentCreds(t, filepath.Join(dir, "dev"), "other")...)...)
	testenv.WaitFor(t, "both agents to be connected", 20*time.Second, func() error {
		r := tm(t, 10*time.Second, append([]string{"agents", "-o", "json"}, ctl...)...)
		if r.code != 0 {
			return fmt.Errorf("agents: %s", r.err)
		}
		agents := decode[[]map[string]any](t, r)
		n := 0
		for _, a := range agents {
			if a["connected"] == true {
				n++
			}
		}
		if n != 2 {
			return fmt.Errorf("%d of %d agents connected: %s", n, len(agents), r.out)
		}
		return nil
	})
	agents := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"agents", "-o", "json"}, ctl...)...))
	for _, a := range agents {
		for _, k := range []string{"name", "labels", "capabilities", "last_seen"} {
			if _, ok := a[k]; !ok {
				t.Errorf("agent JSON lacks %q: %v", k, a)
			}
		}
		if a["name"] == "local" {
			if caps, _ := a["capabilities"].(map[string]any); caps["flavor"] != "mariadb" {
				t.Errorf("local agent's capabilities: %v", a["capabilities"])
			}
		}
	}
	inst := must(t, 10*time.Second, append([]string{"instances"}, ctl...)...)
	if !strings.Contains(inst.out, "local") || !strings.Contains(inst.out, "other") {
		t.Errorf("instances:\n%s", inst.out)
	}

	// Backup through the controller, waiting for it.
	r := must(t, 60*time.Second, append([]string{"backup", "--instance", "local", "--wait"}, ctl...)...)
	id := lastLine(r.out)
	if !strings.Contains(r.err, "succeeded") {
		t.Errorf("backup --wait stderr shows no final state:\n%s", r.err)
	}
	backups := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"backups", "--instance", "local", "-o", "json"}, ctl...)...))
	if len(backups) != 1 || backups[0]["id"] != id || backups[0]["status"] != "complete" {
		t.Fatalf("backups -o json after backup %s: %v", id, backups)
	}
	for _, k := range []string{"id", "instance", "engine", "status", "started_at", "finished_at", "size_bytes", "stored_bytes", "consistency"} {
		if _, ok := backups[0][k]; !ok {
			t.Errorf("backup JSON lacks %q: %v", k, backups[0])
		}
	}
	// The standalone listing of the dev repository agrees.
	repo := "file://" + filepath.Join(dir, "dev", "repo")
	standalone := decode[[]map[string]any](t, must(t, 10*time.Second, "backups", "--repo", repo, "-o", "json"))
	if len(standalone) != 1 || standalone[0]["id"] != id || standalone[0]["size_bytes"] != backups[0]["size_bytes"] {
		t.Errorf("standalone listing %v, controller listing %v", standalone, backups)
	}

	// Restore onto the other (empty) instance through its agent.
	must(t, 60*time.Second, append([]string{"restore", id, "--to-instance", "other"}, ctl...)...)
	testenv.Compare(t, srcDB, dstDB, "shop")

	// Restore onto a server here, the repository told by the controller.
	dst.Exec(t, "DROP DATABASE shop")
	must(t, 60*time.Second, append([]string{"restore", id, "--to-mysql", dst.DSN}, ctl...)...)
	testenv.Compare(t, srcDB, dstDB, "shop")

	// A restore onto a server that is not empty fails with the reason.
	r = tm(t, 60*time.Second, append([]string{"restore", id, "--to-instance", "other"}, ctl...)...)
	if r.code == 0 || !strings.Contains(r.err, "failed") {
		t.Errorf("restore onto a non-empty instance: exit %d, stderr:\n%s", r.code, r.err)
	}

	// Filters travel with the job: one table, under another database name,
	// --no-binlog (the target's binlog does not move) and --verify (the job
	// compares the restored table with the backup's row checksums).
	var binlogBefore, binlogAfter string
	if err := dstDB.QueryRow("SELECT @@gtid_binlog_pos").Scan(&binlogBefore); err != nil {
		t.Fatal(err)
	}
	must(t, 60*time.Second, append([]string{"restore", id, "--to-instance", "other", "--tables", "shop.customers", "--rename-db", "shop:shop_copy", "--no-binlog", "--verify"}, ctl...)...)
	if err := dstDB.QueryRow("SELECT @@gtid_binlog_pos").Scan(&binlogAfter); err != nil || binlogAfter != binlogBefore {
		t.Errorf("restore job with --no-binlog moved the target's binlog from %q to %q (%v)", binlogBefore, binlogAfter, err)
	}
	want, got := testenv.Checksums(t, srcDB, "shop")["shop.customers"], testenv.Checksums(t, dstDB, "shop_copy")
	if len(got) != 1 || got["shop_copy.customers"] != want {
		t.Errorf("filtered restore: got %v, want shop_copy.customers = %v", got, want)
	}

	// Mistakes.
	r = tm(t, 10*time.Second, append([]string{"restore", "no-such-backup", "--to-instance", "other"}, ctl...)...)
	if r.code == 0 || !strings.Contains(r.err, "backup no-such-backup is not in the catalog") {
		t.Errorf("restore of an unknown backup: exit %d, stderr:\n%s", r.code, r.err)
	}
	r = tm(t, 10*time.Second, append([]string{"backup", "--instance", "nope", "--wait"}, ctl...)...)
	if r.code == 0 || !strings.Contains(r.err, "nope") {
		t.Errorf("backup of an unknown instance: exit %d, stderr:\n%s", r.code, r.err)
	}
	r = tm(t, 10*time.Second, "backup", "--instance", "local", "--controller", testenv.FreeAddr(t))
	if r.code == 0 || !strings.Contains(r.err, "no Tidemark controller answers") {
		t.Errorf("backup with no controller: exit %d, stderr:\n%s", r.code, r.err)
	}

	jobs := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"jobs", "-o", "json"}, ctl...)...))
	if len(jobs) < 3 {
		t.Errorf("jobs -o json: %v", jobs)
	}
	// job watch of a finished job prints its backup id.
	var backupJob string
	for _, j := range jobs {
		if j["backup_id"] == id && j["kind"] == "backup" {
			backupJob, _ = j["id"].(string)
		}
	}
	if w := must(t, 10*time.Second, append([]string{"job", "watch", backupJob}, ctl...)...); lastLine(w.out) != id {
		t.Errorf("job watch %s printed %q, want the backup id %s", backupJob, w.out, id)
	}

	// Restarted on the same data dir, dev keeps its catalog and repository.
	dev.Signal(syscall.SIGTERM)
	select {
	case <-dev.Done():
	case <-time.After(testenv.Wait(20 * time.Second)):
		t.Fatalf("tidemark dev did not stop on SIGTERM:\n%s", dev.LogTail())
	}
	dev.Start()
	testenv.WaitFor(t, "the restarted dev to list the backup", 20*time.Second, func() error {
		r := tm(t, 10*time.Second, append([]string{"backups", "--instance", "local", "-o", "json"}, ctl...)...)
		if r.code != 0 {
			return fmt.Errorf("backups: %s", r.err)
		}
		if list := decode[[]map[string]any](t, r); len(list) != 1 || list[0]["id"] != id {
			return fmt.Errorf("backups after restart: %v", list)
		}
		return nil
	})
	must(t, 60*time.Second, append([]string{"backup", "--instance", "local", "--wait"}, ctl...)...)
}
