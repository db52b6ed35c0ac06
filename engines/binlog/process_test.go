package binlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/secret"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/storage/s3"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

func TestMain(m *testing.M) { testenv.MainWithLazyTidemark(m) }

// minioRepo initialises a repository in MinIO and returns it with its URI
// and the environment a tidemark process needs to open it.
func minioRepo(t *testing.T) (*archive.Repo, string, []string) {
	t.Helper()
	m := testenv.StartMinIO(t)
	uri := "s3://" + m.Bucket + "/repo?endpoint=" + m.Endpoint + "&tls=false"
	st, err := location.Open(context.Background(), uri, location.Options{Create: true,
		S3: s3.Config{Credentials: &s3.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: secret.NewString(m.SecretKey)}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	repo, err := archive.Init(context.Background(), st, archive.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(repo.Close)
	return repo, uri, []string{"AWS_ACCESS_KEY_ID=" + m.AccessKey, "AWS_SECRET_ACCESS_KEY=" + m.SecretKey}
}

func runTidemark(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(testenv.TidemarkBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// TestStreamKill9 runs `tidemark binlog stream` as a process into MinIO under
// a concurrent writer, kills it with SIGKILL several times and starts it
// again: the archive equals the server's binlog event for event (no gap, no
// duplicate), SIGTERM ends a run with exit status 0, `binlog status -o json`
// reports the server's GTID position, and `binlog fetch` writes files
// mariadb-binlog reads.
func TestStreamKill9(t *testing.T) {
	bin := testenv.TidemarkBinary(t)
	m := testenv.StartMariaDB(t)
	db := m.DB(t)
	m.Exec(t, "CREATE DATABASE test")
	repo, uri, env := minioRepo(t)
	args := []string{"binlog", "stream", "--mysql", m.DSN, "--repo", uri, "--instance", "db1", "--flush", "300ms"}
	w := startWriter(t, db, "test.t")
	child := testenv.NewChild(t, "stream", bin, args...)
	child.Env = env
	child.Start()
	kills := 4
	if testing.Short() {
		kills = 2
	}
	for i := 0; i < kills; i++ {
		time.Sleep(time.Duration(400+rand.IntN(1200)) * time.Millisecond)
		if i == 1 {
			m.Exec(t, "FLUSH BINARY LOGS")
		}
		child.Kill()
		time.Sleep(100 * time.Millisecond)
		child.Start()
	}
	time.Sleep(time.Second)
	w.Stop()
	if w.commits.Load() == 0 {
		t.Fatalf("writer committed nothing: %v", w.lastErr.Load())
	}
	waitCaughtUp(t, repo, "db1", db)
	child.Kill()

	// A last run ended by SIGTERM exits 0.
	last := exec.Command(bin, args...)
	last.Env = append(os.Environ(), env...)
	var lastErr bytes.Buffer
	last.Stderr = &lastErr
	if err := last.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(testenv.Wait(1500 * time.Millisecond))
	_ = last.Process.Signal(syscall.SIGTERM)
	if err := last.Wait(); err != nil {
		t.Fatalf("stream after SIGTERM: %v\n%s", err, lastErr.String())
	}

	archived, a := archivedBinlog(t, repo, "db1")
	compareBinlog(t, serverBinlog(t, m), archived)
	if g := a.Gaps(); len(g) != 0 {
		t.Errorf("gaps: %+v", g)
	}

	code, out, errOut := runTidemark(t, env, "binlog", "status", "--repo", uri, "-o", "json")
	if code != 0 {
		t.Fatalf("status: %d %s", code, errOut)
	}
	var sts []map[string]any
	if err := json.Unmarshal([]byte(out), &sts); err != nil || len(sts) != 1 {
		t.Fatalf("status JSON %q: %v", out, err)
	}
	var want string
	_ = db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&want)
	st := sts[0]
	if st["instance"] != "db1" || st["gtid_position"] != want || st["file"] == "" || st["position"] == nil || st["last_event_time"] == nil || st["rpo_seconds"] == nil {
		t.Errorf("status %v, want gtid_position %s", st, want)
	}
	if gaps, ok := st["gaps"].([]any); !ok || len(gaps) != 0 {
		t.Errorf("status gaps %v", st["gaps"])
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(st["last_event_time"])); err != nil {
		t.Errorf("last_event_time %v: %v", st["last_event_time"], err)
	}

	dir := t.TempDir()
	code, out, errOut = runTidemark(t, env, "binlog", "fetch", "--repo", uri, "--instance", "db1", "--to", dir)
	if code != 0 {
		t.Fatalf("fetch: %d %s", code, errOut)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) == 0 || strings.Count(out, "\n") != len(files) {
		t.Fatalf("fetch wrote %v; printed %q", files, out)
	}
	text := mariadbBinlogReads(t, files...)
	if !strings.Contains(text, "GTID "+want) {
		t.Errorf("mariadb-binlog output lacks the last transaction GTID %s", want)
	}

	code, _, errOut = runTidemark(t, env, "binlog", "status", "--repo", uri, "--instance", "nosuch")
	if code == 0 || !strings.Contains(errOut, `instance "nosuch"`) || !strings.Contains(errOut, "db1") {
		t.Errorf("status of an unknown instance: %d %q", code, errOut)
	}
}
