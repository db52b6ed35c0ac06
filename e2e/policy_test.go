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

// TestPolicyProcesses: three controller processes and a real agent serving
// a real mariadbd labelled env=prod. A policy applied with the CLI backs
// the instance up on its schedule (logical engine) and keeps one binlog
// stream running; the backup and the job carry the policy and the
// scheduled time; `tidemark status` finds the instance meeting the policy;
// deleting the policy stops its stream.
func TestPolicyProcesses(t *testing.T) {
	db := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "policy"})
	// A server with no database of its own makes the logical engine's
	// routine listing fail (an empty IN ()): give it one.
	if _, err := db.DB(t).Exec("CREATE DATABASE shop"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.DB(t).Exec("CREATE TABLE shop.t (id INT PRIMARY KEY, v INT)"); err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, db, clusterOpts{extra: []string{"--schedule-interval", "200ms"}})
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
	file := filepath.Join(t.TempDir(), "prod.yaml")
	doc := fmt.Sprintf(`name: prod
selector: env=prod
repository: %s
backups:
  - schedule: "@every 5s"
    engine: logical
    catch_up: 1m
binlog: {enabled: true, flush: 500ms, rpo_target: 1m}
`, c.repo)
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	r := must(t, 30*time.Second, append([]string{"policy", "apply", "-f", file}, c.ctl()...)...)
	if !strings.Contains(r.out, "selects 1 instance(s): db") {
		t.Fatalf("apply: %s", r.out)
	}
	start := time.Now()
	testenv.WaitFor(t, "a scheduled backup and a running stream", testenv.Wait(60*time.Second), func() error {
		b := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"backups", "--instance", "db", "-o", "json"}, c.ctl()...)...))
		var complete bool
		for _, x := range b {
			if x["policy"] == "prod" && x["status"] == "complete" && x["scheduled_for"] != nil {
				complete = true
			}
		}
		js := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"jobs", "-o", "json"}, c.ctl()...)...))
		var streaming bool
		for _, j := range js {
			if j["kind"] == "binlog_stream" && j["policy"] == "prod" && j["state"] == "running" {
				streaming = true
			}
		}
		if !complete || !streaming {
			return fmt.Errorf("complete scheduled backup %t, policy stream running %t", complete, streaming)
		}
		return nil
	})
	t.Logf("first scheduled backup complete and stream running %s after the apply", time.Since(start).Round(time.Millisecond))
	testenv.WaitFor(t, "the instance to meet the policy", testenv.Wait(30*time.Second), func() error {
		st := decode[map[string]any](t, must(t, 10*time.Second, append([]string{"status", "-o", "json"}, c.ctl()...)...))
		pols, _ := st["policies"].([]any)
		if len(pols) != 1 {
			return fmt.Errorf("status: %v", st)
		}
		ins, _ := pols[0].(map[string]any)["instances"].([]any)
		if len(ins) != 1 || ins[0].(map[string]any)["met"] != true || ins[0].(map[string]any)["rpo_seconds"] == nil {
			return fmt.Errorf("status: %v", st)
		}
		return nil
	})
	must(t, 20*time.Second, append([]string{"policy", "delete", "prod"}, c.ctl()...)...)
	testenv.WaitFor(t, "the policy's stream to stop", testenv.Wait(20*time.Second), func() error {
		js := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"jobs", "-o", "json"}, c.ctl()...)...))
		for _, j := range js {
			if j["kind"] == "binlog_stream" && j["state"] != "cancelled" {
				return fmt.Errorf("stream job %v is %v", j["id"], j["state"])
			}
		}
		return nil
	})
}
