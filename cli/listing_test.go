package cli

import (
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestListingPages: `jobs` and `backups` through a real controller (tidemark
// dev in-process, a real MariaDB) follow every page when a page holds less
// than the listing (--page-size), newest first; --limit stops early and
// prints on stderr the token with which --page-token lists the rest.
func TestListingPages(t *testing.T) {
	db := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "cli-pages"})
	db.Exec(t, "CREATE DATABASE shop", "CREATE TABLE shop.t (id INT PRIMARY KEY)", "INSERT INTO shop.t VALUES (1)")
	startDevInProcess(t, db)
	var jobs, backups []string
	for range 3 {
		var obj map[string]any
		mustJSON(t, &obj, "backup", "--instance", "local", "--wait", "-o", "json")
		if obj["state"] != "succeeded" {
			t.Fatalf("backup: %v", obj)
		}
		jobs = append([]string{obj["id"].(string)}, jobs...) // newest first
		backups = append([]string{obj["backup_id"].(string)}, backups...)
	}
	ids := func(args ...string) []string {
		t.Helper()
		var list []map[string]any
		mustJSON(t, &list, args...)
		var out []string
		for _, m := range list {
			out = append(out, m["id"].(string))
		}
		return out
	}
	for _, size := range []string{"1", "2", "0"} {
		if got := ids("jobs", "-o", "json", "--page-size", size); strings.Join(got, " ") != strings.Join(jobs, " ") {
			t.Fatalf("jobs --page-size %s = %v, want %v", size, got, jobs)
		}
		if got := ids("backups", "-o", "json", "--page-size", size); strings.Join(got, " ") != strings.Join(backups, " ") {
			t.Fatalf("backups --page-size %s = %v, want %v", size, got, backups)
		}
	}
	for _, what := range []struct {
		cmd  string
		want []string
	}{{"jobs", jobs}, {"backups", backups}} {
		code, out, errs := run(t, what.cmd, "-o", "json", "--limit", "2")
		tok, ok := strings.CutPrefix(strings.TrimSpace(errs), "more: continue with --page-token ")
		if code != 0 || !ok || tok == "" || strings.Count(out, `"id"`) != 2 {
			t.Fatalf("%s --limit 2: exit %d, stdout %q, stderr %q", what.cmd, code, out, errs)
		}
		if got := ids(what.cmd, "-o", "json", "--page-token", tok); len(got) != 1 || got[0] != what.want[2] {
			t.Fatalf("%s --page-token: %v, want [%s]", what.cmd, got, what.want[2])
		}
		if code, _, errs := run(t, what.cmd, "--page-token", "nonsense"); code == 0 || !strings.Contains(errs, "bad page_token") {
			t.Fatalf("%s with a bad token: exit %d, stderr %q", what.cmd, code, errs)
		}
	}
}
