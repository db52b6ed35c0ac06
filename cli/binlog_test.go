package cli

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestBinlogCommandsBadInput: the binlog commands refuse bad input with one
// sentence naming the flag, and report an empty repository plainly.
func TestBinlogCommandsBadInput(t *testing.T) {
	dir := t.TempDir()
	repo := "file://" + filepath.Join(dir, "repo")
	if code, _, errs := run(t, "repo", "init", "--repo", repo); code != 0 {
		t.Fatalf("init: %s", errs)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"binlog", "stream", "--repo", repo}, "--mysql is required"},
		{[]string{"binlog", "stream", "--repo", repo, "--mysql", "root@tcp(127.0.0.1:1)/", "--instance", "a/b"}, "instance name"},
		{[]string{"binlog", "fetch", "--repo", repo, "--instance", "x"}, "--instance and --to are required"},
		{[]string{"binlog", "fetch", "--repo", repo, "--instance", "x", "--to", dir, "--from", "yesterday"}, "--from \"yesterday\": use RFC 3339"},
		{[]string{"binlog", "fetch", "--repo", repo, "--instance", "x", "--to", dir}, `instance "x": the repository holds no binlog archive for it (instances with one: none)`},
		{[]string{"binlog", "status", "--repo", repo, "--instance", "x"}, `instance "x"`},
		{[]string{"binlog", "status", "--repo", repo, "-o", "yaml"}, "yaml"},
	} {
		code, _, errs := run(t, c.args...)
		if code == 0 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %q", c.args, code, errs, c.want)
		}
	}
	code, out, errs := run(t, "binlog", "status", "--repo", repo, "-o", "json")
	var sts []any
	if code != 0 || json.Unmarshal([]byte(out), &sts) != nil || len(sts) != 0 {
		t.Errorf("status of an empty repository: %d %q %q", code, out, errs)
	}
	if code, out, _ := run(t, "binlog", "status", "--repo", repo); code != 0 || !strings.Contains(out, "no binlog archives") {
		t.Errorf("text status of an empty repository: %d %q", code, out)
	}
}
