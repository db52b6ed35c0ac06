package agent

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/internal/agentlink"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestReregisterBeforeReprobe: an agent that holds a lease and lost its
// controller registers with the next one at once, with its last probe,
// instead of probing its (here hanging) server first for up to
// ProbeTimeout while the new leader's lease window runs; and it sends the
// running job's latest progress again on the new session.
func TestReregisterBeforeReprobe(t *testing.T) {
	t.Parallel()
	f1, f2 := startFake(t), startFake(t)
	cfg := testConfig(t, "db-11", f1.addr, f2.addr)
	cfg.MySQL = "tidemark@tcp(" + blackHole(t) + ")/"
	cfg.ProbeTimeout = 3 * time.Second
	cfg.probeMaxAge = time.Millisecond // every probe is stale at once
	cfg.Repo = newRepo(t)
	runAgent(t, cfg)

	s1 := f1.next(t, 15*time.Second)
	l := lease("job-p", 1, 4)
	s1.assign(backupJob("job-p", "db-11", "b-p"), l)
	s1.heartbeat(t, "heartbeat with job-p", func(h *v1.Heartbeat) bool { return len(h.GetRunning()) == 1 })

	cut := time.Now()
	f1.srv.Stop()
	s2 := f2.next(t, 15*time.Second)
	took := time.Since(cut)
	t.Logf("re-registered %s after the cut (a probe takes %s)", took.Round(time.Millisecond), cfg.ProbeTimeout)
	if took >= cfg.ProbeTimeout/2 {
		t.Errorf("re-registering took %s: the agent probed before registering", took)
	}
	if r := s2.reg.GetRunning(); len(r) != 1 || !proto.Equal(r[0].GetLease(), l) {
		t.Fatalf("Register lists %v, want job-p under its lease", r)
	}
	if len(s2.reg.GetInstances()) != 1 || s2.reg.GetInstances()[0].GetName() != "db-11" {
		t.Errorf("Register reports instances %v, want the last probe's", s2.reg.GetInstances())
	}
	// The job's progress, unchanged since the first session, is sent again
	// on the new one: the new leader learns the job runs.
	if p := s2.progressOf(t, "job-p"); !proto.Equal(p.GetLease(), l) || p.GetProgress().GetPhase() == "" {
		t.Errorf("progress on the new session: %v", p)
	}
	s2.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_CancelJob{CancelJob: &v1.JobCancellation{JobId: "job-p", Lease: l, Reason: "test over"}}})
	s2.ack(s2.result(t, "job-p").GetSeq())
}

// TestBackoffCapWhileHoldingLease: the wait between reconnect rounds is
// the configured maximum for an idle agent, and at most agentlink's cap
// while the agent holds a lease.
func TestBackoffCapWhileHoldingLease(t *testing.T) {
	a := &Agent{cfg: Config{BackoffMax: time.Minute}, jobs: map[string]*job{}}
	if got := a.backoffMax(); got != time.Minute {
		t.Errorf("idle: backoff max %s, want the configured 1m", got)
	}
	a.jobs["j"] = &job{id: "j"}
	if got := a.backoffMax(); got != agentlink.BackoffMax {
		t.Errorf("holding a lease: backoff max %s, want %s", got, agentlink.BackoffMax)
	}
	a.cfg.BackoffMax = time.Second
	if got := a.backoffMax(); got != time.Second {
		t.Errorf("holding a lease with a shorter configured max: %s, want 1s", got)
	}
}
