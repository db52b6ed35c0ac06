package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// alertSink collects the webhook alerts a controller POSTs.
type alertSink struct {
	mu     sync.Mutex
	alerts []map[string]any
}

func (s *alertSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var a map[string]any
	if err := json.NewDecoder(r.Body).Decode(&a); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.alerts = append(s.alerts, a)
	s.mu.Unlock()
}

func (s *alertSink) of(kind string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, a := range s.alerts {
		if a["kind"] == kind {
			out = append(out, a)
		}
	}
	return out
}

// startOne starts one `tidemark controller` (a cluster of one, with the
// given extra flags) and one `tidemark agent` named db with labels,
// serving db, and returns the CLI's --controller flags.
func startOne(t *testing.T, db *testenv.MariaDB, repo, labels string, extra ...string) []string {
	t.Helper()
	ctl, ca := startSoloController(t, repo, extra...)
	startAgentProc(t, ctl, ca, "db", db.DSN, repo, labels)
	return ctl
}

// startSoloController starts one `tidemark controller` (a cluster of one)
// and returns the CLI's --controller flags and the CA its peers use.
func startSoloController(t *testing.T, repo string, extra ...string) ([]string, *testenv.TestCA) {
	t.Helper()
	dir := t.TempDir()
	must(t, 20*time.Second, "repo", "init", "--repo", repo)
	ca := testenv.NewTestCA(t)
	setCredentials(t, filepath.Dir(ca.Files(t, testenv.Admin()).CA))
	grpc := testenv.FreeAddr(t)
	args := append([]string{"controller", "--data-dir", filepath.Join(dir, "c1"), "--node-id", "c1", "--grpc-addr", grpc,
		"--raft-addr", testenv.FreeAddr(t), "--bootstrap", "--repo", repo}, timing...)
	n := startProc(t, "c1", append(append(args, extra...), testenv.Args(ca.Files(t, testenv.Controller("c1")))...)...)
	ctl := []string{"--controller", grpc}
	testenv.WaitFor(t, "the controller to lead", 20*time.Second, func() error {
		if n.Exited() {
			t.Fatalf("controller exited:\n%s", n.LogTail())
		}
		if r := tm(t, 10*time.Second, append([]string{"cluster", "status"}, ctl...)...); r.code != 0 {
			return fmt.Errorf("cluster status: %s", r.err)
		}
		return nil
	})
	return ctl, ca
}

// startAgentProc starts `tidemark agent` name serving dsn and waits until
// the controller lists it connected.
func startAgentProc(t *testing.T, ctl []string, ca *testenv.TestCA, name, dsn, repo, labels string) *testenv.Child {
	t.Helper()
	a := startProc(t, "agent-"+name, append([]string{"agent", ctl[0], ctl[1], "--name", name, "--mysql", dsn, "--repo", repo,
		"--labels", labels, "--log-level", "debug"}, testenv.Args(ca.Files(t, testenv.Agent(name)))...)...)
	testenv.WaitFor(t, "agent "+name+" to connect", 20*time.Second, func() error {
		list := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"agents", "-o", "json"}, ctl...)...))
		for _, x := range list {
			if x["name"] == name && x["connected"] == true {
				return nil
			}
		}
		return fmt.Errorf("agents: %v", list)
	})
	return a
}

// dbStatus is instance db's line of `tidemark status --policy wal -o json`.
func dbStatus(t *testing.T, ctl []string) map[string]any {
	t.Helper()
	st := decode[map[string]any](t, must(t, 10*time.Second, append([]string{"status", "--policy", "wal", "-o", "json"}, ctl...)...))
	pols, _ := st["policies"].([]any)
	for _, p := range pols {
		ins, _ := p.(map[string]any)["instances"].([]any)
		for _, in := range ins {
			if m := in.(map[string]any); m["instance"] == "db" {
				return m
			}
		}
	}
	t.Fatalf("status lists no db: %v", st)
	return nil
}

// TestBinlogGapAlert runs the real binlog engine through an agent and a
// controller process: the stream is stopped, the server purges binlog
// that was not archived, and the stream started again records the gap.
// The gap reaches the controller with the heartbeats: `status` marks the
// instance unmet naming the missing range, the binlog_gap webhook fires
// once with the range, `binlog status` lists it as reported, and a full
// backup taken after the gap makes the instance meet the policy again.
func TestBinlogGapAlert(t *testing.T) {
	db := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "gapalert"})
	db.Exec(t, "CREATE DATABASE shop", "CREATE TABLE shop.t (id INT PRIMARY KEY)", "INSERT INTO shop.t VALUES (1)")
	sink := &alertSink{}
	hook := httptest.NewServer(sink)
	t.Cleanup(hook.Close)
	repo := "file://" + filepath.Join(t.TempDir(), "repo")
	ctl := startOne(t, db, repo, "env=prod", "--webhook", hook.URL, "--status-interval", "200ms",
		"--watermark-commit-interval", "200ms", "--schedule-interval", "200ms")

	file := filepath.Join(t.TempDir(), "wal.yaml")
	if err := os.WriteFile(file, []byte("name: wal\nselector: env=prod\nbinlog: {enabled: true, flush: 200ms}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, 30*time.Second, append([]string{"policy", "apply", "-f", file}, ctl...)...)
	gtidPos := func() string {
		var p string
		if err := db.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	waitStreamAt := func(want string) {
		t.Helper()
		testenv.WaitFor(t, "the stream durable at "+want, testenv.Wait(30*time.Second), func() error {
			list := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"instances", "-o", "json"}, ctl...)...))
			for _, in := range list {
				if b, _ := in["binlog"].(map[string]any); in["name"] == "db" && b != nil && b["gtid_position"] == want {
					return nil
				}
			}
			return fmt.Errorf("instances %v", list)
		})
	}
	waitStreamAt(gtidPos())
	if st := dbStatus(t, ctl); st["met"] != true {
		t.Fatalf("db before the gap: %v", st)
	}

	// The streamer stops; the server moves on and purges what was not
	// archived; the streamer starts again.
	must(t, 10*time.Second, append([]string{"binlog", "stop", "--instance", "db"}, ctl...)...)
	before := gtidPos()
	db.Exec(t, "INSERT INTO shop.t VALUES (2)", "FLUSH BINARY LOGS", "INSERT INTO shop.t VALUES (3)")
	cur := db.PurgeBinlogs(t)
	db.Exec(t, "INSERT INTO shop.t VALUES (4)")
	must(t, 10*time.Second, append([]string{"binlog", "start", "--instance", "db", "--flush", "200ms"}, ctl...)...)
	waitStreamAt(gtidPos())

	wantRange := fmt.Sprintf("binlog after GTID %s (", before)
	var reasons string
	testenv.WaitFor(t, "status to show the gap", testenv.Wait(20*time.Second), func() error {
		st := dbStatus(t, ctl)
		rs, _ := st["reasons"].([]any)
		reasons = fmt.Sprint(rs)
		if st["met"] != false || !strings.Contains(reasons, "binlog gap in stream db: "+wantRange) {
			return fmt.Errorf("db: %v", st)
		}
		return nil
	})
	if !strings.Contains(reasons, "("+cur+":4) is not archived") || !strings.Contains(reasons, "purged before it was archived") {
		t.Errorf("gap reason %s: want the range up to %s:4 and the purge", reasons, cur)
	}
	testenv.WaitFor(t, "a binlog_gap webhook", testenv.Wait(10*time.Second), func() error {
		if len(sink.of("binlog_gap")) == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	a := sink.of("binlog_gap")[0]
	g, _ := a["gap"].(map[string]any)
	if a["instance"] != "db" || g == nil || g["after_gtid"] != before || !strings.Contains(fmt.Sprint(g["before"]), cur+":4") ||
		g["from_time"] == nil || g["to_time"] == nil || g["detected_at"] == nil || !strings.Contains(fmt.Sprint(g["reason"]), "purged") {
		t.Fatalf("binlog_gap alert %v", a)
	}
	if len(sink.of("binlog_stream_failing")) != 0 {
		t.Errorf("a gap was alerted as a failing stream: %v", sink.of("binlog_stream_failing"))
	}
	bs := decode[map[string]any](t, must(t, 10*time.Second, append([]string{"binlog", "status", "--instance", "db", "-o", "json"}, ctl...)...))
	rg, _ := bs["reported_gaps"].([]any)
	if len(rg) != 1 || rg[0].(map[string]any)["after_gtid"] != before {
		t.Fatalf("binlog status reported gaps %v", bs["reported_gaps"])
	}
	testenv.WaitFor(t, "the gap recorded as alerted", testenv.Wait(10*time.Second), func() error {
		bs := decode[map[string]any](t, must(t, 10*time.Second, append([]string{"binlog", "status", "--instance", "db", "-o", "json"}, ctl...)...))
		if rg, _ := bs["reported_gaps"].([]any); len(rg) != 1 || rg[0].(map[string]any)["alerted_at"] == nil {
			return fmt.Errorf("reported gaps %v", bs["reported_gaps"])
		}
		return nil
	})
	text := must(t, 10*time.Second, append([]string{"binlog", "status", "--instance", "db"}, ctl...)...).out
	if !strings.Contains(text, "gap") || !strings.Contains(text, before) {
		t.Errorf("binlog status text shows no gap:\n%s", text)
	}

	// A full backup after the gap: PITR is whole again from it on.
	must(t, 90*time.Second, append([]string{"backup", "--instance", "db", "--wait"}, ctl...)...)
	testenv.WaitFor(t, "db to meet the policy after a backup", testenv.Wait(10*time.Second), func() error {
		if st := dbStatus(t, ctl); st["met"] != true {
			return fmt.Errorf("db: %v", st)
		}
		return nil
	})
	time.Sleep(time.Second) // five status intervals
	if n := len(sink.of("binlog_gap")); n != 1 {
		t.Fatalf("%d binlog_gap alerts, want 1", n)
	}
}
