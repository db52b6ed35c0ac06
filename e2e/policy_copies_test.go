package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestPolicyCopiesProcesses: three controller processes and a real agent
// serving a real mariadbd labelled env=prod. A policy with a copy
// repository makes the leader copy each scheduled backup there (the copy
// shows in `backups -o json`); with the primary repository gone, a
// restore through the controller with --repo-preference reads the copy,
// and the restored database equals the source exactly.
func TestPolicyCopiesProcesses(t *testing.T) {
	db := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "polcopy"})
	testenv.LoadSample(t, db.DB(t), "shop", 200)
	want := testenv.Checksums(t, db.DB(t), "shop")
	c := startCluster(t, db, clusterOpts{extra: []string{"--schedule-interval", "200ms", "--copy-interval", "200ms"}})
	c.agent.Kill()
	testenv.WaitFor(t, "the killed agent's session to end", 10*time.Second, func() error {
		if r := must(t, 10*time.Second, append([]string{"agents", "-o", "json"}, c.ctl()...)...); strings.Contains(r.out, `"connected":true`) {
			return fmt.Errorf("agents: %s", r.out)
		}
		return nil
	})
	c.agent.Args = append(c.agent.Args, "--labels", "env=prod")
	c.agent.Start()
	testenv.WaitFor(t, "the agent to connect with its labels", 20*time.Second, func() error {
		if r := must(t, 10*time.Second, append([]string{"instances", "-o", "json"}, c.ctl()...)...); !strings.Contains(r.out, `"env":"prod"`) {
			return fmt.Errorf("instances: %s", r.out)
		}
		return nil
	})
	dir := t.TempDir()
	second := "file://" + filepath.Join(dir, "second")
	must(t, 20*time.Second, "repo", "init", "--repo", second)
	file := filepath.Join(dir, "prod.yaml")
	doc := fmt.Sprintf(`name: prod
selector: env=prod
repository: %s
backups:
  - schedule: "@every 1h"
    engine: logical
copies:
  - repository: %s
    retention: {keep_last: 2}
`, c.repo, second)
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, 30*time.Second, append([]string{"policy", "apply", "-f", file}, c.ctl()...)...)
	// No scheduled run for an hour: one by hand, which the policy's
	// copies cover like any complete backup of the instance.
	id := lastLine(must(t, 120*time.Second, append([]string{"backup", "--instance", "db", "--engine", "logical", "--wait"}, c.ctl()...)...).out)
	testenv.WaitFor(t, "the policy's copy of "+id, testenv.Wait(60*time.Second), func() error {
		for _, b := range decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"backups", "--instance", "db", "-o", "json"}, c.ctl()...)...)) {
			if b["id"] != id {
				continue
			}
			cps, _ := b["copies"].([]any)
			if len(cps) == 1 && cps[0].(map[string]any)["repository_uri"] == second {
				return nil
			}
			return fmt.Errorf("copies of %s: %v", id, cps)
		}
		return fmt.Errorf("backup %s not listed", id)
	})
	must(t, 20*time.Second, append([]string{"policy", "delete", "prod"}, c.ctl()...)...)
	// The primary repository is gone; the operator prefers the copy
	// (through a controller the preference picks among the repositories
	// the catalog lists the backup in, not by trying each).
	primary := strings.TrimPrefix(c.repo, "file://")
	if err := os.Rename(primary, primary+".gone"); err != nil {
		t.Fatal(err)
	}
	must(t, 180*time.Second, append([]string{"restore", id, "--to-instance", "db", "--repo-preference", second, "--rename-db", "shop:shop_copy"}, c.ctl()...)...)
	got := testenv.Checksums(t, db.DB(t), "shop_copy")
	if len(got) != len(want) || len(want) == 0 {
		t.Fatalf("restored from the copy: %v, want %v", got, want)
	}
	for k, v := range want {
		if got["shop_copy"+strings.TrimPrefix(k, "shop")] != v {
			t.Errorf("restored from the copy: %s = %v, want %v", k, got["shop_copy"+strings.TrimPrefix(k, "shop")], v)
		}
	}
}
