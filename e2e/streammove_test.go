package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestGroupStreamMovesOffLostAgent: a `cluster` group of a primary and its
// GTID replica, each served by its own agent, streamed by a policy. The
// primary's host is lost (its agent killed, its server killed) and the
// replica promoted: once the lost agent's lease ran out, the leader moves
// the group's stream to the replica's agent, which continues the same
// archive (the stream keeps its name) at the same GTID position: the
// archive read from the repository alone has no gap and ends at the new
// primary's position, and every transaction is archived once.
func TestGroupStreamMovesOffLostAgent(t *testing.T) {
	args := []string{"--gtid-strict-mode=1", "--log-slave-updates"}
	pa := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "move-a", ExtraArgs: args})
	pb := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "move-b", ExtraArgs: args})
	pb.Exec(t, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='tidemark', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1", pa.Port),
		"START SLAVE")
	pa.Exec(t, "CREATE DATABASE shop", "CREATE TABLE shop.t (id INT PRIMARY KEY)", "INSERT INTO shop.t VALUES (1)")
	gtidOf := func(m *testenv.MariaDB) string {
		var p string
		if err := m.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	testenv.WaitFor(t, "the replica caught up", testenv.Wait(20*time.Second), func() error {
		if a, b := gtidOf(pa), gtidOf(pb); a != b {
			return fmt.Errorf("primary at %s, replica at %s", a, b)
		}
		return nil
	})

	repo := "file://" + filepath.Join(t.TempDir(), "repo")
	ctl, ca := startSoloController(t, repo, "--schedule-interval", "200ms", "--watermark-commit-interval", "200ms")
	agentA := startAgentProc(t, ctl, ca, "a", pa.DSN, repo, "env=prod,cluster=pg")
	startAgentProc(t, ctl, ca, "b", pb.DSN, repo, "env=prod,cluster=pg")
	file := filepath.Join(t.TempDir(), "wal.yaml")
	if err := os.WriteFile(file, []byte("name: wal\nselector: env=prod\nbinlog: {enabled: true, flush: 200ms}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, 30*time.Second, append([]string{"policy", "apply", "-f", file}, ctl...)...)

	// streamAt waits until the group's stream runs on agent and is durable
	// at want.
	var stream string
	streamAt := func(agent, want string, d time.Duration) {
		t.Helper()
		testenv.WaitFor(t, fmt.Sprintf("the group's stream on agent %s durable at %s", agent, want), testenv.Wait(d), func() error {
			st := decode[map[string]any](t, must(t, 10*time.Second, append([]string{"binlog", "status", "--instance", "b", "-o", "json"}, ctl...)...))
			if st["agent"] != agent || st["gtid_position"] != want {
				return fmt.Errorf("binlog status %v", st)
			}
			stream, _ = st["stream"].(string)
			return nil
		})
	}
	streamAt("a", gtidOf(pa), 30*time.Second)
	if stream != "a" {
		t.Fatalf("the group's stream is named %q, want a (started on the primary)", stream)
	}
	pa.Exec(t, "INSERT INTO shop.t VALUES (2)", "FLUSH BINARY LOGS", "INSERT INTO shop.t VALUES (3)")
	want := gtidOf(pa)
	testenv.WaitFor(t, "the replica at "+want, testenv.Wait(20*time.Second), func() error {
		if got := gtidOf(pb); got != want {
			return fmt.Errorf("replica at %s", got)
		}
		return nil
	})
	streamAt("a", want, 20*time.Second)

	// The primary's host is lost: its agent and its server. The replica
	// is promoted and written to.
	lost := time.Now()
	agentA.Kill()
	pa.Kill()
	pb.Exec(t, "STOP SLAVE", "RESET SLAVE ALL", "INSERT INTO shop.t VALUES (4)", "INSERT INTO shop.t VALUES (5)")
	streamAt("b", gtidOf(pb), 40*time.Second)
	t.Logf("the stream runs on agent b, durable at the new primary's position, %s after agent a was lost (lease %s)", time.Since(lost).Round(100*time.Millisecond), lease)

	// The archive alone: one stream, no gap, ending at the new primary.
	st := decode[[]map[string]any](t, must(t, 20*time.Second, "binlog", "status", "--repo", repo, "-o", "json"))
	if len(st) != 1 || st[0]["instance"] != "a" || st[0]["gtid_position"] != gtidOf(pb) {
		t.Fatalf("archive status %v", st)
	}
	if gaps, _ := st[0]["gaps"].([]any); len(gaps) != 0 {
		t.Fatalf("archive gaps after the move: %v", gaps)
	}
	// Every transaction once: the fetched segments' GTIDs are the new
	// primary's binlog's, in order.
	dir := t.TempDir()
	must(t, 30*time.Second, "binlog", "fetch", "--repo", repo, "--instance", "a", "--to", dir)
	out := must(t, 30*time.Second, "binlog", "status", "--repo", repo, "--instance", "a")
	if !strings.Contains(out.out, gtidOf(pb)) {
		t.Errorf("binlog status --repo:\n%s", out.out)
	}
	fetched, server := gtidsIn(t, dir), gtidsOfServer(t, pb)
	if len(server) < 6 {
		t.Fatalf("the new primary's binlog lists %d transactions (%v): the comparison would prove nothing", len(server), server)
	}
	if strings.Join(fetched, ",") != strings.Join(server, ",") {
		t.Fatalf("archived GTIDs %v, the new primary's binlog %v", fetched, server)
	}
}

var gtidRE = regexp.MustCompile(`\bGTID (\d+-\d+-\d+)`)

// gtidsIn lists the GTIDs of the transactions in the binlog files of dir,
// in file order, as mariadb-binlog prints them.
func gtidsIn(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fetched binlog files in %s: %v", dir, err)
	}
	sort.Strings(files)
	out, err := exec.Command("mariadb-binlog", files...).CombinedOutput()
	if err != nil {
		t.Fatalf("mariadb-binlog: %v\n%s", err, out)
	}
	var gtids []string
	for _, m := range gtidRE.FindAllStringSubmatch(string(out), -1) {
		gtids = append(gtids, m[1])
	}
	return gtids
}

// gtidsOfServer lists the GTIDs of the transactions in m's binlog files,
// in order (SHOW BINLOG EVENTS).
func gtidsOfServer(t *testing.T, m *testenv.MariaDB) []string {
	t.Helper()
	db := m.DB(t)
	rows, err := db.Query("SHOW BINARY LOGS")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for rows.Next() {
		cols, _ := rows.Columns()
		vals := make([]any, len(cols))
		var name string
		vals[0] = &name
		for i := 1; i < len(cols); i++ {
			vals[i] = new(any)
		}
		if err := rows.Scan(vals...); err != nil {
			t.Fatal(err)
		}
		files = append(files, name)
	}
	_ = rows.Close()
	var gtids []string
	for _, f := range files {
		ev, err := db.Query("SHOW BINLOG EVENTS IN '" + f + "'")
		if err != nil {
			t.Fatal(err)
		}
		for ev.Next() {
			var log, typ, info string
			var pos, sid, end any
			if err := ev.Scan(&log, &pos, &typ, &sid, &end, &info); err != nil {
				t.Fatal(err)
			}
			if typ == "Gtid" {
				if m := gtidRE.FindStringSubmatch(info); m != nil {
					gtids = append(gtids, m[1])
				}
			}
		}
		_ = ev.Close()
	}
	return gtids
}
