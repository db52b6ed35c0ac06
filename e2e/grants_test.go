package e2e

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// EngineGrants are the privileges each engine's backup user needs on a
// MariaDB ≥ 10.5 server, as the README's "Grants" section lists them
// (GRANT <these> ON *.* TO the user). TestEngineGrants runs every engine's
// backup as a user holding exactly these, and, for each one, as a user
// holding all but it: the first must succeed, every other must fail naming
// the missing privilege. Change both together.
var EngineGrants = []struct {
	engine string
	grants []string
}{
	{"logical", []string{"SELECT", "SHOW VIEW", "TRIGGER", "EVENT", "RELOAD", "BINLOG MONITOR"}},
	{"snapshot", []string{"RELOAD", "BINLOG MONITOR"}},
	{"mariabackup", []string{"RELOAD", "PROCESS", "LOCK TABLES", "BINLOG MONITOR"}},
	{"binlog", []string{"REPLICATION SLAVE", "BINLOG MONITOR"}},
}

// grantsPassword is every test user's password, given to the CLI through
// TIDEMARK_MYSQL_PASSWORD so the DSNs carry none.
const grantsPassword = "grants-test-pw"

// TestEngineGrants: one MariaDB 10.11 with its datadir on Btrfs (so every
// engine can run on it) and a schema with a view, a trigger, a routine and
// an event; for each engine, `tidemark backup --engine E` (or `binlog
// stream`) as a user with exactly EngineGrants succeeds, and as a user
// lacking any one of them fails with an error that names it. The logical
// backup taken with the least privileges restores, as root, onto another
// server with every table, view, trigger, routine and event.
func TestEngineGrants(t *testing.T) {
	documented := readmeGrants(t)
	if len(documented) != len(EngineGrants) {
		t.Errorf("the README lists grants for %d engines, this test checks %d", len(documented), len(EngineGrants))
	}
	for _, eg := range EngineGrants {
		if strings.Join(documented[eg.engine], ", ") != strings.Join(eg.grants, ", ") {
			t.Errorf("README grants for %s: %q; tested: %q", eg.engine, documented[eg.engine], eg.grants)
		}
	}
	vol := testenv.StartBtrfs(t, "1G")
	sub := vol.Subvolume(t, "mysql")
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "grants", DataDir: filepath.Join(sub, "data")})
	testenv.LoadSample(t, src.DB(t), "shop", 300)
	src.Exec(t,
		"CREATE TRIGGER shop.tg BEFORE INSERT ON shop.customers FOR EACH ROW SET NEW.name = NEW.name",
		"CREATE PROCEDURE shop.pr() SELECT 1",
		"CREATE EVENT shop.ev ON SCHEDULE EVERY 1 DAY DISABLE DO SELECT 1",
	)
	t.Setenv("TIDEMARK_MYSQL_PASSWORD", grantsPassword)
	repo := "file://" + filepath.Join(t.TempDir(), "repo")
	must(t, 20*time.Second, "repo", "init", "--repo", repo)

	user := func(name string, grants []string) string {
		src.Exec(t, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", name, grantsPassword),
			fmt.Sprintf("GRANT %s ON *.* TO '%s'@'%%'", strings.Join(grants, ", "), name))
		return fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", name, src.Port)
	}
	// run backs up (or streams the binlog of) src as dsn and returns the
	// CLI's result; a stream runs until it archived a new transaction.
	run := func(t *testing.T, engine, dsn string, expectOK bool) result {
		if engine != "binlog" {
			return tm(t, 120*time.Second, "backup", "--engine", engine, "--mysql", dsn, "--repo", repo, "--parallel", "2")
		}
		inst := "grants-" + strings.ReplaceAll(strings.Split(dsn, "@")[0], "_", "-")
		if !expectOK {
			return tm(t, 30*time.Second, "binlog", "stream", "--mysql", dsn, "--repo", repo, "--instance", inst, "--flush", "200ms")
		}
		stream := startProc(t, "stream-"+inst, "binlog", "stream", "--mysql", dsn, "--repo", repo, "--instance", inst, "--flush", "200ms")
		src.Exec(t, "CREATE DATABASE streamed", "CREATE TABLE streamed.t (id INT PRIMARY KEY)", "INSERT INTO streamed.t VALUES (1)") // outside shop, compared below
		var want string
		if err := src.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&want); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, "the stream to archive "+want, 30*time.Second, func() error {
			if stream.Exited() {
				t.Fatalf("binlog stream exited:\n%s", stream.LogTail())
			}
			r := tm(t, 10*time.Second, "binlog", "status", "--repo", repo, "--instance", inst, "-o", "json")
			if !strings.Contains(r.out, `"gtid_position":"`+want+`"`) {
				return fmt.Errorf("status: %s %s", r.out, r.err)
			}
			return nil
		})
		stream.Signal(syscall.SIGTERM)
		select {
		case <-stream.Done():
		case <-time.After(testenv.Wait(20 * time.Second)):
			t.Fatalf("binlog stream did not stop on SIGTERM:\n%s", stream.LogTail())
		}
		return result{out: stream.Log(), code: 0}
	}

	var logicalID string
	for _, eg := range EngineGrants {
		t.Run(eg.engine, func(t *testing.T) {
			r := run(t, eg.engine, user("u_"+eg.engine, eg.grants), true)
			if r.code != 0 {
				t.Fatalf("%s as a user with %v: exit %d\n%s%s", eg.engine, eg.grants, r.code, r.out, r.err)
			}
			if eg.engine == "logical" {
				logicalID = lastLine(r.out)
			}
			for i, g := range eg.grants {
				less := slices.Delete(slices.Clone(eg.grants), i, i+1)
				name := fmt.Sprintf("u_%s_%d", eg.engine, i)
				r := run(t, eg.engine, user(name, less), false)
				if r.code == 0 {
					t.Errorf("%s without %s succeeded: the README's grants list a privilege it does not need\n%s", eg.engine, g, r.out)
					continue
				}
				named := strings.Contains(r.err, g) ||
					g == "BINLOG MONITOR" && strings.Contains(r.err, "REPLICATION CLIENT") // the binlog engine's wording
				if !named {
					t.Errorf("%s without %s: the error does not name it:\n%s", eg.engine, g, r.err)
				}
			}
		})
	}

	// The least-privileged logical backup is complete.
	if logicalID == "" {
		t.Fatal("no logical backup to restore")
	}
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "grants-dst"})
	// The target's user has no password; the environment's is the test users'.
	t.Setenv("TIDEMARK_MYSQL_PASSWORD", "")
	must(t, 120*time.Second, "restore", logicalID, "--repo", repo, "--to-mysql", dst.DSN)
	testenv.Compare(t, src.DB(t), dst.DB(t), "shop")
	count := func(m *testenv.MariaDB, q string) int {
		var n int
		if err := m.DB(t).QueryRow(q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, q := range []string{
		"SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = 'shop'",
		"SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'shop'",
		"SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'shop'",
		"SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'shop'",
	} {
		if a, b := count(src, q), count(dst, q); a == 0 || a != b {
			t.Errorf("%s: source %d, restored %d", q, a, b)
		}
	}
}
