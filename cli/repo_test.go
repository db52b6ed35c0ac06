package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// run executes the command tree in-process and returns exit code, stdout, stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, strings.NewReader(""), &out, &errb)
	recordJSON(t, args, code, out.String())
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

// repo gc condemns first and deletes at the next run; its dry run's JSON
// names each condemnation record, since when, its state and when it
// becomes deletable.
func TestRepoGCReport(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	repo := "file://" + dir
	if code, _, errs := run(t, "repo", "init", "--repo", repo); code != 0 {
		t.Fatalf("init: %s", errs)
	}
	st, err := file.Open(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := archive.Open(ctx, st, archive.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	m, err := r.WithBackup(ctx, archive.BackupOptions{Engine: "test"}, func(ctx context.Context, b *archive.Backup) error {
		w, err := b.Stream("s", nil)
		if err != nil {
			return err
		}
		if _, err := w.Write(bytes.Repeat([]byte("row\n"), 1<<16)); err != nil {
			return err
		}
		return w.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, "manifests/"+m.BackupId); err != nil {
		t.Fatal(err)
	}
	code, out, errs := run(t, "repo", "gc", "--repo", repo, "--grace", "0s", "--max-rate", "50")
	if code != 0 || !strings.Contains(out, "deleted 0 chunks") || !strings.Contains(out, "condemned 1 chunks") || !strings.Contains(out, " new ") {
		t.Fatalf("first gc: %d %q %q", code, out, errs)
	}
	code, out, errs = run(t, "repo", "gc", "--repo", repo, "--dry-run", "-o", "json")
	var rep archive.GCReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("dry run: %d %q %q", code, out, errs)
	}
	if len(rep.Records) != 1 || rep.Records[0].State != "deletable" || rep.Records[0].Chunks != 1 ||
		rep.Records[0].CondemnedAt.IsZero() || rep.Records[0].DeletableAt.IsZero() || rep.ChunksDeleted != 1 {
		t.Fatalf("dry run report: %s", out)
	}
	code, out, errs = run(t, "repo", "gc", "--repo", repo, "--grace", "0s", "--max-rate", "0")
	if code != 0 || !strings.Contains(out, "deleted 1 chunks") || !strings.Contains(out, " deleted ") {
		t.Fatalf("second gc: %d %q %q", code, out, errs)
	}
}

// --max-rate takes requests per second or 0; anything else is refused
// before the repository is opened, with what was wrong and what to give.
func TestRepoGCMaxRateRefused(t *testing.T) {
	repo := "file://" + filepath.Join(t.TempDir(), "none")
	for _, bad := range []string{"-1", "NaN", "+Inf"} {
		code, _, errs := run(t, "repo", "gc", "--repo", repo, "--max-rate", bad)
		if code != ExitUsage || !strings.Contains(errs, "--max-rate") || !strings.Contains(errs, "0 for no bound") {
			t.Errorf("--max-rate %s: exit %d, %q", bad, code, errs)
		}
	}
	if code, _, errs := run(t, "repo", "gc", "--repo", repo, "--max-rate", "fast"); code == 0 || !strings.Contains(errs, "max-rate") {
		t.Errorf("--max-rate fast: exit %d, %q", code, errs)
	}
}

func TestRepoKeyCommands(t *testing.T) {
	dir := t.TempDir()
	repo := "file://" + filepath.Join(dir, "repo")
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte("first passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyBytes := bytes.Repeat([]byte("K3yM4t3r14l!"), 3)
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, keyBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := run(t, "repo", "init", "--repo", repo, "--encrypt", "--passphrase-file", pass); code != 0 {
		t.Fatalf("init: %s", errs)
	}
	code, out, errs := run(t, "repo", "key", "add", "--repo", repo, "--passphrase-file", pass, "--new-key-file", key, "-o", "json")
	var added archive.KeyInfo
	if code != 0 || json.Unmarshal([]byte(out), &added) != nil || added.Kind != archive.KindKeyFile {
		t.Fatalf("key add: %d %q %q", code, out, errs)
	}
	code, out, errs = run(t, "repo", "key", "rotate", "--repo", repo, "--key-file", key)
	if code != 0 || !strings.Contains(out, "generation 1") {
		t.Fatalf("rotate: %d %q %q", code, out, errs)
	}
	code, out, errs = run(t, "repo", "key", "list", "--repo", repo, "--key-file", key, "-o", "json")
	var list struct {
		Keys     []archive.KeyInfo     `json:"keys"`
		DataKeys []archive.DataKeyInfo `json:"data_keys"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Keys) != 2 || len(list.DataKeys) != 2 || !list.DataKeys[1].Current {
		t.Fatalf("list: %d %q %q", code, out, errs)
	}
	if strings.Contains(out, "first passphrase") || strings.Contains(out, string(keyBytes)) || strings.Contains(out, "wrapped") {
		t.Fatalf("key list shows key material: %s", out)
	}
	var passID string
	for _, k := range list.Keys {
		if k.Kind == archive.KindPassphrase {
			passID = k.ID
		}
	}
	code, out, errs = run(t, "repo", "key", "remove", passID, "--repo", repo, "--key-file", key, "-o", "json")
	var removed map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &removed) != nil || removed["removed"] != passID {
		t.Fatalf("remove: %d %q %s", code, out, errs)
	}
	code, _, errs = run(t, "repo", "stats", "--repo", repo, "--passphrase-file", pass)
	if code == 0 || !strings.Contains(errs, "wrong key or passphrase") || !strings.Contains(errs, filepath.Join(dir, "repo")) {
		t.Fatalf("removed passphrase still opens, or the error does not name the repository: %d %q", code, errs)
	}
	code, _, errs = run(t, "repo", "key", "remove", added.ID, "--repo", repo, "--key-file", key)
	if code == 0 || !strings.Contains(errs, "last key") {
		t.Fatalf("removing the last key: %d %q", code, errs)
	}
	code, out, errs = run(t, "repo", "key", "list", "--repo", repo, "--key-file", key)
	if code != 0 || !strings.Contains(out, added.ID) || strings.Contains(out, passID) {
		t.Fatalf("list after removal: %d %q %q", code, out, errs)
	}
	code, _, errs = run(t, "repo", "key", "add", "--repo", repo, "--key-file", key)
	if code == 0 || !strings.Contains(errs, "--new-key-file") {
		t.Fatalf("add without a new key: %d %q", code, errs)
	}
}

func TestRepoInitObjectLockBadInput(t *testing.T) {
	repo := "file://" + filepath.Join(t.TempDir(), "repo")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--object-lock", "7"}, "needs an s3:// repository"},
		{[]string{"--object-lock", "7", "--object-lock-mode", "forever"}, "use governance or compliance"},
		{[]string{"--object-lock", "-1"}, "at least 1"},
		{[]string{"--object-lock-mode", "compliance"}, "needs --object-lock DAYS"},
	} {
		code, _, errs := run(t, append([]string{"repo", "init", "--repo", repo}, c.args...)...)
		if code == 0 || !strings.Contains(errs, c.want) {
			t.Errorf("init %v: %d %q, want an error saying %q", c.args, code, errs, c.want)
		}
	}
}

// TestRepoInitObjectLockS3: --object-lock on a bucket created with Object
// Lock is recorded in the config; on a plain bucket it is refused, saying
// why.
func TestRepoInitObjectLockS3(t *testing.T) {
	mc := testenv.StartMinIO(t)
	mc.NewLockedBucket(t, "locked")
	t.Setenv("AWS_ACCESS_KEY_ID", mc.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", mc.SecretKey)
	t.Setenv("TIDEMARK_KEY_FILE", "")
	t.Setenv("TIDEMARK_PASSPHRASE_FILE", "")
	uri := func(bucket string) string {
		return fmt.Sprintf("s3://%s/r?endpoint=%s&tls=false", bucket, mc.Endpoint)
	}
	code, _, errs := run(t, "repo", "init", "--repo", uri(mc.Bucket), "--object-lock", "7")
	if code == 0 || !strings.Contains(errs, "does not have Object Lock enabled") {
		t.Fatalf("object lock on a plain bucket: %d %q", code, errs)
	}
	code, out, errs := run(t, "repo", "init", "--repo", uri("locked"), "--object-lock", "7", "--object-lock-mode", "compliance", "-o", "json")
	var res struct {
		ObjectLock archive.ObjectLock `json:"object_lock"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.ObjectLock != (archive.ObjectLock{Days: 7, Mode: "compliance"}) {
		t.Fatalf("init with object lock: %d %q %q", code, out, errs)
	}
	code, out, errs = run(t, "repo", "gc", "--repo", uri("locked"), "--grace", "0s", "-o", "json")
	if code != 0 || !strings.Contains(out, `"chunks_retained":0`) {
		t.Fatalf("gc: %d %q %q", code, out, errs)
	}
}
