package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// syncBuffer is a bytes.Buffer safe for a command writing in one goroutine
// and the test reading in another.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// devFleet is `tidemark dev` run in the test process: a controller, a file
// repository and an agent named "local" serving a real MariaDB.
type devFleet struct {
	addr, creds, repo string
	db                *testenv.MariaDB
	// revoked is set by a test that revokes the agent: dev then ends with
	// the agent's refusal, which is no failure.
	revoked *atomic.Bool
}

// startDevInProcess runs `tidemark dev -o json` in a goroutine until the
// test ends, and points the CLI's environment at it.
func startDevInProcess(t *testing.T, db *testenv.MariaDB) *devFleet {
	t.Helper()
	t.Setenv("TIDEMARK_CONTROLLER", "")
	t.Setenv("TIDEMARK_REPO", "")
	t.Setenv("TIDEMARK_CREDENTIALS", "")
	t.Setenv("TIDEMARK_TOKEN_FILE", "")
	t.Setenv("TIDEMARK_KEY_FILE", "")
	t.Setenv("TIDEMARK_PASSPHRASE_FILE", "")
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	dir := t.TempDir()
	var out, errb syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	root := NewRootWith(EngineWiring(), strings.NewReader(""), &out, &errb)
	root.SetArgs([]string{"dev", "--mysql", db.DSN, "--data-dir", dir, "--grpc-addr", testenv.FreeAddr(t),
		"--heartbeat-interval", "200ms", "--lease-duration", "5s", "--log-level", "warn", "-o", "json"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	revoked := new(atomic.Bool)
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && (!revoked.Load() || !strings.Contains(err.Error(), "is revoked")) {
				t.Errorf("tidemark dev: %v", err)
			}
		case <-time.After(testenv.Wait(30 * time.Second)):
			t.Errorf("tidemark dev did not stop")
		}
		if t.Failed() {
			t.Logf("tidemark dev stderr:\n%s", errb.String())
		}
	})
	var info map[string]any
	testenv.WaitFor(t, "tidemark dev -o json to print its address", 30*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("tidemark dev ended: %v\n%s", err, errb.String())
		default:
		}
		line, _, ok := strings.Cut(out.String(), "\n")
		if !ok {
			return fmt.Errorf("nothing printed yet")
		}
		return json.Unmarshal([]byte(line), &info)
	})
	for _, k := range []string{"controller", "credentials", "repository", "data_dir", "agent"} {
		if _, ok := info[k].(string); !ok {
			t.Fatalf("dev -o json: %q is %v in %v", k, info[k], info)
		}
	}
	jsonRuns.Store("tidemark dev", true) // its first line parsed above
	f := &devFleet{addr: info["controller"].(string), creds: info["credentials"].(string), repo: info["repository"].(string), db: db, revoked: revoked}
	t.Setenv("TIDEMARK_CONTROLLER", f.addr)
	t.Setenv("TIDEMARK_CREDENTIALS", f.creds)
	testenv.WaitFor(t, "agent local to connect", 30*time.Second, func() error {
		var agents []map[string]any
		if err := runJSON(t, &agents, "agents", "-o", "json"); err != nil {
			return err
		}
		if len(agents) != 1 || agents[0]["connected"] != true {
			return fmt.Errorf("agents: %v", agents)
		}
		return nil
	})
	return f
}

// runJSON runs a command that must succeed and decodes its stdout, one
// JSON document, into v.
func runJSON(t *testing.T, v any, args ...string) error {
	t.Helper()
	code, out, errs := run(t, args...)
	if code != 0 {
		return fmt.Errorf("tidemark %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("tidemark %s: stdout is not JSON (%w): %q", strings.Join(args, " "), err, out)
	}
	if dec.More() {
		return fmt.Errorf("tidemark %s: more than one JSON document: %q", strings.Join(args, " "), out)
	}
	return nil
}

func mustJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	if err := runJSON(t, v, args...); err != nil {
		t.Fatal(err)
	}
}

// wantKeys fails unless m has every key.
func wantKeys(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("%s: no %q in %v", what, k, m)
		}
	}
}

// wantRFC3339 fails unless m[key] is an RFC 3339 time.
func wantRFC3339(t *testing.T, what string, m map[string]any, key string) {
	t.Helper()
	s, _ := m[key].(string)
	if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
		t.Errorf("%s: %q is %v, not an RFC 3339 time", what, key, m[key])
	}
}

// TestFleetJSON runs every fleet command that prints data with -o json
// against a real controller and agent (tidemark dev in-process, a real
// MariaDB) and parses what it printed; job cancel stops a running backup
// and leaves no manifest; a viewer's cancel exits 4.
func TestFleetJSON(t *testing.T) {
	db := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "cli-json"})
	db.Exec(t, "CREATE DATABASE shop", "CREATE TABLE shop.t (id INT PRIMARY KEY, v VARCHAR(20))",
		"INSERT INTO shop.t VALUES (1,'a'),(2,'b'),(3,'c')")
	f := startDevInProcess(t, db)

	var obj map[string]any
	var list []map[string]any

	mustJSON(t, &list, "agents", "-o", "json")
	wantKeys(t, "agents", list[0], "name", "labels", "capabilities", "last_seen", "connected")
	wantRFC3339(t, "agents", list[0], "last_seen")
	mustJSON(t, &list, "instances", "-o", "json")
	if len(list) != 1 || list[0]["name"] != "local" {
		t.Fatalf("instances: %v", list)
	}
	mustJSON(t, &obj, "cluster", "status", "-o", "json")
	if obj["leader"] != "dev" {
		t.Errorf("cluster status: %v", obj)
	}

	// A backup job followed to its end prints the final job.
	mustJSON(t, &obj, "backup", "--instance", "local", "--wait", "-o", "json")
	if obj["state"] != "succeeded" || obj["backup_id"] == "" || obj["kind"] != "backup" {
		t.Fatalf("backup --wait -o json: %v", obj)
	}
	backupID, backupJob := obj["backup_id"].(string), obj["id"].(string)
	wantRFC3339(t, "backup job", obj, "created_at")
	mustJSON(t, &list, "backups", "--instance", "local", "-o", "json")
	if len(list) != 1 || list[0]["id"] != backupID || list[0]["status"] != "complete" {
		t.Fatalf("backups: %v", list)
	}
	mustJSON(t, &list, "jobs", "-o", "json")
	if len(list) != 1 || list[0]["id"] != backupJob {
		t.Fatalf("jobs: %v", list)
	}

	// job watch -o json: JSON lines, the last one the final job.
	code, out, errs := run(t, "job", "watch", backupJob, "-o", "json")
	if code != 0 || errs != "" {
		t.Fatalf("job watch: exit %d, stderr %q", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, l := range lines {
		if err := json.Unmarshal([]byte(l), &obj); err != nil {
			t.Fatalf("job watch line %q: %v", l, err)
		}
	}
	if obj["state"] != "succeeded" || obj["backup_id"] != backupID {
		t.Errorf("job watch's last line: %v", obj)
	}

	// Restores: as a job onto the instance, and here through the
	// controller's record of the repository.
	mustJSON(t, &obj, "restore", backupID, "--to-instance", "local", "--rename-db", "shop:shop_job", "-o", "json")
	if obj["state"] != "succeeded" || obj["kind"] != "restore" || obj["restore_backup_id"] != backupID {
		t.Fatalf("restore --to-instance -o json: %v", obj)
	}
	mustJSON(t, &obj, "restore", backupID, "--controller", f.addr, "--to-mysql", db.DSN, "--rename-db", "shop:shop_here", "-o", "json")
	if obj["backup_id"] != backupID || obj["rows"] != float64(3) {
		t.Fatalf("restore --to-mysql -o json: %v", obj)
	}
	var n int
	if err := db.DB(t).QueryRow("SELECT (SELECT COUNT(*) FROM shop_job.t) + (SELECT COUNT(*) FROM shop_here.t)").Scan(&n); err != nil || n != 6 {
		t.Fatalf("restored rows: %d, %v", n, err)
	}

	// A finished job is not cancelled; the error says how and when it
	// ended.
	code, _, errs = run(t, "job", "cancel", backupJob)
	if code != ExitFailed || !strings.Contains(errs, "job "+backupJob+" already succeeded at 20") || !strings.Contains(errs, "nothing to cancel") {
		t.Errorf("cancel of a finished job: exit %d, %q", code, errs)
	}

	t.Run("CancelRunningBackup", func(t *testing.T) { testCancelRunningBackup(t, f) })

	// The binlog stream: start, status through the controller and from
	// the repository, fetch, stop.
	mustJSON(t, &obj, "binlog", "start", "--instance", "local", "--flush", "100ms", "-o", "json")
	if obj["kind"] != "binlog_stream" || obj["instance"] != "local" {
		t.Fatalf("binlog start -o json: %v", obj)
	}
	db.Exec(t, "INSERT INTO shop.t VALUES (4,'d')")
	testenv.WaitFor(t, "the stream to archive a segment", 30*time.Second, func() error {
		var st []map[string]any
		if err := runJSON(t, &st, "binlog", "status", "--repo", f.repo, "-o", "json"); err != nil {
			return err
		}
		if len(st) == 0 {
			return fmt.Errorf("no archive yet")
		}
		return nil
	})
	mustJSON(t, &obj, "binlog", "status", "--instance", "local", "-o", "json")
	mustJSON(t, &list, "binlog", "fetch", "--repo", f.repo, "--instance", "local", "--to", t.TempDir(), "-o", "json")
	if len(list) == 0 {
		t.Errorf("binlog fetch -o json: no files")
	} else {
		wantKeys(t, "binlog fetch", list[0], "path", "file", "start_pos", "end_pos", "first_gtid", "last_gtid")
	}
	mustJSON(t, &obj, "binlog", "stop", "--instance", "local", "-o", "json")
	if obj["state"] != "cancelled" {
		t.Errorf("binlog stop -o json: %v", obj)
	}

	mustJSON(t, &list, "audit", "-o", "json")
	if len(list) == 0 {
		t.Errorf("audit: empty")
	}
	mustJSON(t, &obj, "token", "create", "--role", "agent", "-o", "json")
	wantKeys(t, "token create", obj, "token", "role", "expires_at", "uses")
	wantRFC3339(t, "token create", obj, "expires_at")

	t.Run("PoliciesRetentionCopies", func(t *testing.T) { testPolicyRetentionJSON(t, f, backupID) })

	// Cluster maintenance on a single node: refused, with the reason.
	code, _, errs = run(t, "cluster", "transfer-leadership")
	if code != ExitFailed || !strings.Contains(errs, "only voter") {
		t.Errorf("transfer-leadership on one node: exit %d, %q", code, errs)
	}
	code, _, errs = run(t, "cluster", "remove-member", "c9")
	if code != ExitFailed || !strings.Contains(errs, `"c9" is not a member`) {
		t.Errorf("remove-member of a stranger: exit %d, %q", code, errs)
	}

	// A viewer may read but not cancel: exit code 4.
	mustJSON(t, &obj, "token", "create", "--role", "viewer", "--user", "bob", "-o", "json")
	tokFile := filepath.Join(t.TempDir(), "bob.token")
	if err := os.WriteFile(tokFile, []byte(obj["token"].(string)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TIDEMARK_CREDENTIALS", "")
	mustJSON(t, &obj, "login", "--token-file", tokFile, "-o", "json")
	wantKeys(t, "login", obj, "token_id", "path")
	mustJSON(t, &list, "jobs", "-o", "json")
	code, _, errs = run(t, "job", "cancel", backupJob)
	if code != ExitUnauthorized || !strings.Contains(errs, "viewer") {
		t.Errorf("a viewer's cancel: exit %d, %q; want %d", code, errs, ExitUnauthorized)
	}

	// Last: revoking dev's own agent ends dev (it says why), so nothing
	// may ask dev's controller anything after this. An admin revokes;
	// the viewer's credentials are set aside first.
	t.Setenv("TIDEMARK_CREDENTIALS", f.creds)
	f.revoked.Store(true)
	mustJSON(t, &obj, "agent", "revoke", "local", "-o", "json")
	if obj["agent"] != "local" || obj["revoked"] != true {
		t.Errorf("agent revoke -o json: %v", obj)
	}
}

// testCancelRunningBackup holds a write lock on the table a backup must
// read, so the backup job blocks while running; job cancel stops it, and
// once the lock is gone no manifest appears.
func testCancelRunningBackup(t *testing.T, f *devFleet) {
	ctx := context.Background()
	conn, err := f.db.DB(t).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := conn.ExecContext(ctx, "LOCK TABLES shop.t WRITE"); err != nil {
		t.Fatal(err)
	}
	locked := true
	defer func() {
		if locked {
			_, _ = conn.ExecContext(ctx, "UNLOCK TABLES")
		}
	}()
	var before []map[string]any
	mustJSON(t, &before, "backups", "--repo", f.repo, "-o", "json")

	var obj map[string]any
	mustJSON(t, &obj, "backup", "--instance", "local", "-o", "json")
	job, _ := obj["job_id"].(string)
	if job == "" {
		t.Fatalf("backup -o json: %v", obj)
	}
	testenv.WaitFor(t, "the backup to block on the table lock", 30*time.Second, func() error {
		var waiting int
		err := f.db.DB(t).QueryRow("SELECT COUNT(*) FROM information_schema.processlist WHERE state LIKE '%lock%' AND id <> CONNECTION_ID()").Scan(&waiting)
		if err != nil || waiting == 0 {
			return fmt.Errorf("nothing waits for a lock yet (%w)", err)
		}
		return nil
	})
	mustJSON(t, &obj, "job", "cancel", job, "--reason", "test cancel", "-o", "json")
	if obj["state"] != "cancelled" || obj["reason"] != "test cancel" {
		t.Fatalf("job cancel -o json: %v", obj)
	}
	// The agent drops the attempt: its connections close, so nothing waits
	// for the lock any more, even before it is released.
	testenv.WaitFor(t, "the cancelled backup's statements to go", 15*time.Second, func() error {
		var waiting int
		err := f.db.DB(t).QueryRow("SELECT COUNT(*) FROM information_schema.processlist WHERE state LIKE '%lock%' AND id <> CONNECTION_ID() AND command <> 'Killed'").Scan(&waiting)
		if err != nil || waiting != 0 {
			return fmt.Errorf("%d statements still wait (%w)", waiting, err)
		}
		return nil
	})
	if _, err := conn.ExecContext(ctx, "UNLOCK TABLES"); err != nil {
		t.Fatal(err)
	}
	locked = false
	// Had the attempt gone on, it would finish within moments of the
	// unlock and store its manifest.
	time.Sleep(testenv.Wait(2 * time.Second))
	var after []map[string]any
	mustJSON(t, &after, "backups", "--repo", f.repo, "-o", "json")
	if len(after) != len(before) {
		t.Errorf("the repository holds %d backups after the cancelled one, %d before: %v", len(after), len(before), after)
	}
	var jobs []map[string]any
	mustJSON(t, &jobs, "jobs", "-o", "json")
	for _, j := range jobs {
		if j["id"] == job && (j["state"] != "cancelled" || j["backup_id"] != "") {
			t.Errorf("the cancelled job: %v", j)
		}
	}
	code, _, errs := run(t, "job", "cancel", job)
	if code != ExitFailed || !strings.Contains(errs, "already cancelled at") || !strings.Contains(errs, "test cancel") {
		t.Errorf("second cancel: exit %d, %q", code, errs)
	}
}

// complete runs cobra's hidden __complete command in-process and returns
// the candidates (without descriptions) and the directive line.
func complete(t *testing.T, args ...string) ([]string, string, string) {
	t.Helper()
	code, out, errs := run(t, append([]string{"__complete"}, args...)...)
	if code != 0 {
		t.Fatalf("__complete %v: exit %d: %s", args, code, errs)
	}
	var cands []string
	directive := ""
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, ":") {
			directive = l
			continue
		}
		if l != "" {
			c, _, _ := strings.Cut(l, "\t")
			cands = append(cands, c)
		}
	}
	return cands, directive, errs
}

// TestCompletion: the completion scripts generate, and __complete offers
// the controller's instances, backup ids, job ids and members; with no
// controller answering it offers nothing, quickly and without a message.
func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		code, out, errs := run(t, "completion", sh)
		if code != 0 || !strings.Contains(out, "__complete") {
			t.Errorf("completion %s: exit %d, %q, script without __complete", sh, code, errs)
		}
	}
	// A server with no database of its own: its backup has no table (and
	// once failed listing routines "IN ()").
	db := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "cli-complete"})
	f := startDevInProcess(t, db)
	var job map[string]any
	mustJSON(t, &job, "backup", "--instance", "local", "--wait", "-o", "json")
	id := job["backup_id"].(string)

	contains := func(what string, got []string, want string) {
		t.Helper()
		for _, g := range got {
			if g == want {
				return
			}
		}
		t.Errorf("%s: candidates %q lack %q", what, got, want)
	}
	got, dir, _ := complete(t, "backup", "--instance", "")
	contains("backup --instance", got, "local")
	if dir != ":4" { // ShellCompDirectiveNoFileComp
		t.Errorf("backup --instance: directive %q", dir)
	}
	got, _, _ = complete(t, "backup", "--instance", "lo")
	contains("backup --instance lo", got, "local")
	if got, _, _ = complete(t, "backup", "--instance", "zz"); len(got) != 0 {
		t.Errorf("backup --instance zz: %q", got)
	}
	got, _, _ = complete(t, "restore", "--to-instance", "")
	contains("restore --to-instance", got, "local")
	got, _, _ = complete(t, "restore", "")
	contains("restore", got, id)
	got, _, _ = complete(t, "restore", "--from-backup", "")
	contains("restore --from-backup", got, id)
	got, _, _ = complete(t, "job", "watch", "")
	contains("job watch", got, job["id"].(string))
	got, _, _ = complete(t, "job", "cancel", "")
	contains("job cancel", got, job["id"].(string))
	got, _, _ = complete(t, "cluster", "transfer-leadership", "")
	contains("cluster transfer-leadership", got, "dev")
	// The controller given on the command line is the one asked.
	got, _, _ = complete(t, "jobs", "--controller", f.addr, "--instance", "")
	contains("jobs --controller --instance", got, "local")

	// Nobody answers: nothing offered, no message, well within a TAB's
	// patience.
	closed := fmt.Sprintf("127.0.0.1:%d", freeClosedPort(t))
	start := time.Now()
	got, dir, errs := complete(t, "backup", "--controller", closed, "--instance", "")
	if took := time.Since(start); len(got) != 0 || dir != ":4" || took > 3*time.Second {
		t.Errorf("no controller: candidates %q, directive %q, took %s", got, dir, took)
	}
	if strings.Contains(errs, "error") {
		t.Errorf("no controller: stderr %q", errs)
	}
	// A blackholed address (nothing answers the SYN) is cut off by the
	// completion's own timeout.
	start = time.Now()
	got, _, _ = complete(t, "backup", "--controller", "10.255.255.1:7400", "--insecure=false", "--instance", "")
	if took := time.Since(start); len(got) != 0 || took > 3*time.Second {
		t.Errorf("blackholed controller: candidates %q, took %s", got, took)
	}
}

// testPolicyRetentionJSON runs, with -o json, the commands of policies,
// schedules, status, retention, pins, copies and expiry, engine selection
// and reconcile against the dev fleet, and checks what each printed.
// backupID is the fleet's one complete backup so far.
func testPolicyRetentionJSON(t *testing.T, f *devFleet, backupID string) {
	// Each command decodes into a new value: json.Unmarshal into a map
	// keeps the keys an earlier document left.
	var obj map[string]any
	var list []map[string]any
	one := func(args ...string) {
		t.Helper()
		obj = nil
		mustJSON(t, &obj, args...)
	}
	many := func(args ...string) {
		t.Helper()
		list = nil
		mustJSON(t, &list, args...)
	}

	one("engines", "explain", "local", "-o", "json")
	if obj["instance"] != "local" || obj["chosen"] != "logical" {
		t.Errorf("engines explain -o json: %v", obj)
	}

	// A policy selecting the dev agent (env=dev): a daily schedule, so no
	// run falls due during the test, and a retention that keeps all.
	file := filepath.Join(t.TempDir(), "json.yaml")
	if err := os.WriteFile(file, []byte("name: json\nselector: env=dev\nbackups:\n  - schedule: \"@daily\"\nretention: {keep_last: 10}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	one("policy", "apply", "-f", file, "--dry-run", "-o", "json")
	if chs, _ := obj["changes"].([]any); obj["applied"] != false || len(chs) != 1 {
		t.Fatalf("policy apply --dry-run -o json: %v", obj)
	}
	one("policy", "apply", "-f", file, "-o", "json")
	if obj["applied"] != true {
		t.Fatalf("policy apply -o json: %v", obj)
	}
	many("policies", "-o", "json")
	if len(list) != 1 || list[0]["name"] != "json" {
		t.Errorf("policies -o json: %v", list)
	}
	one("policy", "show", "json", "-o", "json")
	if ins, _ := obj["instances"].([]any); len(ins) != 1 || ins[0] != "local" {
		t.Errorf("policy show -o json: %v", obj)
	}
	one("schedule", "-o", "json")
	if runs, _ := obj["runs"].([]any); len(runs) == 0 {
		t.Errorf("schedule -o json: no runs in %v", obj)
	} else if r, _ := runs[0].(map[string]any); r == nil || r["policy"] != "json" {
		t.Errorf("schedule -o json: first run %v", runs[0])
	} else {
		wantRFC3339(t, "schedule run", r, "scheduled_for")
	}
	one("status", "-o", "json")
	if ps, _ := obj["policies"].([]any); len(ps) != 1 {
		t.Errorf("status -o json: %v", obj)
	}
	many("retention", "plan", "--instance", "local", "--keep-last", "1", "-o", "json")
	if len(list) != 1 || list[0]["instance"] != "local" {
		t.Errorf("retention plan -o json: %v", list)
	}
	many("retention", "plan", "--policy", "json", "-o", "json")
	if len(list) != 1 || list[0]["instance"] != "local" {
		t.Errorf("retention plan --policy -o json: %v", list)
	}
	one("retention", "apply", "--policy", "json", "-o", "json")
	if jobs, ok := obj["job_ids"].([]any); !ok || len(jobs) != 0 {
		t.Errorf("retention apply -o json (keep_last 10: nothing expires): %v", obj)
	}
	one("policy", "delete", "json", "-o", "json")
	if _, ok := obj["deleted"].(map[string]any); !ok {
		t.Errorf("policy delete -o json: %v", obj)
	}

	one("backup", "pin", backupID, "--reason", "audit", "-o", "json")
	if pin, _ := obj["pin"].(map[string]any); obj["id"] != backupID || pin == nil {
		t.Errorf("backup pin -o json: %v", obj)
	}
	one("backup", "unpin", backupID, "-o", "json")
	if obj["id"] != backupID || obj["pin"] != nil {
		t.Errorf("backup unpin -o json: %v", obj)
	}

	second := "file://" + filepath.Join(t.TempDir(), "second")
	if code, _, errs := run(t, "repo", "init", "--repo", second); code != 0 {
		t.Fatalf("repo init %s: %s", second, errs)
	}
	one("backup", "copy", backupID, "--to", second, "--wait", "-o", "json")
	if obj["state"] != "succeeded" || obj["kind"] != "copy" {
		t.Errorf("backup copy --wait -o json: %v", obj)
	}
	many("repo", "reconcile", "--repo", f.repo, "--controller", f.addr, "--dry-run", "-o", "json")
	for _, e := range list {
		if e["state"] != "catalog" {
			t.Errorf("repo reconcile -o json: a manifest not in the catalog: %v", e)
		}
	}

	// Expiry needs a newer complete backup (the last one is never expired).
	one("backup", "--instance", "local", "--wait", "-o", "json")
	if obj["state"] != "succeeded" {
		t.Fatalf("second backup: %v", obj)
	}
	one("backup", "expire", backupID, "--reason", "json test", "--wait", "-o", "json")
	if obj["state"] != "succeeded" || obj["kind"] != "expire" {
		t.Errorf("backup expire --wait -o json: %v", obj)
	}
}
