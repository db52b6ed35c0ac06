package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// noOutput are the runnable commands that print no data on stdout, so
// take no --output, each with the reason.
var noOutput = map[string]string{
	"tidemark agent":         "a daemon: logs on stderr (--log-format json), nothing on stdout",
	"tidemark controller":    "a daemon: logs on stderr (--log-format json), nothing on stdout",
	"tidemark binlog stream": "a daemon: logs on stderr (--log-format json), nothing on stdout",
	"tidemark completion":    "prints a shell script, not data",
}

// walkTree calls f for every command of the tree.
func walkTree(c *cobra.Command, f func(*cobra.Command)) {
	f(c)
	for _, sub := range c.Commands() {
		walkTree(sub, f)
	}
}

// TestEveryPrintingCommandTakesOutput walks the whole command tree: a
// runnable command either takes -o/--output (text or json) or is listed
// in noOutput with the reason it prints no data.
func TestEveryPrintingCommandTakesOutput(t *testing.T) {
	root := NewRoot(strings.NewReader(""), io.Discard, io.Discard)
	seen := map[string]bool{}
	walkTree(root, func(c *cobra.Command) {
		if !c.Runnable() || c.Hidden {
			return
		}
		path := c.CommandPath()
		seen[path] = true
		f := c.Flags().Lookup("output")
		if _, exempt := noOutput[path]; exempt {
			if f != nil {
				t.Errorf("%s takes --output but is listed as printing no data: drop it from noOutput", path)
			}
			return
		}
		if f == nil {
			t.Errorf("%s prints data but has no -o/--output flag (or list it in noOutput with the reason)", path)
			return
		}
		if f.Shorthand != "o" || f.DefValue != "text" || !strings.Contains(f.Usage, "json") {
			t.Errorf("%s: --output is -%s, default %q, usage %q; want -o, default text, text or json", path, f.Shorthand, f.DefValue, f.Usage)
		}
	})
	for path := range noOutput {
		if !seen[path] {
			t.Errorf("noOutput lists %s, which is not a command", path)
		}
	}
}

// TestEveryCommandHasExample walks the tree: every command, groups
// included, shows an Example in its help.
func TestEveryCommandHasExample(t *testing.T) {
	root := NewRoot(strings.NewReader(""), io.Discard, io.Discard)
	n := 0
	walkTree(root, func(c *cobra.Command) {
		if c.Hidden {
			return
		}
		n++
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("%s has no Example (add one to the command or to examples.go)", c.CommandPath())
		} else if !strings.Contains(c.Example, "tidemark") {
			t.Errorf("%s: Example shows no tidemark command line: %q", c.CommandPath(), c.Example)
		}
	})
	for path := range examples {
		found := false
		walkTree(root, func(c *cobra.Command) { found = found || c.CommandPath() == path })
		if !found {
			t.Errorf("examples.go has an entry for %s, which is not a command", path)
		}
	}
	if n < 40 {
		t.Errorf("walked %d commands; the tree has more", n)
	}
	var help bytes.Buffer
	code := Main([]string{"--help"}, strings.NewReader(""), &help, io.Discard)
	if code != 0 || !strings.Contains(help.String(), exitCodesHelp) {
		t.Errorf("tidemark --help: exit %d, does not list the exit codes:\n%s", code, help.String())
	}
}

// TestExitCodes checks each documented exit code against a cause of that
// kind (4 and a real controller's refusal are in TestFleetJSON).
func TestExitCodes(t *testing.T) {
	t.Setenv("TIDEMARK_CONTROLLER", "")
	t.Setenv("TIDEMARK_REPO", "")
	t.Setenv("TIDEMARK_TOKEN_FILE", "")
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	admin := testenv.NewTestCA(t).Files(t, testenv.Admin())
	t.Setenv("TIDEMARK_CREDENTIALS", filepath.Dir(admin.CA))
	closed := fmt.Sprintf("127.0.0.1:%d", freeClosedPort(t))
	repo := damagedRepo(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"version"}, ExitOK, ""},
		{[]string{"bogus"}, ExitUsage, `unknown command "bogus"`},
		{[]string{"jobs", "--bogus"}, ExitUsage, "unknown flag: --bogus"},
		{[]string{"jobs", "--timeout", "soon"}, ExitUsage, `invalid argument "soon"`},
		{[]string{"job", "cancel"}, ExitUsage, "accepts 1 arg(s), received 0"},
		{[]string{"job", "watch", "a", "b"}, ExitUsage, "accepts 1 arg(s), received 2"},
		{[]string{"jobs", "-o", "yaml", "--controller", closed}, ExitUsage, `unknown output format "yaml"`},
		{[]string{"backup", "--controller", closed}, ExitUsage, "--instance NAME is required"},
		{[]string{"restore"}, ExitUsage, "BACKUP_ID is required"},
		{[]string{"agents"}, ExitUsage, "no controller address"},
		{[]string{"completion", "tcsh"}, ExitUsage, `invalid argument "tcsh"`},
		{[]string{"repo", "verify", "--repo", repo}, ExitDamaged, "repository damaged"},
		{[]string{"repo", "verify", "--repo", repo, "-o", "json"}, ExitDamaged, "repository damaged"},
		{[]string{"jobs", "--controller", closed}, ExitUnreachable, "no Tidemark controller answers"},
		{[]string{"job", "cancel", "j1", "--controller", closed}, ExitUnreachable, "no Tidemark controller answers"},
		{[]string{"cluster", "transfer-leadership", "--controller", closed}, ExitUnreachable, "no Tidemark controller answers"},
		{[]string{"backups", "--repo", "file://" + filepath.Join(t.TempDir(), "none")}, ExitFailed, "does not exist"},
		{[]string{"restore", "nosuchbackup", "--repo", repo, "--to-mysql", "root@tcp(127.0.0.1:1)/"}, ExitFailed, "nosuchbackup"},
	} {
		code, _, errs := run(t, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("tidemark %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.want)
		}
	}
	// A credential the controller's CA did not issue: the TLS handshake
	// fails, which is a refused credential.
	srv := startTestController(t)
	code, _, errs := run(t, "jobs", "--controller", srv.addr)
	if code != ExitUnauthorized {
		t.Errorf("jobs with a foreign CA's credential: exit %d, stderr %q; want %d", code, errs, ExitUnauthorized)
	}
}

// damagedRepo is a file repository holding one backup whose only chunk
// was deleted.
func damagedRepo(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	uri := "file://" + dir
	if code, _, errs := run(t, "repo", "init", "--repo", uri); code != 0 {
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
	if _, err := r.WithBackup(ctx, archive.BackupOptions{Engine: "test"}, func(ctx context.Context, b *archive.Backup) error {
		w, err := b.Stream("s", nil)
		if err != nil {
			return err
		}
		if _, err := w.Write(bytes.Repeat([]byte("row\n"), 1<<12)); err != nil {
			return err
		}
		return w.Close()
	}); err != nil {
		t.Fatal(err)
	}
	var chunks []string
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && strings.Contains(p, "/chunks/") {
			chunks = append(chunks, p)
		}
		return nil
	})
	sort.Strings(chunks)
	if len(chunks) == 0 {
		t.Fatalf("no chunk files under %s", dir)
	}
	if err := os.Remove(chunks[0]); err != nil {
		t.Fatal(err)
	}
	return uri
}

// TestManPages generates the man pages as `make man` does: one page per
// command, each with its example.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	root := NewRoot(strings.NewReader(""), io.Discard, io.Discard)
	root.DisableAutoGenTag = true
	if err := doc.GenManTree(root, &doc.GenManHeader{Title: "TIDEMARK", Section: "1"}, dir); err != nil {
		t.Fatal(err)
	}
	walkTree(root, func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" { // cobra's own help, added by GenManTree
			return
		}
		name := strings.ReplaceAll(c.CommandPath(), " ", "-") + ".1"
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", c.CommandPath(), err)
			return
		}
		if !bytes.Contains(b, []byte("EXAMPLE")) {
			t.Errorf("%s has no EXAMPLE section", name)
		}
	})
}
