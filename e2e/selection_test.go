package e2e

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tidemark-backup/tidemark/engines/selection"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// verdicts reads `engines explain -o json`: chosen and engine → reason, ok.
func explain(t *testing.T, args ...string) (chosen string, order []string, reasons map[string]string, ok map[string]bool) {
	t.Helper()
	out := decode[map[string]any](t, must(t, 60*time.Second, append([]string{"engines", "explain", "-o", "json"}, args...)...))
	reasons, ok = map[string]string{}, map[string]bool{}
	vs, _ := out["verdicts"].([]any)
	for _, v := range vs {
		m := v.(map[string]any)
		e := fmt.Sprint(m["engine"])
		order = append(order, e)
		reasons[e], ok[e] = fmt.Sprint(m["reason"]), m["ok"] == true
	}
	return fmt.Sprint(out["chosen"]), order, reasons, ok
}

// TestSelectionStandalone: explain and backup --engine auto with no
// controller (--logical-below 0: the test servers are small), on MariaDB in a plain directory (mariabackup: Debian's
// mariadb-backup is of the server's series) and on a Btrfs subvolume
// (snapshot); portable gives logical; bad engine names and a forced engine
// the server cannot run are refused with explain's reason, and nothing is
// written.
func TestSelectionStandalone(t *testing.T) {
	plain := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "sel-plain"})
	testenv.LoadSample(t, plain.DB(t), "shop", 100)
	repo := "file://" + filepath.Join(t.TempDir(), "repo")
	must(t, 20*time.Second, "repo", "init", "--repo", repo)

	// The test servers hold a few MiB: below the default --logical-below
	// (1 GiB), logical comes first.
	if chosen, _, reasons, _ := explain(t, "--mysql", plain.DSN); chosen != "logical" || !strings.Contains(reasons["logical"], "under the 1 GiB small-instance threshold") {
		t.Fatalf("default threshold: chosen %s %v", chosen, reasons)
	}
	chosen, order, reasons, ok := explain(t, "--mysql", plain.DSN, "--logical-below", "0")
	if chosen != "mariabackup" || strings.Join(order, ",") != "mariabackup,logical,snapshot,clone" ||
		!strings.HasPrefix(reasons["mariabackup"], "mariabackup: mariabackup 10.11.") ||
		!strings.Contains(reasons["snapshot"], "not on Btrfs, LVM or ZFS") ||
		!strings.HasPrefix(reasons["clone"], "clone: server is MariaDB 10.11, clone needs MySQL ≥ 8.0.17") || ok["clone"] {
		t.Fatalf("plain dir: chosen %s order %v reasons %v", chosen, order, reasons)
	}
	if chosen, _, _, _ := explain(t, "--mysql", plain.DSN, "--portable", "--logical-below", "0"); chosen != "logical" {
		t.Fatalf("portable: chosen %s", chosen)
	}
	text := must(t, 60*time.Second, "engines", "explain", "--mysql", plain.DSN, "--logical-below", "0").out
	if !strings.Contains(text, "(auto runs mariabackup)") || !strings.Contains(text, "clone        no   clone: server is MariaDB") {
		t.Errorf("text explain:\n%s", text)
	}

	r := tm(t, 60*time.Second, "engines", "explain", "--mysql", plain.DSN, "--engine", "clone")
	if r.code != 1 || !strings.Contains(r.out, "clone: server is MariaDB 10.11, clone needs MySQL ≥ 8.0.17") || !strings.Contains(r.err, "no engine can back up") {
		t.Errorf("explain --engine clone: exit %d\n%s\n%s", r.code, r.out, r.err)
	}
	r = tm(t, 30*time.Second, "engines", "explain", "--mysql", plain.DSN, "--engine", "xtrabackupp")
	if r.code != 2 || !strings.Contains(r.err, `unknown engine "xtrabackupp": use auto or one of snapshot, clone, mariabackup, logical`) {
		t.Errorf("explain --engine xtrabackupp: exit %d %q", r.code, r.err)
	}

	r = must(t, 180*time.Second, "backup", "--engine", "auto", "--logical-below", "0", "--mysql", plain.DSN, "--repo", repo)
	if !strings.Contains(r.err, "engine auto: mariabackup: mariabackup 10.11.") {
		t.Errorf("backup --engine auto did not say why:\n%s", r.err)
	}
	list := decode[[]map[string]any](t, must(t, 20*time.Second, "backups", "--repo", repo, "-o", "json"))
	if len(list) != 1 || list[0]["engine"] != "mariabackup" {
		t.Fatalf("backups %v", list)
	}

	vol := testenv.StartBtrfs(t, "1G")
	btr := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "sel-btrfs", DataDir: filepath.Join(vol.Subvolume(t, "mysql"), "data")})
	chosen, order, reasons, _ = explain(t, "--mysql", btr.DSN, "--logical-below", "0")
	if chosen != "snapshot" || order[1] != "mariabackup" ||
		!strings.HasPrefix(reasons["snapshot"], "snapshot: datadir on a btrfs subvolume "+btr.DataDir+", ") {
		t.Fatalf("btrfs: chosen %s order %v reasons %v", chosen, order, reasons)
	}
	must(t, 180*time.Second, "backup", "--engine", "auto", "--logical-below", "0", "--mysql", btr.DSN, "--repo", repo)
	list = decode[[]map[string]any](t, must(t, 20*time.Second, "backups", "--repo", repo, "-o", "json"))
	if len(list) != 2 || list[1]["engine"] != "snapshot" {
		t.Fatalf("backups %v", list)
	}
}

// TestSelectionFleet: through the controller with a real agent (tidemark
// dev): explain for MariaDB on Btrfs, an auto backup runs snapshot and the
// job records why; a portable policy's explain and scheduled run are
// logical (portablePolicy); a forced clone is refused with explain's reason and
// starts nothing; then the server moves to a plain datadir, the agent
// re-probes on reconnect, the change is an event on the instance, and the
// next auto backup runs mariabackup.
func TestSelectionFleet(t *testing.T) {
	vol := testenv.StartBtrfs(t, "1G")
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "self-btrfs", DataDir: filepath.Join(vol.Subvolume(t, "mysql"), "data")})
	testenv.LoadSample(t, src.DB(t), "shop", 100)
	dir := filepath.Join(t.TempDir(), "dev")
	addr := testenv.FreeAddr(t)
	dev := startDev(t, dir, src.DSN, addr, "--heartbeat-interval", "200ms", "--logical-below", "0")
	ctl := []string{"--controller", addr}
	testenv.WaitFor(t, "the dev agent's instance", 20*time.Second, func() error {
		if r := tm(t, 10*time.Second, append([]string{"instances"}, ctl...)...); !strings.Contains(r.out, "local") {
			return fmt.Errorf("instances: %s", r.out)
		}
		return nil
	})

	chosen, _, reasons, _ := explain(t, append([]string{"local"}, ctl...)...)
	if chosen != "snapshot" || !strings.Contains(reasons["snapshot"], "btrfs subvolume "+src.DataDir) {
		t.Fatalf("explain local: %s %v", chosen, reasons)
	}
	if chosen, _, _, _ := explain(t, append([]string{"local", "--portable"}, ctl...)...); chosen != "logical" {
		t.Fatalf("explain --portable: %s", chosen)
	}
	// A policy's schedules give the preference: mariabackup first.
	policyFile := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(policyFile, []byte("name: physical-first\nselector: nosuchlabel=x\nbackups:\n  - schedule: \"@daily\"\n    engine: mariabackup\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, 20*time.Second, append([]string{"policy", "apply", "-f", policyFile}, ctl...)...)
	if chosen, order, _, _ := explain(t, append([]string{"local", "--policy", "physical-first"}, ctl...)...); chosen != "mariabackup" || order[0] != "mariabackup" {
		t.Fatalf("explain --policy physical-first: chosen %s, order %v", chosen, order)
	}
	must(t, 20*time.Second, append([]string{"policy", "delete", "physical-first"}, ctl...)...)

	r := tm(t, 20*time.Second, append([]string{"backup", "--instance", "local", "--engine", "clone"}, ctl...)...)
	if r.code == 0 || !strings.Contains(r.err, "clone: server is MariaDB 10.11, clone needs MySQL ≥ 8.0.17") {
		t.Fatalf("backup --engine clone: exit %d %q", r.code, r.err)
	}
	r = tm(t, 20*time.Second, append([]string{"backup", "--instance", "local", "--engine", "clonee"}, ctl...)...)
	if r.code != 2 || !strings.Contains(r.err, "use auto or one of snapshot, clone, mariabackup, logical") {
		t.Fatalf("backup --engine clonee: exit %d %q", r.code, r.err)
	}
	if jobs := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"jobs", "-o", "json"}, ctl...)...)); len(jobs) != 0 {
		t.Fatalf("refused backups started jobs: %v", jobs)
	}

	backupAuto := func(want string) {
		t.Helper()
		job := decode[map[string]any](t, must(t, 180*time.Second, append([]string{"backup", "--instance", "local", "--wait", "-o", "json"}, ctl...)...))
		if job["state"] != "succeeded" || job["engine"] != want || !strings.HasPrefix(fmt.Sprint(job["engine_reason"]), want+": ") {
			t.Fatalf("auto backup: want %s, job %v", want, job)
		}
		backups := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"backups", "--instance", "local", "-o", "json"}, ctl...)...))
		for _, b := range backups {
			if b["id"] == job["backup_id"] && b["engine"] != want {
				t.Fatalf("catalog backup %v, want engine %s", b, want)
			}
		}
	}
	backupAuto("snapshot")
	portablePolicy(t, ctl)

	// The server moves to a plain directory: a new datadir, restarted.
	dev.Signal(syscall.SIGTERM)
	select {
	case <-dev.Done():
	case <-time.After(testenv.Wait(20 * time.Second)):
		dev.Kill()
	}
	moved := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "self-plain"})
	testenv.LoadSample(t, moved.DB(t), "shop", 100)
	startDev(t, dir, moved.DSN, addr, "--heartbeat-interval", "200ms", "--logical-below", "0")
	var in map[string]any
	testenv.WaitFor(t, "the change of engine to be recorded", 30*time.Second, func() error {
		for _, i := range decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"instances", "-o", "json"}, ctl...)...)) {
			if i["name"] == "local" {
				in = i
			}
		}
		if chs, _ := in["engine_changes"].([]any); len(chs) == 1 {
			return nil
		}
		return fmt.Errorf("instance %v", in)
	})
	ch := in["engine_changes"].([]any)[0].(map[string]any)
	if ch["old_engine"] != "snapshot" || ch["new_engine"] != "mariabackup" ||
		!strings.Contains(fmt.Sprint(ch["old_reason"]), "snapshot: datadir "+moved.DataDir+" is on ") {
		t.Fatalf("change %v", ch)
	}
	if txt := must(t, 10*time.Second, append([]string{"instances"}, ctl...)...).out; !strings.Contains(txt, "local: engine snapshot → mariabackup at ") {
		t.Errorf("instances text does not show the change:\n%s", txt)
	}
	backupAuto("mariabackup")
}

// TestSelectionFallback: the agent probed a mariabackup of the server's
// series and selection chose it (the datadir is not on a snapshot volume);
// by the time the backup runs the tool on the host is of another series (a
// package upgrade in between), which the engine refuses as a capability
// failure, and the job retries once with the next usable engine, logical:
// a complete backup, restorable, and the job says why. The snapshot
// engine's own capability failure, an exhausted volume, is
// TestSelectionFallbackSnapshotSpace.
func TestSelectionFallback(t *testing.T) {
	real, err := exec.LookPath("mariabackup")
	if err != nil {
		if testenv.CI() {
			t.Fatal("mariabackup is not installed (apt-get install mariadb-backup)")
		}
		t.Skip("mariabackup is not installed (apt-get install mariadb-backup)")
	}
	// A mariabackup that is the real one until "upgraded" exists, then
	// reports another series.
	bin := t.TempDir()
	upgraded := filepath.Join(bin, "upgraded")
	script := fmt.Sprintf(`#!/bin/sh
if [ -e %[1]s ]; then
  echo "mariabackup based on MariaDB server 11.4.2-MariaDB debian-linux-gnu (x86_64)" >&2
  [ "$1" = --version ] && exit 0
  exit 1
fi
exec %[2]s "$@"
`, upgraded, real)
	if err := os.WriteFile(filepath.Join(bin, "mariabackup"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}

	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "selfb-src"})
	testenv.LoadSample(t, src.DB(t), "shop", 100)
	at := markPoint(t, src, "shop")
	dir := filepath.Join(t.TempDir(), "dev")
	addr := testenv.FreeAddr(t)
	startDevEnv(t, dir, src.DSN, addr, []string{"PATH=" + bin + ":" + os.Getenv("PATH")}, "--heartbeat-interval", "200ms", "--logical-below", "0")
	ctl := []string{"--controller", addr}
	testenv.WaitFor(t, "the dev agent's instance", 20*time.Second, func() error {
		if r := tm(t, 10*time.Second, append([]string{"instances"}, ctl...)...); !strings.Contains(r.out, "local") {
			return fmt.Errorf("instances: %s", r.out)
		}
		return nil
	})
	if chosen, _, reasons, _ := explain(t, append([]string{"local"}, ctl...)...); chosen != "mariabackup" {
		t.Fatalf("explain before the upgrade: %s %v", chosen, reasons)
	}

	if err := os.WriteFile(upgraded, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	job := decode[map[string]any](t, must(t, 180*time.Second, append([]string{"backup", "--instance", "local", "--wait", "-o", "json"}, ctl...)...))
	why := fmt.Sprint(job["reason"])
	if job["state"] != "succeeded" || job["engine"] != "mariabackup" ||
		!strings.Contains(why, "mariabackup failed for a capability reason, fell back to logical") || !strings.Contains(why, "series 10.11") {
		t.Fatalf("job %v", job)
	}
	id := fmt.Sprint(job["backup_id"])
	backups := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"backups", "--instance", "local", "-o", "json"}, ctl...)...))
	if len(backups) != 1 || backups[0]["id"] != id || backups[0]["engine"] != "logical" || backups[0]["status"] != "complete" {
		t.Fatalf("backups %v", backups)
	}

	// Complete: it restores onto a fresh server, equal to the source.
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "selfb-dst"})
	repo := "file://" + filepath.Join(dir, "repo")
	must(t, 120*time.Second, "restore", id, "--repo", repo, "--to-mysql", dst.DSN)
	sameAs(t, "restore of the fallback backup", dst, "shop", at.sums)
}

// portablePolicy applies a policy with portable: true selecting the dev
// agent's instance "local" (MariaDB on Btrfs, where auto runs snapshot):
// explain --policy ranks logical alone usable with portable's reason,
// policy show and status say it is portable, and a scheduled run is a
// complete logical backup whose job records why. The policy is deleted and
// its jobs finish before it returns.
func portablePolicy(t *testing.T, ctl []string) {
	t.Helper()
	const why = "portable: only a logical backup restores onto another version or flavor"
	file := filepath.Join(t.TempDir(), "portable.yaml")
	doc := "name: portable\nselector: env=dev\nportable: true\nbackups:\n  - schedule: \"@every 3s\"\n    catch_up: 1m\n"
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, 20*time.Second, append([]string{"policy", "apply", "-f", file}, ctl...)...)
	chosen, order, reasons, ok := explain(t, append([]string{"local", "--policy", "portable"}, ctl...)...)
	if chosen != "logical" || order[0] != "logical" || ok["snapshot"] || ok["mariabackup"] ||
		!strings.HasSuffix(reasons["logical"], "; ranked first: "+why) ||
		!strings.HasPrefix(reasons["snapshot"], "snapshot: "+why+" (a physical copy restores only onto MariaDB 10.11)") {
		t.Fatalf("explain --policy portable: chosen %s, order %v, reasons %v", chosen, order, reasons)
	}
	if out := must(t, 10*time.Second, append([]string{"policy", "show", "portable"}, ctl...)...).out; !strings.Contains(out, "portable: scheduled backups use the logical engine") {
		t.Errorf("policy show:\n%s", out)
	}
	if out := must(t, 10*time.Second, append([]string{"status", "--policy", "portable"}, ctl...)...).out; !strings.Contains(out, "policy portable (version 1, portable: logical backups only)") {
		t.Errorf("status:\n%s", out)
	}
	st := decode[map[string]any](t, must(t, 10*time.Second, append([]string{"status", "--policy", "portable", "-o", "json"}, ctl...)...))
	if pols, _ := st["policies"].([]any); len(pols) != 1 || pols[0].(map[string]any)["portable"] != true {
		t.Errorf("status -o json: %v", st)
	}

	var job map[string]any
	testenv.WaitFor(t, "a scheduled run of the portable policy", testenv.Wait(60*time.Second), func() error {
		for _, j := range decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"jobs", "-o", "json"}, ctl...)...)) {
			if j["policy"] == "portable" && j["state"] == "succeeded" {
				job = j
				return nil
			}
			if j["policy"] == "portable" && j["state"] == "failed" {
				t.Fatalf("scheduled run failed: %v", j)
			}
		}
		return fmt.Errorf("no succeeded run yet")
	})
	if job["engine"] != "logical" || !strings.Contains(fmt.Sprint(job["engine_reason"]), why) || len(job["fallback_engines"].([]any)) != 0 {
		t.Fatalf("scheduled run: %v", job)
	}
	backups := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"backups", "--instance", "local", "-o", "json"}, ctl...)...))
	found := false
	for _, b := range backups {
		if b["id"] == job["backup_id"] {
			found = b["engine"] == "logical" && b["status"] == "complete" && b["policy"] == "portable"
		}
	}
	if !found {
		t.Fatalf("backup %v of the scheduled run not a complete logical one: %v", job["backup_id"], backups)
	}
	must(t, 20*time.Second, append([]string{"policy", "delete", "portable"}, ctl...)...)
	testenv.WaitFor(t, "the portable policy's runs to end", testenv.Wait(60*time.Second), func() error {
		for _, j := range decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"jobs", "-o", "json"}, ctl...)...)) {
			if st := j["state"]; st == "pending" || st == "assigned" || st == "running" {
				return fmt.Errorf("job %v is %v", j["id"], st)
			}
		}
		return nil
	})
}

// TestSelectionFallbackSnapshotSpace: MariaDB on a Btrfs subvolume of a
// real 1 GiB loop device, through the controller with a real agent
// (tidemark dev): selection chose snapshot from the probe (the volume was
// empty then); by the time a backup runs, a ballast file on the same
// filesystem leaves 32 MiB free, under the 64 MiB a snapshot asks for its
// copy-on-write space. The snapshot engine refuses before it locks the
// server (snapshot space exhausted, a capability failure) and the job
// retries once with the next usable engine: a complete backup that
// restores equal to the source, whose manifest (selection.fallback) and
// job record why. The server keeps its 32 MiB for its own writes
// throughout. Before that, a snapshot failure for another reason (another
// run holds the instance's snapshot lock) fails the job on snapshot alone:
// no engine switch, no backup.
func TestSelectionFallbackSnapshotSpace(t *testing.T) {
	vol := testenv.StartBtrfs(t, "1G")
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "selsp-src", DataDir: filepath.Join(vol.Subvolume(t, "mysql"), "data")})
	testenv.LoadSample(t, src.DB(t), "shop", 100)
	dir := filepath.Join(t.TempDir(), "dev")
	addr := testenv.FreeAddr(t)
	startDev(t, dir, src.DSN, addr, "--heartbeat-interval", "200ms", "--logical-below", "0")
	ctl := []string{"--controller", addr}
	testenv.WaitFor(t, "the dev agent's instance", 20*time.Second, func() error {
		if r := tm(t, 10*time.Second, append([]string{"instances"}, ctl...)...); !strings.Contains(r.out, "local") {
			return fmt.Errorf("instances: %s", r.out)
		}
		return nil
	})
	if chosen, _, reasons, _ := explain(t, append([]string{"local"}, ctl...)...); chosen != "snapshot" {
		t.Fatalf("explain before the volume fills: %s %v", chosen, reasons)
	}
	backup := func() map[string]any {
		t.Helper()
		r := tm(t, 180*time.Second, append([]string{"backup", "--instance", "local", "--wait", "-o", "json"}, ctl...)...)
		return decode[map[string]any](t, r)
	}
	backups := func() []map[string]any {
		t.Helper()
		return decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"backups", "--instance", "local", "-o", "json"}, ctl...)...))
	}

	// Another reason: the instance lock the snapshot engine takes
	// (/run/tidemark-snapshot/<fnv32a of the datadir>.lock) is held.
	lockFile := filepath.Join("/run/tidemark-snapshot", fmt.Sprintf("%08x.lock", fnv32a(filepath.Clean(src.DataDir))))
	if err := os.MkdirAll(filepath.Dir(lockFile), 0o700); err != nil {
		t.Fatal(err)
	}
	lk, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lk.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	job := backup()
	_ = lk.Close()
	if job["state"] != "failed" || job["engine"] != "snapshot" || !strings.Contains(fmt.Sprint(job["error"]), "another snapshot backup of the server") ||
		strings.Contains(fmt.Sprint(job["reason"])+fmt.Sprint(job["error"]), "fell back") {
		t.Fatalf("backup while the snapshot lock is held: want a failed snapshot job, no fallback: %v", job)
	}
	if bs := backups(); len(bs) != 0 {
		for _, b := range bs {
			if b["status"] == "complete" {
				t.Fatalf("a backup completed although the snapshot engine failed for a reason other than capability: %v", bs)
			}
		}
	}

	at := markPoint(t, src, "shop")
	release := vol.Fill(t, 32<<20)
	defer release()
	if free := vol.Free(t); free >= selection.MinSnapshotFree {
		t.Fatalf("%d bytes free after the fill: the test needs less than %d", free, selection.MinSnapshotFree)
	}
	job = backup()
	why, fallbacks := fmt.Sprint(job["reason"]), job["fallback_engines"].([]any)
	if job["state"] != "succeeded" || job["engine"] != "snapshot" || len(fallbacks) == 0 ||
		!strings.Contains(why, fmt.Sprintf("snapshot failed for a capability reason, fell back to %s: ", fallbacks[0])) ||
		!strings.Contains(why, "snapshot space exhausted: Btrfs subvolume ") {
		t.Fatalf("backup on the full volume: %v", job)
	}
	next, id := fmt.Sprint(fallbacks[0]), fmt.Sprint(job["backup_id"])
	var got map[string]any
	for _, b := range backups() {
		if b["id"] == id {
			got = b
		}
	}
	if got["engine"] != next || got["status"] != "complete" {
		t.Fatalf("backup %s: %v, want a complete %s backup", id, got, next)
	}
	st, err := file.Open(filepath.Join(dir, "repo"), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	repo, err := archive.Open(context.Background(), st, archive.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	m, err := repo.LoadManifest(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if md := m.GetEngineMetadata(); m.GetEngine() != next || md[selection.MetaFallback] != why ||
		!strings.HasPrefix(md[selection.MetaReason], "snapshot: datadir on a btrfs subvolume ") {
		t.Fatalf("manifest: engine %s, metadata %v", m.GetEngine(), md)
	}
	t.Logf("fell back to %s: %s", next, why)
	src.Exec(t, "CREATE TABLE shop.after_fallback (id INT PRIMARY KEY, b VARBINARY(1000))",
		"INSERT INTO shop.after_fallback SELECT seq, RANDOM_BYTES(1000) FROM shop.seq_1_to_5000")

	// Complete: it restores equal to the source at the backup.
	restored := restoreBackup(t, next, id, "file://"+filepath.Join(dir, "repo"), "selsp-dst")
	sameAs(t, "restore of the fallback backup", restored, "shop", at.sums)
}

// restoreBackup restores backup id of repo by its engine's path: a
// physical one into a new datadir started by a server, a logical one onto
// a fresh server.
func restoreBackup(t *testing.T, engine, id, repo, name string) *testenv.MariaDB {
	t.Helper()
	if engine == "logical" {
		dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: name})
		must(t, 120*time.Second, "restore", id, "--repo", repo, "--to-mysql", dst.DSN)
		return dst
	}
	datadir := filepath.Join(t.TempDir(), "restored")
	must(t, 180*time.Second, "restore", id, "--repo", repo, "--to-datadir", datadir)
	return testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: name, DataDir: datadir})
}

func fnv32a(s string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return h.Sum32()
}
