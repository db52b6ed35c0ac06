package controller_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/controller/policy"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestPolicyAgentOffline (in-process, fake clock): a run due while its
// agent is offline waits as a pending job through its catch-up window,
// then fails saying the agent is not connected, and status shows it.
func TestPolicyAgentOffline(t *testing.T) {
	clock := &testClock{t: time.Now().UTC().Truncate(time.Minute).Add(-time.Hour)}
	srv, c := startInProcess(t, func(cfg *controller.Config) {
		cfg.Clock = clock
		cfg.ScheduleInterval = 50 * time.Millisecond
	})
	ctx := context.Background()
	a, err := connectAgentLabeled(t, []string{srv.Addr()}, "db9", map[string]string{"env": "prod"})
	if err != nil {
		t.Fatal(err)
	}
	a.close()
	if _, err := c.Control.ApplyPolicies(ctx, &v1.ApplyPoliciesRequest{FileName: "p.yaml",
		Yaml: "name: p\nselector: env=prod\nbackups:\n  - schedule: \"@every 1m\"\n    catch_up: 1m\n"}); err != nil {
		t.Fatal(err)
	}
	p, err := c.Control.GetPolicy(ctx, &v1.GetPolicyRequest{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	applied := p.GetPolicy().GetCreatedAt().AsTime()
	id := policy.RunID("p", 0, "db9", applied.Add(time.Minute))
	clock.set(applied.Add(time.Minute + 7*time.Second))
	if j := waitJobState(t, c, id, v1.JobState_JOB_STATE_PENDING, testenv.Wait(10*time.Second)); j.GetAgent() != "" {
		t.Fatalf("job %v", j)
	}
	clock.set(applied.Add(2*time.Minute + 30*time.Second))
	j := waitJobState(t, c, id, v1.JobState_JOB_STATE_FAILED, testenv.Wait(10*time.Second))
	if !strings.Contains(j.GetReason(), "not started within the catch-up window (1m0s)") || !strings.Contains(j.GetReason(), "agent db9 is not connected") {
		t.Fatalf("reason %q", j.GetReason())
	}
	st, err := c.Control.GetPolicyStatus(ctx, &v1.GetPolicyStatusRequest{Policy: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if in := st.GetPolicies()[0].GetInstances()[0]; in.GetMet() || !strings.Contains(strings.Join(in.GetReasons(), ";"), "agent db9 is not connected") {
		t.Fatalf("status %v", in)
	}
}
