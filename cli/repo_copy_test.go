package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestRepoCopyRestoreFromCopy: a backup in an encrypted file repository is
// copied to an encrypted MinIO bucket under another key; the primary
// repository is then removed, and a restore with --repo-preference
// primary,copy skips the primary and gives exactly the source's checksums
// from the copy.
func TestRepoCopyRestoreFromCopy(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "copy-src"})
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "copy-dst"})
	mc := testenv.StartMinIO(t)
	srcDB, dstDB := src.DB(t), dst.DB(t)
	rows := 5000
	if testing.Short() {
		rows = 1000
	}
	testenv.LoadSample(t, srcDB, "shop", rows)
	want := testenv.Checksums(t, srcDB, "shop")
	for _, k := range []string{"TIDEMARK_REPO", "TIDEMARK_KEY_FILE", "TIDEMARK_PASSPHRASE_FILE", "TIDEMARK_CONTROLLER"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_ACCESS_KEY_ID", mc.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", mc.SecretKey)
	dir := t.TempDir()
	keyA, passB := filepath.Join(dir, "a.key"), filepath.Join(dir, "b.pass")
	if err := os.WriteFile(keyA, []byte(strings.Repeat("k", 40)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passB, []byte("copy passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	primaryDir := filepath.Join(dir, "primary")
	primary := "file://" + primaryDir
	second := fmt.Sprintf("s3://%s/copies?endpoint=%s&tls=false", mc.Bucket, mc.Endpoint)
	if code, _, errs := run(t, "repo", "init", "--repo", primary, "--encrypt", "--key-file", keyA); code != 0 {
		t.Fatalf("init primary: %s", errs)
	}
	if code, _, errs := run(t, "repo", "init", "--repo", second, "--encrypt", "--passphrase-file", passB); code != 0 {
		t.Fatalf("init second: %s", errs)
	}
	code, out, errs := run(t, "backup", "--mysql", src.DSN, "--repo", primary, "--key-file", keyA)
	if code != 0 {
		t.Fatalf("backup: %s", errs)
	}
	id := lastLine(out)

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"repo", "copy", id, "--from", primary}, "--from URI and --to URI are both required"},
		{[]string{"repo", "copy", id, "--from", primary, "--to", primary}, "name the same repository"},
		{[]string{"repo", "copy", "../x", "--from", primary, "--to", second}, "backup id"},
		{[]string{"repo", "copy", id, "--from", primary, "--to", second, "--from-key-file", keyA}, "pass --to-key-file or --to-passphrase-file"},
	} {
		if code, _, errs := run(t, bad.args...); code == 0 || !strings.Contains(errs, bad.want) {
			t.Errorf("tidemark %s: exit %d, %q; want %q", strings.Join(bad.args, " "), code, errs, bad.want)
		}
	}

	copyArgs := []string{"repo", "copy", id, "--from", primary, "--from-key-file", keyA, "--to", second, "--to-passphrase-file", passB, "-o", "json"}
	code, out, errs = run(t, copyArgs...)
	if code != 0 {
		t.Fatalf("copy: %s", errs)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil || res["already_there"] != false || res["uploaded_bytes"].(float64) == 0 || res["chunks_verified"].(float64) == 0 {
		t.Fatalf("copy output %q: %v", out, err)
	}
	code, out, errs = run(t, copyArgs...)
	if code != 0 || !strings.Contains(out, `"already_there":true`) {
		t.Fatalf("second copy: %d %q %q", code, out, errs)
	}

	// The primary repository is gone; the copy restores exactly.
	if err := os.RemoveAll(primaryDir); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := run(t, "restore", id, "--repo", primary, "--repo-preference", primary+","+second, "--to-mysql", dst.DSN); code == 0 || !strings.Contains(errs, "not both") {
		t.Fatalf("--repo with --repo-preference: %d %q", code, errs)
	}
	code, _, errs = run(t, "restore", id, "--repo-preference", primary+","+second, "--passphrase-file", passB, "--to-mysql", dst.DSN)
	if code != 0 {
		t.Fatalf("restore from the copy: %s", errs)
	}
	if !strings.Contains(errs, "skipping "+primary) || !strings.Contains(errs, "restoring backup "+id+" from s3://") {
		t.Errorf("restore did not say which repository it used: %q", errs)
	}
	if got := testenv.Checksums(t, dstDB, "shop"); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored from the copy:\n%v\nsource:\n%v", got, want)
	}
}
