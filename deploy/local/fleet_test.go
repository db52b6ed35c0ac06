package local

import (
	"bufio"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// tidemarkBin is the binary TestMain builds once.
var tidemarkBin string

func TestMain(m *testing.M) { testenv.MainWithTidemark(m, &tidemarkBin) }

// fleet runs fleet.sh ACTION dir with the test's binaries and returns its
// output; the script's own waits are bounded, timeout is a last resort.
func fleet(t *testing.T, timeout time.Duration, env []string, action, dir string) (string, error) {
	t.Helper()
	cmd := exec.Command("./fleet.sh", action, dir)
	cmd.Env = append(append(os.Environ(), "TIDEMARK="+tidemarkBin, "MINIO="+minioBin(t),
		"TIDEMARK_CONTROLLER=", "TIDEMARK_CREDENTIALS=", "TIDEMARK_REPO="), env...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(testenv.Wait(timeout)):
		_ = cmd.Process.Kill()
		err := <-done
		return out.String(), fmt.Errorf("fleet.sh %s did not finish in %s: %w", action, timeout, err)
	}
}

func minioBin(t *testing.T) string {
	return testenv.RequireBinary(t, "minio", testenv.MinIOInstallHint)
}

func requireTools(t *testing.T) {
	t.Helper()
	for _, b := range []string{"mariadbd", "mariadb-install-db", "mariadb"} {
		testenv.RequireBinary(t, b, testenv.MariaDBInstallHint)
	}
	testenv.RequireBinary(t, "curl", "apt-get install -y curl")
	testenv.RequireBinary(t, "python3", "apt-get install -y python3")
	minioBin(t)
}

// processesUnder lists the live processes whose command line names dir:
// every process the script starts has its state directory in its
// arguments (datadirs, --data-dir, --credentials, MinIO's drive).
func processesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	self := fmt.Sprint(os.Getpid())
	for _, e := range ents {
		if e.Name() == self || strings.Trim(e.Name(), "0123456789") != "" {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), dir) {
			continue
		}
		found = append(found, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
	}
	return found
}

// env reads the exports `up` wrote into DIR/env.
func env(t *testing.T, dir string) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		if ok {
			out[k] = strings.Trim(v, "'")
		}
	}
	return out
}

// checksums is CHECKSUM TABLE and COUNT(*) of every table of schema.
func checksums(t *testing.T, port, schema string) map[string]string {
	t.Helper()
	db, err := sql.Open("mysql", fmt.Sprintf("root@tcp(127.0.0.1:%s)/", port))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	rows, err := db.Query("SELECT table_name FROM information_schema.tables WHERE table_schema = ? AND table_type = 'BASE TABLE'", schema)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, tb := range tables {
		var name string
		var sum sql.NullInt64
		var n int64
		if err := db.QueryRow("CHECKSUM TABLE `"+schema+"`.`"+tb+"` EXTENDED").Scan(&name, &sum); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow("SELECT COUNT(*) FROM `" + schema + "`.`" + tb + "`").Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[tb] = fmt.Sprintf("checksum %d, %d rows", sum.Int64, n)
	}
	return out
}

var backupIDRE = regexp.MustCompile(`^\d{8}T\d{6}Z-[0-9a-f]+-a\d+$`)

// TestFleetScript runs deploy/local/fleet.sh as an operator would: up (three
// controllers joined with a token, MinIO, two MariaDB servers with agents
// joined with tokens), demo twice (a backup of db1 and its restore onto db2
// through the controllers; the second over the first), then checks on its
// own that db2 holds db1's tables, and that down leaves no process behind. A second up on a running
// fleet is refused; an up that fails half way stops what it started.
func TestFleetScript(t *testing.T) {
	requireTools(t)
	dir := t.TempDir()
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(dir, "run")); err == nil {
			if out, err := fleet(t, 60*time.Second, nil, "down", dir); err != nil {
				t.Errorf("fleet.sh down (cleanup): %v\n%s", err, out)
			}
		}
	})
	dumpLogs := func() {
		logs, _ := filepath.Glob(filepath.Join(dir, "log", "*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			if len(b) > 3000 {
				b = b[len(b)-3000:]
			}
			t.Logf("--- %s\n%s", filepath.Base(l), b)
		}
	}

	start := time.Now()
	out, err := fleet(t, 120*time.Second, nil, "up", dir)
	if err != nil {
		dumpLogs()
		t.Fatalf("fleet.sh up: %v\n%s", err, out)
	}
	t.Logf("up in %s", time.Since(start).Round(100*time.Millisecond))
	e := env(t, dir)
	for _, k := range []string{"TIDEMARK_CONTROLLER", "TIDEMARK_CREDENTIALS", "FLEET_DB1_PORT", "FLEET_DB2_PORT"} {
		if e[k] == "" {
			t.Fatalf("DIR/env lacks %s:\n%v", k, e)
		}
	}
	if n := len(strings.Split(e["TIDEMARK_CONTROLLER"], ",")); n != 3 {
		t.Errorf("TIDEMARK_CONTROLLER names %d controllers, want 3", n)
	}
	// The agents hold certificates they got with their join tokens (no
	// shortcut through --insecure or a test CA).
	for _, db := range []string{"db1", "db2"} {
		if _, err := os.Stat(filepath.Join(dir, "agent-"+db, "cert.pem")); err != nil {
			t.Errorf("agent %s has no certificate from its join token: %v", db, err)
		}
	}
	running := processesUnder(t, dir)
	// MinIO, two servers, three controllers, two agents.
	if len(running) < 8 {
		t.Errorf("%d processes under the fleet's directory, want at least 8:\n%s", len(running), strings.Join(running, "\n"))
	}

	if out, err := fleet(t, 30*time.Second, nil, "up", dir); err == nil || !strings.Contains(out, "holds a fleet already") {
		t.Errorf("a second up on a running fleet: %v\n%s", err, out)
	}

	start = time.Now()
	out, err = fleet(t, 120*time.Second, nil, "demo", dir)
	if err != nil {
		dumpLogs()
		t.Fatalf("fleet.sh demo: %v\n%s", err, out)
	}
	t.Logf("demo in %s", time.Since(start).Round(100*time.Millisecond))
	id := strings.TrimSpace(out[strings.LastIndex(strings.TrimRight(out, "\n"), "\n")+1:])
	if !backupIDRE.MatchString(id) {
		t.Errorf("demo's last line %q is no backup id\n%s", id, out)
	}
	src, dst := checksums(t, e["FLEET_DB1_PORT"], "shop"), checksums(t, e["FLEET_DB2_PORT"], "shop")
	if len(src) != 2 || fmt.Sprint(src) != fmt.Sprint(dst) {
		t.Errorf("after the restore: db1 %v, db2 %v", src, dst)
	}
	// Again: more rows on db1, a second backup, restored over the first.
	out, err = fleet(t, 120*time.Second, nil, "demo", dir)
	if err != nil {
		dumpLogs()
		t.Fatalf("fleet.sh demo, second run: %v\n%s", err, out)
	}
	src2, dst2 := checksums(t, e["FLEET_DB1_PORT"], "shop"), checksums(t, e["FLEET_DB2_PORT"], "shop")
	if fmt.Sprint(src2) == fmt.Sprint(src) || fmt.Sprint(src2) != fmt.Sprint(dst2) {
		t.Errorf("after the second demo: db1 %v (before %v), db2 %v", src2, src, dst2)
	}

	out, err = fleet(t, 60*time.Second, nil, "down", dir)
	if err != nil {
		t.Fatalf("fleet.sh down: %v\n%s", err, out)
	}
	if left := processesUnder(t, dir); len(left) > 0 {
		t.Errorf("processes left after down:\n%s", strings.Join(left, "\n"))
	}

	t.Run("failed up stops what it started", func(t *testing.T) {
		dir := t.TempDir()
		// A tidemark that fails: MinIO and both servers are up by the
		// time it is first run (repo init).
		bad := filepath.Join(t.TempDir(), "tidemark")
		if err := os.WriteFile(bad, []byte("#!/bin/sh\necho broken tidemark >&2\nexit 3\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := fleet(t, 60*time.Second, []string{"TIDEMARK=" + bad}, "up", dir)
		if err == nil || !strings.Contains(out, "repo init failed") || !strings.Contains(out, "broken tidemark") {
			t.Errorf("up with a failing tidemark: %v\n%s", err, out)
		}
		if left := processesUnder(t, dir); len(left) > 0 {
			t.Errorf("processes left after a failed up:\n%s", strings.Join(left, "\n"))
		}
	})
}
