package controller

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/fsm"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// fsmNode: leases_internal_test.go.

// TestInstanceBusyUntil: a cancelled attempt keeps its instance busy until
// stopping_until, one lease window plus fsm.StopGrace after the cancel;
// past it the leader records the attempt stopped (its agent has stopped it
// by itself) and the instance is free, without a word from the agent.
func TestInstanceBusyUntil(t *testing.T) {
	n := &fsmNode{f: fsm.New()}
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	h := newAgentHub(n, "n1", cfg)
	ctx := context.Background()
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(time.Now().Add(d)) }
	must := func(cmd *v1.Command) {
		t.Helper()
		if _, err := n.apply(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}
	must(&v1.Command{Cmd: &v1.Command_RegisterAgent{RegisterAgent: &v1.RegisterAgent{
		Agent: &v1.Agent{Id: "a1", Name: "a1"}, Instances: []*v1.Instance{{Name: "db1", Agent: "a1"}}, RegisteredAt: ts(0)}}})
	cancelled := func(id string, at time.Duration) {
		t.Helper()
		must(&v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: &v1.Job{Id: id, Kind: v1.JobKind_JOB_KIND_RESTORE,
			Instance: "db1", State: v1.JobState_JOB_STATE_PENDING, CreatedAt: ts(at), UpdatedAt: ts(at)}}}})
		// A one-second lease window.
		must(&v1.Command{Cmd: &v1.Command_AssignJob{AssignJob: &v1.AssignJob{JobId: id, Agent: "a1", AssignedAt: ts(at), LeaseDeadline: ts(at + time.Second)}}})
		must(&v1.Command{Cmd: &v1.Command_UpdateJobState{UpdateJobState: &v1.UpdateJobState{JobId: id, State: v1.JobState_JOB_STATE_CANCELLED, UpdatedAt: ts(at)}}})
	}
	in, err := n.catalog().Read().Instance("db1")
	if err != nil {
		t.Fatal(err)
	}

	// Cancelled a minute ago: its time (1 s + 30 s) is over.
	cancelled("old", -time.Minute)
	if j, _ := n.catalog().Read().Job("old"); j.GetStoppingLease() == nil {
		t.Fatalf("cancelled job not stopping: %v", j)
	}
	if b := h.instanceBusy(ctx, n.catalog().Read(), in); b != nil {
		t.Fatalf("instance busy with %s, whose stopping_until %s has passed", b.GetId(), b.GetStoppingUntil().AsTime())
	}
	if j, _ := n.catalog().Read().Job("old"); j.GetStoppingLease() != nil || j.GetStoppingAgent() != "" {
		t.Fatalf("passed stopping attempt not recorded as stopped: %v", j)
	}

	// Cancelled now: busy.
	cancelled("new", 0)
	if b := h.instanceBusy(ctx, n.catalog().Read(), in); b.GetId() != "new" {
		t.Fatalf("instance busy with %v, want job new", b)
	}
	if until := fsm.StopGrace + time.Second; time.Until(mustJob(t, n, "new").GetStoppingUntil().AsTime()) > until {
		t.Fatalf("stopping_until more than %s away", until)
	}
}

func mustJob(t *testing.T, n *fsmNode, id string) *v1.Job {
	t.Helper()
	j, err := n.catalog().Read().Job(id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}
