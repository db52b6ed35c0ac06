package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// readme returns the repository's README.
func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// quickStart returns the shell block that follows the README's quick start
// marker.
func quickStart(t *testing.T) string {
	t.Helper()
	md := readme(t)
	i := strings.Index(md, "<!-- quick start:")
	if i < 0 {
		t.Fatal("README has no quick start marker")
	}
	m := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(md[i:])
	if m == nil {
		t.Fatal("no ```sh block after the README's quick start marker")
	}
	return m[1]
}

// TestReadmeQuickStart runs the README's standalone quick start as it is
// written, in bash, with the built binary first on PATH; only the SOURCE
// and TARGET lines are replaced by this test's servers. The source user
// holds exactly the logical engine's grants from the README. Then the
// target must equal the source.
func TestReadmeQuickStart(t *testing.T) {
	script := quickStart(t)
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "quickstart-src"})
	testenv.LoadSample(t, src.DB(t), "shop", 500)
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "quickstart-dst"})
	grants := readmeGrants(t)["logical"]
	src.Exec(t, "CREATE USER 'backup'@'%' IDENTIFIED BY 'qs-pw'", "GRANT "+strings.Join(grants, ", ")+" ON *.* TO 'backup'@'%'")
	dst.Exec(t, "CREATE USER 'restore'@'%' IDENTIFIED BY 'rs-pw'", "GRANT ALL PRIVILEGES ON *.* TO 'restore'@'%'")

	replaced := 0
	var lines []string
	for _, l := range strings.Split(script, "\n") {
		switch {
		case strings.HasPrefix(l, "SOURCE="):
			l = fmt.Sprintf("SOURCE='backup@tcp(127.0.0.1:%d)/'", src.Port)
			replaced++
		case strings.HasPrefix(l, "TARGET="):
			l = fmt.Sprintf("TARGET='restore@tcp(127.0.0.1:%d)/'", dst.Port)
			replaced++
		}
		lines = append(lines, l)
	}
	if replaced != 2 {
		t.Fatalf("the quick start has %d SOURCE=/TARGET= lines, want one of each:\n%s", replaced, script)
	}
	dir := t.TempDir()
	for name, pw := range map[string]string{"source.pass": "qs-pw", "target.pass": "rs-pw"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", strings.Join(lines, "\n"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(tidemarkBin)+":"+os.Getenv("PATH"),
		"TIDEMARK_CONTROLLER=", "TIDEMARK_REPO=", "TIDEMARK_KEY_FILE=", "TIDEMARK_MYSQL_PASSWORD=")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(testenv.Wait(120 * time.Second)):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("the quick start did not finish:\n%s", out)
	}
	if err != nil {
		t.Fatalf("the README's quick start failed: %v\n%s", err, out)
	}
	if filepath.Base(tidemarkBin) != "tidemark" {
		t.Fatalf("the built binary is %s: the quick start's `tidemark` would not be it", tidemarkBin)
	}
	testenv.Compare(t, src.DB(t), dst.DB(t), "shop")
	// The repository it made is encrypted: it does not open without the key.
	r := tm(t, 20*time.Second, "backups", "--repo", "file://"+filepath.Join(dir, "tidemark-repo"))
	if r.code == 0 || !strings.Contains(r.err, "encrypted") {
		t.Errorf("the quick start's repository without its key: exit %d\n%s%s", r.code, r.out, r.err)
	}
}

// readmeGrants parses the README's "Grants on the server" table: engine →
// privileges.
func readmeGrants(t *testing.T) map[string][]string {
	t.Helper()
	md := readme(t)
	i := strings.Index(md, "## Grants on the server")
	if i < 0 {
		t.Fatal("README has no \"## Grants on the server\" section")
	}
	md = md[i:]
	if j := strings.Index(md[3:], "\n## "); j >= 0 {
		md = md[:j+3]
	}
	out := map[string][]string{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z]+)` \\| `([^`]+)` \\|").FindAllStringSubmatch(md, -1) {
		var gs []string
		for _, g := range strings.Split(m[2], ",") {
			gs = append(gs, strings.TrimSpace(g))
		}
		out[m[1]] = gs
	}
	if len(out) == 0 {
		t.Fatal("no grants rows in the README's table")
	}
	return out
}
