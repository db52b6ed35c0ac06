package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines/clone"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestCloneFleet runs the clone engine through the controller against
// testenv.CloneDouble (MySQL 8.0's clone plugin as documented, over a real
// MariaDB; no MySQL runs here): the agent removes a scratch directory a
// killed run left when it starts (engines.Cleaner), a backup job with
// --engine clone completes on the agent, and the catalog records the
// engine.
func TestCloneFleet(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "clonef-src"})
	testenv.LoadSample(t, src.DB(t), "shop", 300)
	d := testenv.StartCloneDouble(t, src)
	datadir, err := filepath.EvalSymlinks(src.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(filepath.Dir(datadir), clone.ScratchDirPrefix(datadir)+"20200101T000000.000000000Z")
	if err := os.MkdirAll(filepath.Join(leftover, "shop"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(leftover, "ibdata1"), make([]byte, 4096), 0o640); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	addr := testenv.FreeAddr(t)
	// --logical-below 0: selection ranks by engine alone, not by this
	// small instance's size.
	startDev(t, filepath.Join(dir, "dev"), d.DSN, addr, "--heartbeat-interval", "200ms", "--logical-below", "0")
	ctl := []string{"--controller", addr}
	testenv.WaitFor(t, "the agent's cleanup of "+leftover, 30*time.Second, func() error {
		if _, err := os.Stat(leftover); err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
	testenv.WaitFor(t, "the dev agent's instance", 20*time.Second, func() error {
		if r := tm(t, 10*time.Second, append([]string{"instances"}, ctl...)...); !strings.Contains(r.out, "local") {
			return fmt.Errorf("instances: %s", r.out)
		}
		return nil
	})
	// Selection, from what the agent probed through the double: clone.
	explain := decode[map[string]any](t, must(t, 10*time.Second, append([]string{"engines", "explain", "local", "-o", "json"}, ctl...)...))
	if chosen := fmt.Sprint(explain["chosen"]); chosen != clone.Name {
		t.Errorf("engines explain chose %q, want clone: %v", chosen, explain)
	}
	r := must(t, 120*time.Second, append([]string{"backup", "--instance", "local", "--engine", "clone", "--wait"}, ctl...)...)
	id := lastLine(r.out)
	var engine string
	for _, b := range decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"backups", "--instance", "local", "-o", "json"}, ctl...)...)) {
		if b["id"] == id {
			engine = fmt.Sprint(b["engine"])
		}
	}
	if engine != clone.Name {
		t.Errorf("catalog: backup %s has engine %q, want clone", id, engine)
	}
	if testenv.ConnOf(d.Log(), "CLONE LOCAL DATA DIRECTORY") == 0 {
		t.Errorf("the agent's backup sent no CLONE statement")
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(datadir), clone.ScratchPrefix+"*")); len(m) != 0 {
		t.Errorf("left behind: %v", m)
	}
}

// TestClonePITRStandalone: a clone backup (through the double) is a
// physical base for a point-in-time restore into a datadir: the archived
// binlog of the server behind the double (streamed from it directly under
// the same instance name) is rolled forward from the coordinates the
// backup took from clone_status, and a server started on the result
// equals the source at the target GTID. The restore's server binary is
// testenv.MySQLdDouble (the backup says MySQL 8.0, its files are
// MariaDB's).
func TestClonePITRStandalone(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "clonep-src"})
	testenv.LoadSample(t, src.DB(t), "shop", 300)
	d := testenv.StartCloneDouble(t, src)
	repo := "file://" + filepath.Join(t.TempDir(), "repo")
	must(t, 20*time.Second, "repo", "init", "--repo", repo)
	const inst = "mysql8"
	startProc(t, "stream", "binlog", "stream", "--mysql", src.DSN, "--repo", repo, "--instance", inst, "--flush", "200ms")
	r := must(t, 120*time.Second, "backup", "--engine", "clone", "--mysql", d.DSN, "--repo", repo, "--instance", inst)
	id := lastLine(r.out)
	src.Exec(t, "UPDATE shop.customers SET name = CONCAT(name, ' jr') WHERE id % 5 = 0",
		"CREATE TABLE shop.notes (id INT PRIMARY KEY, body TEXT)", "INSERT INTO shop.notes VALUES (1, 'first')")
	p := markPoint(t, src, "shop")
	src.Exec(t, "DROP TABLE shop.notes", "DELETE FROM shop.orders WHERE id % 3 = 0")
	var end string
	if err := src.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&end); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the archive at "+end, 30*time.Second, func() error {
		st := decode[[]map[string]any](t, must(t, 10*time.Second, "binlog", "status", "--repo", repo, "-o", "json"))
		if len(st) != 1 || st[0]["gtid_position"] != end {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	dir := filepath.Join(t.TempDir(), "pitr")
	r = must(t, 180*time.Second, "restore", "--repo", repo, "--instance", inst, "--from-backup", id, "--to-gtid", p.gtid,
		"--to-datadir", dir, "--mysqld", testenv.MySQLdDouble(t))
	t.Logf("restore: %s", strings.TrimSpace(r.out))
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "clonep-dst", DataDir: dir})
	sameAs(t, "clone base rolled forward to "+p.gtid, m, "shop", p.sums)
}
