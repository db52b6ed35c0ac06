package controller

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/fsm"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// fsmNode is a hubNode without Raft: every command is applied at once to
// a real FSM, as a committed entry of term 1 would be.
type fsmNode struct {
	mu    sync.Mutex
	f     *fsm.FSM
	index uint64
}

func (n *fsmNode) apply(_ context.Context, cmd *v1.Command) (*fsm.Response, error) {
	b, err := fsm.Encode(cmd)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.index++
	resp := n.f.Apply(&raft.Log{Index: n.index, Term: 1, Data: b}).(*fsm.Response)
	return resp, resp.Err
}

func (n *fsmNode) catalog() *catalog.Store    { return n.f.Store() }
func (n *fsmNode) term() uint64               { return 1 }
func (n *fsmNode) memberAddr(_ string) string { return "" }

// TestExpireKeepsTheNextLeasesTimer reproduces issue 20 item 6: expire
// writes ExpireLease (the job goes back to pending), the assigner gives
// the job its second attempt and arms that lease's timer, and only then
// does expire drop "the job's" timer. The second lease's timer must
// survive, so that when its agent vanishes too the job still ends (FAILED
// after its last attempt) instead of staying ASSIGNED for good.
func TestExpireKeepsTheNextLeasesTimer(t *testing.T) {
	const ttl = 150 * time.Millisecond
	node := &fsmNode{f: fsm.New()}
	cfg := DefaultConfig()
	cfg.LeaseDuration, cfg.HeartbeatInterval = ttl, ttl/4
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	h := newAgentHub(node, "n1", cfg)
	ctx := t.Context()
	t0 := now()
	if _, err := node.apply(ctx, &v1.Command{Cmd: &v1.Command_RegisterAgent{RegisterAgent: &v1.RegisterAgent{
		Agent: &v1.Agent{Id: "a1", Name: "db1", RegisteredAt: t0, LastSeen: t0}, Instances: []*v1.Instance{{Name: "db1", Agent: "db1"}}, RegisteredAt: t0,
	}}}); err != nil {
		t.Fatal(err)
	}
	job := &v1.Job{Id: "j1", Kind: v1.JobKind_JOB_KIND_BACKUP, Instance: "db1", State: v1.JobState_JOB_STATE_PENDING,
		CreatedAt: t0, UpdatedAt: t0, MaxAttempts: 2, Params: &v1.Job_Backup{Backup: &v1.BackupParams{Engine: "logical"}}}
	if _, err := node.apply(ctx, &v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: job}}}); err != nil {
		t.Fatal(err)
	}
	// A live session for db1 that never heartbeats: its agent is gone as
	// far as leases go, but the assigner still sees it connected (its
	// watchdog has not fired yet) and hands it the retry.
	h.mu.Lock()
	h.leading = true
	ss := h.newSession(ctx, "db1", "test")
	ss.watchdog.Stop()
	h.sessions["db1"] = ss
	h.mu.Unlock()
	t.Cleanup(func() { h.revoke("") })

	var once sync.Once
	reassigned := make(chan *v1.LeaseToken, 1)
	h.afterExpire = func(jobID string) {
		once.Do(func() {
			// The interleaving: the assigner runs between ExpireLease
			// and the timer's removal (the session still looks live).
			// The expired attempt keeps its instance busy until its
			// agent is known to have stopped it: say so first, as a
			// heartbeat that no longer lists it would.
			ss.lastSeen.Store(time.Now().UnixNano())
			j, _ := node.catalog().Read().Job(jobID)
			if _, err := node.apply(ctx, &v1.Command{Cmd: &v1.Command_AttemptStopped{AttemptStopped: &v1.AttemptStopped{
				JobId: jobID, Lease: j.GetStoppingLease(), Reason: "heartbeat", StoppedAt: now(),
			}}}); err != nil {
				t.Errorf("AttemptStopped: %v", err)
			}
			h.assignPending(ctx)
			j, _ = node.catalog().Read().Job(jobID)
			reassigned <- j.GetLease()
		})
	}
	h.assignPending(ctx)
	first, err := node.catalog().Read().Job("j1")
	if err != nil || first.GetState() != v1.JobState_JOB_STATE_ASSIGNED || first.GetAttempt() != 1 {
		t.Fatalf("after the first assignment: %v, %v", first, err)
	}

	var second *v1.LeaseToken
	select {
	case second = <-reassigned:
	case <-time.After(testenv.Wait(5 * time.Second)):
		t.Fatal("the first lease never expired")
	}
	if second == nil || catalog.SameLease(second, first.GetLease()) {
		t.Fatalf("the job was not reassigned under a new lease in the hook: %v", second)
	}
	// Attempt 2's agent never heartbeats either: its lease must expire.
	var j *v1.Job
	testenv.WaitFor(t, "the second attempt's lease to expire", 5*time.Second, func() error {
		j, _ = node.catalog().Read().Job("j1")
		if j.GetState() != v1.JobState_JOB_STATE_FAILED {
			h.mu.Lock()
			armed := h.leases["j1"] != nil
			h.mu.Unlock()
			return catalog.Errorf(catalog.ErrConflict, "job is %s at attempt %d (a lease timer armed: %v)", catalog.StateName(j.GetState()), j.GetAttempt(), armed)
		}
		return nil
	})
	if j.GetAttempt() != 2 || len(j.GetPreviousAttempts()) != 2 {
		t.Errorf("job ended at attempt %d with %d attempts in its history, want 2 and 2: %v", j.GetAttempt(), len(j.GetPreviousAttempts()), j)
	}
}
