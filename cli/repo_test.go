package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// run executes the command tree in-process and returns exit code, stdout, stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestRepoCommands(t *testing.T) {
	dir := t.TempDir()
	repo := "file://" + filepath.Join(dir, "repo")
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte("s3cret passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := run(t, "repo", "init", "--repo", repo, "--encrypt", "--passphrase-file", pass, "-o", "json")
	if code != 0 {
		t.Fatalf("init: %d %s", code, errs)
	}
	var initOut map[string]any
	if err := json.Unmarshal([]byte(out), &initOut); err != nil || initOut["encryption"] != "aes-256-gcm" {
		t.Fatalf("init json: %q %v", out, err)
	}
	code, _, errs = run(t, "repo", "init", "--repo", repo, "--encrypt", "--passphrase-file", pass)
	if code == 0 || !strings.Contains(errs, "already exists") {
		t.Fatalf("second init: %d %q", code, errs)
	}
	code, _, errs = run(t, "repo", "stats", "--repo", repo)
	if code == 0 || !strings.Contains(errs, "--passphrase-file") {
		t.Fatalf("stats without key: %d %q", code, errs)
	}
	wrong := filepath.Join(dir, "wrong")
	_ = os.WriteFile(wrong, []byte("nope"), 0o600)
	code, _, errs = run(t, "repo", "stats", "--repo", repo, "--passphrase-file", wrong)
	if code == 0 || !strings.Contains(errs, "wrong key or passphrase") {
		t.Fatalf("stats with wrong key: %d %q", code, errs)
	}
	code, out, errs = run(t, "repo", "stats", "--repo", repo, "--passphrase-file", pass, "-o", "json")
	if code != 0 || !strings.Contains(out, `"backups":0`) {
		t.Fatalf("stats: %d %q %q", code, out, errs)
	}
	code, out, errs = run(t, "repo", "verify", "--repo", repo, "--passphrase-file", pass, "--read-data")
	if code != 0 || !strings.Contains(out, "no problems found") {
		t.Fatalf("verify: %d %q %q", code, out, errs)
	}
	code, out, errs = run(t, "repo", "gc", "--repo", repo, "--passphrase-file", pass, "--dry-run", "--grace", "0s")
	if code != 0 || !strings.Contains(out, "would delete 0 chunks") {
		t.Fatalf("gc: %d %q %q", code, out, errs)
	}
	code, _, errs = run(t, "repo", "stats", "--repo", "file://"+filepath.Join(dir, "nothing-here"))
	if code == 0 || !strings.Contains(errs, "does not exist") {
		t.Fatalf("missing repo: %d %q", code, errs)
	}
	code, _, errs = run(t, "repo", "stats", "--repo", "ftp://x/y")
	if code == 0 || !strings.Contains(errs, "ftp") {
		t.Fatalf("bad scheme: %d %q", code, errs)
	}
	code, _, errs = run(t, "repo", "stats")
	if code == 0 || !strings.Contains(errs, "--repo is required") {
		t.Fatalf("no repo: %d %q", code, errs)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := run(t, "version", "-o", "json")
	var v map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || !strings.HasPrefix(v["go_version"], "go1.") {
		t.Fatalf("version: %d %q", code, out)
	}
	if code, _, errs := run(t, "version", "-o", "yaml"); code == 0 || !strings.Contains(errs, "yaml") {
		t.Fatalf("bad output: %d %q", code, errs)
	}
}
