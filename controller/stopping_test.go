package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestCancelledJobKeepsInstanceBusy: a cancelled backup keeps its instance
// busy until its agent shows the attempt stopped, first by a heartbeat no
// longer listing it, then (second round) by its result, refused as stale;
// the instance's next job, submitted at once, is assigned only then.
// Before the fix the next job was assigned right after the cancel, while
// the agent was still stopping the first.
func TestCancelledJobKeepsInstanceBusy(t *testing.T) {
	srv, c := startInProcess(t, nil)
	a, err := connectAgent(t, []string{srv.Addr()}, "db1")
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	ctx := context.Background()

	cancelAndResubmit := func(j *v1.Job, asg *v1.JobAssignment) *v1.Job {
		t.Helper()
		if _, err := c.Control.CancelJob(ctx, &v1.CancelJobRequest{Id: j.GetId(), Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		a.expect("the cancellation", 5*time.Second, func(m *v1.ControllerMessage) bool {
			return proto.Equal(m.GetCancelJob().GetLease(), asg.GetLease())
		})
		cj := getJob(t, c, j.GetId())
		if cj.GetState() != v1.JobState_JOB_STATE_CANCELLED || !proto.Equal(cj.GetStoppingLease(), asg.GetLease()) ||
			cj.GetStoppingAgent() != "db1" || !cj.GetStoppingUntil().AsTime().After(time.Now()) {
			t.Fatalf("cancelled job %v", cj)
		}
		next := submitBackup(t, c, "db1")
		// The agent still lists the attempt: no assignment for the next.
		if m, err := a.wait(10*testHeartbeat, func(m *v1.ControllerMessage) bool { return m.GetAssignJob() != nil }); err == nil {
			t.Fatalf("job %s assigned while the cancelled attempt still stops on the agent", m.GetAssignJob().GetJob().GetId())
		}
		// It says what it waits for.
		if nj := getJob(t, c, next.GetId()); nj.GetState() != v1.JobState_JOB_STATE_PENDING ||
			!strings.Contains(nj.GetProgress().GetPhase(), "waiting for job "+j.GetId()+" to stop on instance db1") {
			t.Fatalf("next job is %s, progress %v", nj.GetState(), nj.GetProgress())
		}
		return next
	}

	j1 := submitBackup(t, c, "db1")
	asg1 := a.assignment(5 * time.Second)
	a.progress(asg1, 10)
	j2 := cancelAndResubmit(j1, asg1)
	// The agent finished stopping: its heartbeats no longer list it.
	a.setRunning(j1.GetId(), nil)
	asg2 := a.assignment(5 * time.Second)
	if asg2.GetJob().GetId() != j2.GetId() {
		t.Fatalf("assigned %s, want %s", asg2.GetJob().GetId(), j2.GetId())
	}
	testenv.WaitFor(t, "the stopping attempt cleared", 5*time.Second, func() error {
		if l := getJob(t, c, j1.GetId()).GetStoppingLease(); l != nil {
			return fmt.Errorf("still stopping %v", l)
		}
		return nil
	})

	// Second round: the stopped attempt's result frees the instance, even
	// while the heartbeats still list it (they do until it is answered).
	a.progress(asg2, 10)
	j3 := cancelAndResubmit(j2, asg2)
	seq := a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: &v1.JobResultReport{
		JobId: j2.GetId(), Lease: asg2.GetLease(), Error: "cancelled by the controller: test"}}})
	if ans := a.answer(seq); ans.GetError().GetCode() != 9 {
		t.Fatalf("stale result answered %v", ans)
	}
	if asg3 := a.assignment(5 * time.Second); asg3.GetJob().GetId() != j3.GetId() {
		t.Fatalf("assigned %s, want %s", asg3.GetJob().GetId(), j3.GetId())
	}
}
