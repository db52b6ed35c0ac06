package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
