package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines/snapshot"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestPhysicalStandalone runs the README's physical commands as processes
// on a MariaDB whose datadir is in a Btrfs subvolume on a loop device:
// backup --engine snapshot and --engine mariabackup while the binlog is
// streamed, then for each backup a restore --to-datadir started by a real
// server (equal to the source at the backup) and a restore --to-datadir
// --to-gtid on top of it (equal to the source at that later point).
func TestPhysicalStandalone(t *testing.T) {
	vol := testenv.StartBtrfs(t, "1G")
	sub := vol.Subvolume(t, "mysql")
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "phys-src", DataDir: filepath.Join(sub, "data")})
	testenv.LoadSample(t, src.DB(t), "shop", 500)
	repo := "file://" + filepath.Join(t.TempDir(), "repo")
	must(t, 20*time.Second, "repo", "init", "--repo", repo)
	startProc(t, "stream", "binlog", "stream", "--mysql", src.DSN, "--repo", repo, "--flush", "200ms")
	inst := fmt.Sprintf("127.0.0.1:%d", src.Port)

	type base struct {
		engine, id string
		at         sourcePoint
	}
	var bases []base
	for _, engine := range []string{"snapshot", "mariabackup"} {
		at := markPoint(t, src, "shop")
		r := must(t, 120*time.Second, "backup", "--engine", engine, "--mysql", src.DSN, "--repo", repo)
		if !strings.Contains(r.out, " files, ") {
			t.Errorf("%s backup summary does not count files: %s", engine, r.out)
		}
		lines := strings.Split(strings.TrimSpace(r.out), "\n")
		bases = append(bases, base{engine, lines[len(lines)-1], at})
		src.Exec(t, "UPDATE shop.customers SET name = CONCAT(name, '+') WHERE id % 7 = 0")
	}
	src.Exec(t, "CREATE TABLE shop.notes (id INT PRIMARY KEY, body TEXT)", "INSERT INTO shop.notes VALUES (1, 'after both')")
	later := markPoint(t, src, "shop")
	src.Exec(t, "DROP TABLE shop.notes")
	var end string
	if err := src.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&end); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the archive at "+end, 30*time.Second, func() error {
		st := decode[[]map[string]any](t, must(t, 10*time.Second, "binlog", "status", "--repo", repo, "-o", "json"))
		if len(st) == 1 && st[0]["gtid_position"] == end {
			return nil
		}
		return fmt.Errorf("status %v", st)
	})

	list := must(t, 20*time.Second, "backups", "--repo", repo).out
	for _, b := range bases {
		if !strings.Contains(list, b.engine) {
			t.Errorf("backups does not show engine %s:\n%s", b.engine, list)
		}
		dir := filepath.Join(t.TempDir(), "plain")
		must(t, 180*time.Second, "restore", b.id, "--repo", repo, "--to-datadir", dir)
		m := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "phys-" + b.engine, DataDir: dir})
		sameAs(t, b.engine+" restore", m, "shop", b.at.sums)
		m.Stop()

		pitr := filepath.Join(t.TempDir(), "pitr")
		must(t, 180*time.Second, "restore", b.id, "--repo", repo, "--instance", inst, "--to-datadir", pitr, "--to-gtid", later.gtid)
		m = testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "phys-pitr-" + b.engine, DataDir: pitr})
		sameAs(t, b.engine+" restore --to-gtid", m, "shop", later.sums)
		m.Stop()
	}

	// A physical backup onto a running server, and into a non-empty
	// directory: clear errors.
	r := tm(t, 30*time.Second, "restore", bases[0].id, "--repo", repo, "--to-mysql", src.DSN)
	if r.code == 0 || !strings.Contains(r.err, "--to-datadir") {
		t.Errorf("physical backup onto a server: exit %d, %q", r.code, r.err)
	}
	r = tm(t, 30*time.Second, "restore", bases[0].id, "--repo", repo, "--to-datadir", src.DataDir)
	if r.code == 0 || !strings.Contains(r.err, "not empty") && !strings.Contains(r.err, "running") {
		t.Errorf("restore into the source's datadir: exit %d, %q", r.code, r.err)
	}
}

// TestPhysicalFleet runs the physical engines through the controller:
// tidemark dev on a MariaDB whose datadir is on Btrfs, backup jobs with
// --engine snapshot and mariabackup, the catalog's engine column, a
// datadir restore job of one of them, and a point-in-time datadir restore
// job on top (the controller picks the physical base).
func TestPhysicalFleet(t *testing.T) {
	vol := testenv.StartBtrfs(t, "1G")
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "physf-src", DataDir: filepath.Join(vol.Subvolume(t, "mysql"), "data")})
	testenv.LoadSample(t, src.DB(t), "shop", 500)
	dir := t.TempDir()
	addr := testenv.FreeAddr(t)
	startDev(t, filepath.Join(dir, "dev"), src.DSN, addr, "--heartbeat-interval", "200ms")
	ctl := []string{"--controller", addr}
	testenv.WaitFor(t, "the dev agent's instance", 20*time.Second, func() error {
		if r := tm(t, 10*time.Second, append([]string{"instances"}, ctl...)...); !strings.Contains(r.out, "local") {
			return fmt.Errorf("instances: %s", r.out)
		}
		return nil
	})
	must(t, 10*time.Second, append([]string{"binlog", "start", "--instance", "local", "--flush", "200ms"}, ctl...)...)

	at := map[string]sourcePoint{}
	ids := map[string]string{}
	for _, engine := range []string{"snapshot", "mariabackup"} {
		at[engine] = markPoint(t, src, "shop")
		r := must(t, 120*time.Second, append([]string{"backup", "--instance", "local", "--engine", engine, "--wait"}, ctl...)...)
		ids[engine] = lastLine(r.out)
		src.Exec(t, "UPDATE shop.customers SET name = CONCAT(name, '*') WHERE id % 11 = 0")
	}
	backups := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"backups", "--instance", "local", "-o", "json"}, ctl...)...))
	engines := map[string]string{}
	for _, b := range backups {
		engines[fmt.Sprint(b["id"])] = fmt.Sprint(b["engine"])
	}
	for engine, id := range ids {
		if engines[id] != engine {
			t.Errorf("catalog: backup %s has engine %q, want %s (%v)", id, engines[id], engine, backups)
		}
	}
	p := markPoint(t, src, "shop")
	src.Exec(t, "DELETE FROM shop.orders WHERE id % 2 = 0")
	var end string
	if err := src.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&end); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the stream at "+end, 30*time.Second, func() error {
		for _, in := range decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"instances", "-o", "json"}, ctl...)...)) {
			if b, _ := in["binlog"].(map[string]any); in["name"] == "local" && b != nil && b["gtid_position"] == end {
				return nil
			}
		}
		return fmt.Errorf("not yet")
	})

	plain := filepath.Join(t.TempDir(), "plain")
	must(t, 180*time.Second, append([]string{"restore", ids["snapshot"], "--to-instance", "local", "--to-datadir", plain}, ctl...)...)
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "physf-plain", DataDir: plain})
	sameAs(t, "fleet datadir restore of the snapshot backup", m, "shop", at["snapshot"].sums)
	m.Stop()

	pitr := filepath.Join(t.TempDir(), "pitr")
	must(t, 180*time.Second, append([]string{"restore", "--instance", "local", "--to-gtid", p.gtid, "--to-instance", "local", "--to-datadir", pitr}, ctl...)...)
	m = testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "physf-pitr", DataDir: pitr})
	sameAs(t, "fleet datadir restore --to-gtid "+p.gtid, m, "shop", p.sums)
	m.Stop()
	must(t, 10*time.Second, append([]string{"binlog", "stop", "--instance", "local"}, ctl...)...)
}

// TestSnapshotAgentKilled: `tidemark agent` killed (SIGKILL) while its
// snapshot backup job holds a Btrfs snapshot leaves the read-only snapshot
// and no complete manifest; with the job cancelled meanwhile (so no later
// attempt runs on that instance), the restarted agent removes the
// snapshot itself at start (engines.Cleaner), says so in its log, and the
// job ends cancelled.
func TestSnapshotAgentKilled(t *testing.T) {
	vol := testenv.StartBtrfs(t, "1G")
	sub := vol.Subvolume(t, "mysql")
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "snapkill", DataDir: filepath.Join(sub, "data")})
	// Incompressible rows, so that the copy takes long enough to be caught.
	src.Exec(t, "CREATE DATABASE fill", "USE fill", "CREATE TABLE fill.t (id INT PRIMARY KEY, b VARBINARY(1000) NOT NULL)",
		"INSERT INTO fill.t SELECT seq, RANDOM_BYTES(1000) FROM seq_1_to_60000")
	repo := "file://" + filepath.Join(t.TempDir(), "repo")
	ctl, ca := startSoloController(t, repo)
	agent := startAgentProc(t, ctl, ca, "db", src.DSN, repo, "env=test")

	snapshots := func() []string {
		ents, err := os.ReadDir(filepath.Join(sub, snapshot.SnapshotDirName))
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	job := lastLine(must(t, 20*time.Second, append([]string{"backup", "--instance", "db", "--engine", "snapshot", "--parallel", "1"}, ctl...)...).out)
	// Freeze the agent the moment its snapshot exists (a stopped process
	// cannot drop it or commit a manifest), then kill it.
	deadline := time.Now().Add(testenv.Wait(60 * time.Second))
	for len(snapshots()) == 0 {
		if time.Now().After(deadline) || agent.Exited() {
			t.Fatalf("no snapshot appeared for job %s:\n%s", job, agent.LogTail())
		}
		time.Sleep(2 * time.Millisecond)
	}
	agent.Stop()
	left := snapshots()
	if len(left) != 1 {
		t.Fatalf("snapshots with the agent stopped mid-backup: %v, want one", left)
	}
	agent.Kill()
	if ms := decode[[]map[string]any](t, must(t, 20*time.Second, "backups", "--repo", repo, "-o", "json")); len(ms) != 0 {
		t.Fatalf("the killed backup left complete manifests: %v", ms)
	}
	must(t, 20*time.Second, append([]string{"job", "cancel", job, "--reason", "e2e: agent killed"}, ctl...)...)

	agent.Start()
	testenv.WaitFor(t, "the restarted agent to remove "+left[0], 60*time.Second, func() error {
		if agent.Exited() {
			t.Fatalf("the agent exited:\n%s", agent.LogTail())
		}
		if s := snapshots(); len(s) != 0 {
			return fmt.Errorf("snapshots: %v", s)
		}
		return nil
	})
	if b, err := os.ReadFile(agent.LogPath); err != nil || !strings.Contains(string(b), "removed what an interrupted backup left") || !strings.Contains(string(b), left[0]) {
		t.Errorf("the agent's log does not say it removed %s (%v):\n%s", left[0], err, agent.LogTail())
	}
	testenv.WaitFor(t, "job "+job+" cancelled", 60*time.Second, func() error {
		for _, j := range decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"jobs", "--instance", "db", "-o", "json"}, ctl...)...)) {
			if j["id"] == job {
				if j["state"] == "cancelled" {
					return nil
				}
				return fmt.Errorf("job %s is %v", job, j["state"])
			}
		}
		return fmt.Errorf("job %s not listed", job)
	})
	if ms := decode[[]map[string]any](t, must(t, 20*time.Second, "backups", "--repo", repo, "-o", "json")); len(ms) != 0 {
		t.Errorf("manifests after the restart: %v", ms)
	}
}
