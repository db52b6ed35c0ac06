package controller_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestResultAcrossLeaderDeath runs three controller processes and the
// fake agent (the agent's own tests check that it keeps a result until it
// is Acked and re-sends it on its next session): a job's result goes to a
// leader that dies before it answers, and the agent, reconnected to the new
// leader under the same lease, sends it again. Either way the job ends
// SUCCEEDED once, at attempt 1, with one backup record:
//   - lost: the leader was frozen when the result arrived and is killed
//     with it unread, so nothing was committed; the new leader records it.
//   - committed: the leader committed the result, and its Ack never
//     reached the agent; the new leader answers the same result again with
//     Ack and changes nothing.
func TestResultAcrossLeaderDeath(t *testing.T) {
	c1, c2, c3 := newNode(t, "c1"), newNode(t, "c2"), newNode(t, "c3")
	c1.start(true, "--bootstrap")
	c2.start(true, "--join", c1.grpcAddr)
	c3.start(true, "--join", c1.grpcAddr+","+c2.grpcAddr)
	all := []*node{c1, c2, c3}
	leaderOf(t, all, 3, 15*time.Second)

	for _, committed := range []bool{false, true} {
		name := map[bool]string{false: "lost", true: "committed"}[committed]
		live := slices.DeleteFunc(slices.Clone(all), func(n *node) bool { return n.Exited() })
		leader := leaderOf(t, live, 3, 15*time.Second)
		agent := "db-" + name
		a, err := connectAgent(t, addrsOf(live...), agent)
		if err != nil {
			t.Fatal(err)
		}
		job := submitBackup(t, leader.conn, agent)
		asg := a.assignment(10 * time.Second)
		a.progress(asg, 10)
		waitJobState(t, leader.conn, job.GetId(), v1.JobState_JOB_STATE_RUNNING, 10*time.Second)
		others := slices.DeleteFunc(slices.Clone(live), func(n *node) bool { return n == leader })

		if committed {
			// The result is committed (a follower has applied it); the
			// agent takes no notice of the Ack, as if it had been lost with
			// the leader.
			a.succeed(asg, asg.GetLease())
			waitJobState(t, others[0].conn, job.GetId(), v1.JobState_JOB_STATE_SUCCEEDED, 10*time.Second)
		} else {
			// Frozen, the leader's kernel still takes the result into its
			// socket buffer; the process never reads it.
			leader.Stop()
			seq := a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: resultOf(asg)}})
			if m, err := a.wait(time.Second, func(m *v1.ControllerMessage) bool {
				return m.GetAck().GetSeq() == seq || m.GetError().GetSeq() == seq
			}); err == nil {
				t.Fatalf("a frozen leader answered the result: %v", m)
			}
		}
		leader.Kill()
		killed := time.Now()
		a.close()
		next := leaderOf(t, others, 3, 15*time.Second)
		t.Logf("%s: leader %s killed; %s leads after %s", name, leader.id, next.id, time.Since(killed).Round(time.Millisecond))

		// The agent registers again listing the job under its lease (it
		// still holds it: no Ack) and re-sends the result.
		b, err := connectAgent(t, addrsOf(others...), agent, &v1.RunningJob{JobId: job.GetId(), Lease: asg.GetLease()})
		if err != nil {
			t.Fatal(err)
		}
		// Its heartbeats list the lease until the Ack: not cancelled.
		b.setRunning(job.GetId(), asg.GetLease())
		if ans := b.succeed(asg, asg.GetLease()); ans.GetAck() == nil {
			t.Fatalf("%s: the result re-sent to the new leader was answered %v, want Ack", name, ans)
		}
		b.setRunning(job.GetId(), nil)
		if m, err := b.wait(time.Second, func(m *v1.ControllerMessage) bool { return m.GetCancelJob() != nil }); err == nil {
			t.Errorf("%s: the new leader cancelled the job the agent held: %v", name, m)
		}
		b.close()

		j := waitJobState(t, next.conn, job.GetId(), v1.JobState_JOB_STATE_SUCCEEDED, 10*time.Second)
		if j.GetAttempt() != 1 || len(j.GetPreviousAttempts()) != 0 || j.GetResult().GetBackupId() != asg.GetJob().GetBackup().GetBackupId() {
			t.Errorf("%s: job ended at attempt %d with history %v and backup %q, want attempt 1 with %s", name,
				j.GetAttempt(), j.GetPreviousAttempts(), j.GetResult().GetBackupId(), asg.GetJob().GetBackup().GetBackupId())
		}
		// One backup record, the same on both live nodes.
		for _, n := range others {
			testenv.WaitFor(t, n.id+" to hold the backup once", 10*time.Second, func() error {
				bs, err := n.conn.Control.ListBackups(context.Background(), &v1.ListBackupsRequest{Instance: agent})
				if err != nil {
					return err
				}
				if len(bs.GetBackups()) != 1 || bs.GetBackups()[0].GetId() != j.GetResult().GetBackupId() ||
					bs.GetBackups()[0].GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE {
					return fmt.Errorf("backups of %s: %v", agent, bs.GetBackups())
				}
				return nil
			})
		}
		if committed {
			break
		}
		// The cluster needs its third node back for the next case.
		leader.start(false)
		leaderOf(t, all, 3, 15*time.Second)
	}
}

// resultOf is the success report of a backup attempt under its own lease.
func resultOf(asg *v1.JobAssignment) *v1.JobResultReport {
	bid := asg.GetJob().GetBackup().GetBackupId()
	return &v1.JobResultReport{
		JobId: asg.GetJob().GetId(), Lease: asg.GetLease(), Ok: true, BackupId: bid, ManifestKey: "manifests/" + bid,
		RepositoryUri: "file:///backups",
		Manifest: &v1.Manifest{
			BackupId: bid, Instance: asg.GetJob().GetInstance(), Engine: "logical", Fence: asg.GetLease(),
			LogicalBytes: 1000, StoredBytes: 400, Consistency: &v1.ConsistencyPoint{BinlogFile: "bin.000001", BinlogPosition: 42},
		},
	}
}
