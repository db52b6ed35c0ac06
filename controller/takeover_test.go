package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestTakeoverGrace: a new leader keeps the leases it inherits for
// lease_duration plus the takeover grace, not a bare lease: an agent that
// needs longer than a lease to find the new leader (here it stays away for
// two and a half leases, as one noticing a silent death by keepalive does)
// keeps its attempt, which finishes at attempt 1. Later windows are one
// lease again: the same agent gone for good loses its next job's lease
// on time.
func TestTakeoverGrace(t *testing.T) {
	grace := func(cfg *controller.Config) { cfg.TakeoverGrace = 8 * testLease }
	servers, c := startInProcessCluster(t, grace)
	first := servers[0]
	addrs := []string{servers[1].Addr(), servers[2].Addr(), first.Addr()}
	a, err := connectAgent(t, addrs, "db1")
	if err != nil {
		t.Fatal(err)
	}
	job := submitBackup(t, c, "db1")
	asg := a.assignment(5 * time.Second)
	a.progress(asg, 1)
	waitJobState(t, c, job.GetId(), v1.JobState_JOB_STATE_RUNNING, 5*time.Second)

	first.Shutdown()
	a.close()
	cn, err := client.DialAny(context.Background(), addrs[:2], adminOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cn.Close() }()
	away := 5 * testLease / 2
	time.Sleep(away)
	if j := getJob(t, cn, job.GetId()); j.GetAttempt() != 1 || len(j.GetPreviousAttempts()) != 0 {
		t.Fatalf("after the agent was away %s (lease %s, grace %s): attempt %d, earlier attempts %v",
			away, testLease, 8*testLease, j.GetAttempt(), j.GetPreviousAttempts())
	}
	b, err := connectAgent(t, addrs[:2], "db1", &v1.RunningJob{JobId: job.GetId(), Lease: asg.GetLease()})
	if err != nil {
		t.Fatal(err)
	}
	b.setRunning(job.GetId(), asg.GetLease())
	if ans := b.succeed(asg, asg.GetLease()); ans.GetAck() == nil {
		t.Fatalf("result after the takeover answered %v", ans)
	}
	b.setRunning(job.GetId(), nil)
	j := waitJobState(t, cn, job.GetId(), v1.JobState_JOB_STATE_SUCCEEDED, 5*time.Second)
	if j.GetAttempt() != 1 {
		t.Fatalf("job needed %d attempts across the takeover", j.GetAttempt())
	}

	// A job assigned by the new leader has plain leases: an agent that
	// stops heartbeating loses it after about one lease, well before a
	// lease plus the grace.
	job2 := submitBackup(t, cn, "db1")
	b.assignment(5 * time.Second)
	b.pause(true)
	defer b.close()
	start := time.Now()
	testenv.WaitFor(t, "the second job's lease to expire", 5*time.Second, func() error {
		j = getJob(t, cn, job2.GetId())
		if len(j.GetPreviousAttempts()) == 0 {
			return fmt.Errorf("job is %s at attempt %d", j.GetState(), j.GetAttempt())
		}
		return nil
	})
	if d := time.Since(start); d > 4*testLease || !strings.Contains(j.GetPreviousAttempts()[0].GetError(), "lease expired") {
		t.Errorf("the new leader's own lease went after %s (lease %s): %v", d, testLease, j.GetPreviousAttempts())
	}
}
