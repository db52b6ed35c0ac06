package fsm

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestStoppingAttempt: a cancelled or expired backup attempt stays on the
// job as stopping, until one lease after the cancel (or StopGrace after the
// expiry) at most, and AttemptStopped under its lease clears it; under
// another lease it changes nothing.
func TestStoppingAttempt(t *testing.T) {
	n := newNode(t)
	n.ok(register("a1", "db1"))
	n.ok(submitBackup("j1", "db1", 0))
	n.ok(assign("j1", "a1", time.Second))
	asg := n.job("j1")
	ttl := asg.GetLeaseDeadline().AsTime().Sub(asg.GetAssignedAt().AsTime())
	if ttl <= 0 {
		t.Fatalf("assignment without a lease window: %v", asg)
	}

	cancel := update("j1", nil, v1.JobState_JOB_STATE_CANCELLED, 2*time.Second)
	n.ok(updateCmd(cancel))
	j := n.job("j1")
	if !proto.Equal(j.GetStoppingLease(), asg.GetLease()) || j.GetStoppingAgent() != "a1" ||
		!j.GetStoppingUntil().AsTime().Equal(t0.Add(2*time.Second+ttl+StopGrace)) {
		t.Fatalf("cancelled job: stopping %v on %q until %v", j.GetStoppingLease(), j.GetStoppingAgent(), j.GetStoppingUntil().AsTime())
	}
	other := proto.CloneOf(asg.GetLease())
	other.Index++
	if r := n.apply(&v1.Command{Cmd: &v1.Command_AttemptStopped{AttemptStopped: &v1.AttemptStopped{JobId: "j1", Lease: other}}}); r.Err != nil || !r.Unchanged {
		t.Fatalf("AttemptStopped under another lease: %+v", r)
	}
	n.ok(&v1.Command{Cmd: &v1.Command_AttemptStopped{AttemptStopped: &v1.AttemptStopped{JobId: "j1", Lease: asg.GetLease(), Reason: "heartbeat"}}})
	if j := n.job("j1"); j.GetStoppingLease() != nil || j.GetStoppingAgent() != "" || j.GetStoppingUntil() != nil {
		t.Fatalf("stopping not cleared: %v", j)
	}

	// An expired lease: the agent stopped by itself at expiry.
	n.ok(submitBackup("j2", "db1", 3*time.Second))
	n.ok(assign("j2", "a1", 4*time.Second))
	l2 := n.job("j2").GetLease()
	n.ok(expire("j2", l2, true, 30*time.Second))
	j = n.job("j2")
	if j.GetState() != v1.JobState_JOB_STATE_PENDING || !proto.Equal(j.GetStoppingLease(), l2) ||
		!j.GetStoppingUntil().AsTime().Equal(t0.Add(30*time.Second+StopGrace)) {
		t.Fatalf("expired job %v", j)
	}
}
