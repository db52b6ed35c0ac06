package controller_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/metrics"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestLeaseFencing: an agent stops heartbeating (paused) past its lease;
// the attempt fails with a reason and the job is retried under a new lease
// and backup id; when the paused agent wakes up, its old attempt is told to
// stop and its result is refused, and exactly one backup is recorded.
func TestLeaseFencing(t *testing.T) {
	reg := metrics.New()
	srv, c := startInProcess(t, func(cfg *controller.Config) { cfg.Metrics = reg })
	a, err := connectAgent(t, []string{srv.Addr()}, "db1")
	if err != nil {
		t.Fatal(err)
	}
	job := submitBackup(t, c, "db1")
	asg1 := a.assignment(5 * time.Second)
	if got, want := asg1.GetJob().GetBackup().GetBackupId(), job.GetId()+"-a1"; got != want {
		t.Fatalf("attempt 1 writes backup %q, want %q", got, want)
	}
	if l := asg1.GetLease(); l.GetTerm() == 0 || l.GetIndex() == 0 || l.GetJobId() != job.GetId() {
		t.Fatalf("lease %v", l)
	}
	a.progress(asg1, 100)
	testenv.WaitFor(t, "progress through GetJob", 5*time.Second, func() error {
		j := getJob(t, c, job.GetId())
		if j.GetState() != v1.JobState_JOB_STATE_RUNNING || j.GetProgress().GetBytesDone() != 100 {
			return fmt.Errorf("job %s progress %v", j.GetState(), j.GetProgress())
		}
		return nil
	})

	// The agent stops (SIGSTOP in production): no heartbeat.
	a.pause(true)
	if err := a.streamEnded(5 * time.Second); err == nil {
		t.Fatal("the controller kept the silent agent's session open")
	}
	j := waitJobState(t, c, job.GetId(), v1.JobState_JOB_STATE_PENDING, 5*time.Second)
	if pa := j.GetPreviousAttempts(); len(pa) != 1 || pa[0].GetError() != "lease expired: agent db1 stopped heartbeating" {
		t.Fatalf("previous attempts %v", pa)
	}
	// The leader counts the expiry (tidemark_lease_expiries_total), right
	// after the entry that a client may see applied first.
	testenv.WaitFor(t, "the lease expiry counted", 5*time.Second, func() error {
		if n := counterValue(t, reg, "tidemark_lease_expiries_total"); n != 1 {
			return fmt.Errorf("tidemark_lease_expiries_total = %v after one expiry, want 1", n)
		}
		return nil
	})

	// It wakes up, reconnects and says it still runs attempt 1.
	a.close()
	b, err := connectAgent(t, []string{srv.Addr()}, "db1", &v1.RunningJob{JobId: job.GetId(), Lease: asg1.GetLease()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	b.expect("cancellation of the old attempt", 5*time.Second, func(m *v1.ControllerMessage) bool {
		return proto.Equal(m.GetCancelJob().GetLease(), asg1.GetLease())
	})
	b.setRunning(job.GetId(), nil)
	asg2 := b.assignment(5 * time.Second)
	if asg2.GetJob().GetAttempt() != 2 || asg2.GetJob().GetBackup().GetBackupId() != job.GetId()+"-a2" ||
		asg2.GetLease().GetIndex() <= asg1.GetLease().GetIndex() {
		t.Fatalf("attempt 2 = %v", asg2)
	}
	// The woken attempt reports success: refused, recorded nowhere.
	ans := b.succeed(asg1, asg1.GetLease())
	if e := ans.GetError(); e == nil || codes.Code(e.GetCode()) != codes.FailedPrecondition || !strings.Contains(e.GetMessage(), "stale lease") {
		t.Fatalf("stale result answered %v", ans)
	}
	if ans := b.succeed(asg2, asg2.GetLease()); ans.GetAck() == nil {
		t.Fatalf("result of attempt 2 answered %v", ans)
	}
	if ans := b.succeed(asg2, asg2.GetLease()); ans.GetAck() == nil {
		t.Fatalf("repeated result answered %v, want an Ack", ans)
	}
	j = waitJobState(t, c, job.GetId(), v1.JobState_JOB_STATE_SUCCEEDED, 5*time.Second)
	bs, err := c.Control.ListBackups(context.Background(), &v1.ListBackupsRequest{Instance: "db1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(bs.GetBackups()) != 1 {
		t.Fatalf("%d backups, want exactly 1: %v", len(bs.GetBackups()), bs.GetBackups())
	}
	bk := bs.GetBackups()[0]
	if bk.GetId() != job.GetId()+"-a2" || bk.GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE || !proto.Equal(bk.GetFence(), asg2.GetLease()) ||
		bk.GetSizeBytes() != 1000 || bk.GetStoredBytes() != 400 || bk.GetConsistency().GetBinlogPosition() != 42 || bk.GetRepositoryUri() != "file:///backups" {
		t.Fatalf("backup %v", bk)
	}
	if j.GetResult().GetBackupId() != bk.GetId() {
		t.Fatalf("job result %v", j.GetResult())
	}
}

// TestJobs covers the job API against one node and a fake agent.
func TestJobs(t *testing.T) {
	srv, c := startInProcess(t, nil)
	ctx := context.Background()
	a, err := connectAgent(t, []string{srv.Addr()}, "db1")
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()

	t.Run("UnknownInstance", func(t *testing.T) {
		_, err := c.Control.SubmitBackup(ctx, &v1.SubmitBackupRequest{Instance: "nope"})
		wantCode(t, err, codes.NotFound, `instance "nope" not found`)
	})
	t.Run("NameTakenByLiveAgent", func(t *testing.T) {
		_, err := connectAgent(t, []string{srv.Addr()}, "db1")
		if err == nil || !strings.Contains(err.Error(), `agent name "db1" is already connected from 127.0.0.1:`) {
			t.Fatalf("second agent db1: %v", err)
		}
	})
	t.Run("InstanceAndAgentListed", func(t *testing.T) {
		ins, err := c.Control.ListInstances(ctx, &v1.ListInstancesRequest{})
		if err != nil || len(ins.GetInstances()) != 1 || ins.GetInstances()[0].GetName() != "db1" || ins.GetInstances()[0].GetAgent() != "db1" {
			t.Fatalf("instances %v, %v", ins, err)
		}
		ags, err := c.Control.ListAgents(ctx, &v1.ListAgentsRequest{Consistent: true})
		if err != nil || len(ags.GetAgents()) != 1 || !ags.GetAgents()[0].GetConnected() || ags.GetAgents()[0].GetLabels()["dc"] != "test" {
			t.Fatalf("agents %v, %v", ags, err)
		}
	})
	t.Run("WatchAndOneBackupAtATime", func(t *testing.T) {
		job := submitBackup(t, c, "db1")
		_, err := c.Control.SubmitBackup(ctx, &v1.SubmitBackupRequest{Instance: "db1"})
		wantCode(t, err, codes.FailedPrecondition, fmt.Sprintf(`instance "db1" already has backup job %s (`, job.GetId()))

		w, err := c.Control.WatchJob(ctx, &v1.WatchJobRequest{Id: job.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		var (
			seen []*v1.Job
			wg   sync.WaitGroup
			werr error
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				m, err := w.Recv()
				if errors.Is(err, io.EOF) {
					return
				}
				if err != nil {
					werr = err
					return
				}
				seen = append(seen, m.GetJob())
			}
		}()
		asg := a.assignment(5 * time.Second)
		a.progress(asg, 500)
		testenv.WaitFor(t, "progress", 5*time.Second, func() error {
			if getJob(t, c, job.GetId()).GetProgress().GetBytesDone() != 500 {
				return fmt.Errorf("no progress yet")
			}
			return nil
		})
		if ans := a.succeed(asg, asg.GetLease()); ans.GetAck() == nil {
			t.Fatalf("result answered %v", ans)
		}
		a.setRunning(job.GetId(), nil)
		wg.Wait()
		if werr != nil {
			t.Fatal(werr)
		}
		var states []string
		sawProgress := false
		for _, j := range seen {
			states = append(states, catalog.StateName(j.GetState()))
			sawProgress = sawProgress || j.GetProgress().GetBytesDone() == 500
		}
		if last := seen[len(seen)-1]; last.GetState() != v1.JobState_JOB_STATE_SUCCEEDED || !sawProgress {
			t.Fatalf("watch saw %v (progress seen: %t)", states, sawProgress)
		}
	})
	t.Run("Cancel", func(t *testing.T) {
		job := submitBackup(t, c, "db1")
		asg := a.assignment(5 * time.Second)
		r, err := c.Control.CancelJob(ctx, &v1.CancelJobRequest{Id: job.GetId(), Reason: "cancelled by test"})
		if err != nil || r.GetJob().GetState() != v1.JobState_JOB_STATE_CANCELLED {
			t.Fatalf("cancel: %v, %v", r, err)
		}
		a.expect("the cancellation", 5*time.Second, func(m *v1.ControllerMessage) bool {
			return m.GetCancelJob().GetJobId() == job.GetId() && m.GetCancelJob().GetReason() == "cancelled by test"
		})
		a.setRunning(job.GetId(), nil)
		if ans := a.succeed(asg, asg.GetLease()); ans.GetError() == nil {
			t.Fatalf("a cancelled attempt's result was accepted: %v", ans)
		}
		_, err = c.Control.CancelJob(ctx, &v1.CancelJobRequest{Id: job.GetId()})
		wantCode(t, err, codes.FailedPrecondition, "already cancelled")
	})
	t.Run("AgentFailureIsFinal", func(t *testing.T) {
		job := submitBackup(t, c, "db1")
		asg := a.assignment(5 * time.Second)
		seq := a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: &v1.JobResultReport{
			JobId: job.GetId(), Lease: asg.GetLease(), Error: "disk full"}}})
		if ans := a.answer(seq); ans.GetAck() == nil {
			t.Fatalf("failure answered %v", ans)
		}
		a.setRunning(job.GetId(), nil)
		j := waitJobState(t, c, job.GetId(), v1.JobState_JOB_STATE_FAILED, 5*time.Second)
		if !strings.Contains(j.GetReason(), "attempt 1 failed on agent db1: disk full") {
			t.Fatalf("reason %q", j.GetReason())
		}
	})
	t.Run("OutOfAttempts", func(t *testing.T) {
		job := submitBackup(t, c, "db1")
		for i := 1; i <= 2; i++ {
			asg := a.assignment(5 * time.Second)
			if asg.GetJob().GetAttempt() != uint32(i) {
				t.Fatalf("attempt %d: %v", i, asg.GetJob())
			}
			// The agent stays connected but never lists the job: only its
			// lease expires.
			a.setRunning(job.GetId(), nil)
		}
		j := waitJobState(t, c, job.GetId(), v1.JobState_JOB_STATE_FAILED, 5*time.Second)
		if j.GetReason() != "lease expired: agent db1 stopped heartbeating (attempt 2 of 2)" || len(j.GetPreviousAttempts()) != 2 {
			t.Fatalf("job %v", j)
		}
	})
}

// TestFailoverInProcess runs three nodes in the test process, so the race
// detector watches leadership moving: the leader shuts down, another takes
// over, rebuilds the leases of running jobs, and the reconnected agent
// finishes its attempt under the lease it had.
func TestFailoverInProcess(t *testing.T) {
	servers, c := startInProcessCluster(t, nil)
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
	b, err := connectAgent(t, addrs[:2], "db1", &v1.RunningJob{JobId: job.GetId(), Lease: asg.GetLease()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	b.setRunning(job.GetId(), asg.GetLease())
	// Longer than a lease: heartbeats on the new leader keep it.
	time.Sleep(2 * testLease)
	if ans := b.succeed(asg, asg.GetLease()); ans.GetAck() == nil {
		t.Fatalf("result after the failover answered %v", ans)
	}
	cn, err := client.DialAny(context.Background(), addrs[:2], adminOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cn.Close() }()
	j := waitJobState(t, cn, job.GetId(), v1.JobState_JOB_STATE_SUCCEEDED, 5*time.Second)
	if j.GetAttempt() != 1 {
		t.Fatalf("job needed %d attempts across the failover", j.GetAttempt())
	}
}

// counterValue is the sum of the series of the counter name in reg, or -1
// when reg has no such metric.
func counterValue(t *testing.T, reg *metrics.Registry, name string) float64 {
	t.Helper()
	fams, err := reg.Prometheus().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			var sum float64
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return -1
}
