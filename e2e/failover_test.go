package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestAgentAcrossLeaderChange: three controllers and a real agent backing
// up a million rows; the leader is frozen (SIGSTOP: a power loss or a hung
// VM, its connections stay open and its kernel keeps acknowledging) or
// killed (-9: the connections are reset) while the backup runs. The agent
// notices (a keepalive ping unanswered, or the reset), registers with the
// new leader within the first lease window it gives inherited jobs, listing
// its job under the same lease, and the job ends SUCCEEDED at attempt 1:
// one run, one backup record, one manifest in the repository. A result
// the agent sent to the frozen leader (the backup may end meanwhile) is sent
// again to the new one and recorded once.
func TestAgentAcrossLeaderChange(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the backup must outlast the leader's death, which takes a million rows")
	}
	db := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "failover"})
	loadBig(t, db, 1000000)

	for _, tc := range []struct {
		name   string
		freeze bool
	}{{"SIGSTOP leader", true}, {"kill -9 leader", false}} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCluster(t, db, clusterOpts{})
			old := c.leader()
			id := c.submit()
			c.waitState(id, 20*time.Second, v1.JobState_JOB_STATE_RUNNING)
			live := slices.DeleteFunc(slices.Clone(c.nodes), func(n *ctlNode) bool { return n == old })
			if tc.freeze {
				old.Stop()
				t.Cleanup(func() { old.Signal(syscall.SIGCONT) })
			} else {
				old.Kill()
			}
			lost := time.Now()

			next := leaderAmong(t, live, 15*time.Second)
			elected := time.Since(lost)
			// The agent's session moves to the new leader.
			testenv.WaitFor(t, "the agent to register with "+next.id, 60*time.Second, func() error {
				ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
				defer cancel()
				r, err := next.conn.Control.ListAgents(ctx, &v1.ListAgentsRequest{})
				if err != nil {
					return err
				}
				for _, a := range r.GetAgents() {
					if a.GetName() == "db" && a.GetConnected() && a.GetControllerNode() == next.id {
						return nil
					}
				}
				return fmt.Errorf("agents: %v", r.GetAgents())
			})
			back := time.Since(lost)
			t.Logf("%s: %s leads after %s; the agent registered with it %s after the old leader's loss (lease %s)",
				tc.name, next.id, elected.Round(time.Millisecond), back.Round(time.Millisecond), lease)

			var j *v1.Job
			testenv.WaitFor(t, "job "+id+" to end", 60*time.Second, func() error {
				var err error
				if j, err = jobAmong(t, live, id); err != nil {
					return err
				}
				if !slices.Contains([]v1.JobState{v1.JobState_JOB_STATE_SUCCEEDED, v1.JobState_JOB_STATE_FAILED, v1.JobState_JOB_STATE_CANCELLED}, j.GetState()) {
					return fmt.Errorf("job is %s at attempt %d", j.GetState(), j.GetAttempt())
				}
				return nil
			})
			if j.GetState() != v1.JobState_JOB_STATE_SUCCEEDED || j.GetAttempt() != 1 || len(j.GetPreviousAttempts()) != 0 {
				t.Fatalf("job %s ended %s at attempt %d (%s; earlier attempts %v), want SUCCEEDED at attempt 1\nagent log:\n%s",
					id, j.GetState(), j.GetAttempt(), j.GetReason(), j.GetPreviousAttempts(), c.agent.LogTail())
			}
			// A backup that ended while the agent was cut off sent its
			// result to the dead leader first, then to the new one.
			t.Logf("%s: the agent sent the job's result %d times", tc.name, strings.Count(c.agent.Log(), "job result sent"))
			if n := strings.Count(c.agent.Log(), "job starting"); n != 1 {
				t.Errorf("the agent started a job %d times, want once", n)
			}
			if !strings.Contains(c.agent.Log(), "running_jobs=1") {
				t.Errorf("the agent's log shows no Register listing its running job")
			}

			// The frozen leader comes back as a follower and agrees.
			if tc.freeze {
				old.Signal(syscall.SIGCONT)
			}
			done := c.completeBackups(id)
			if len(done) != 1 || done[0] != id+"-a1" {
				t.Errorf("complete backups of job %s: %v, want [%s-a1]", id, done, id)
			}
			if got := c.repoManifests(); !slices.Equal(got, done) {
				t.Errorf("repository holds %v, the catalog %v", got, done)
			}
			cat := c.sameCatalog()
			if strings.Count(cat, "BACKUP_STATUS_COMPLETE") != 1 {
				t.Errorf("catalog:\n%s", cat)
			}
		})
	}
}

// leaderAmong waits until one of nodes says it leads; every call is
// bounded, so a frozen node elsewhere cannot hang it.
func leaderAmong(t *testing.T, nodes []*ctlNode, d time.Duration) *ctlNode {
	t.Helper()
	var l *ctlNode
	testenv.WaitFor(t, "a leader among the live nodes", d, func() error {
		for _, n := range nodes {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			st, err := n.conn.Cluster.NodeStatus(ctx, &v1.NodeStatusRequest{})
			cancel()
			if err == nil && st.GetState() == v1.MemberState_MEMBER_STATE_LEADER {
				l = n
				return nil
			}
		}
		return fmt.Errorf("none of the live nodes leads")
	})
	return l
}

// jobAmong reads a job, consistently, through the first of nodes that
// answers within a few seconds.
func jobAmong(t *testing.T, nodes []*ctlNode, id string) (*v1.Job, error) {
	var errs []string
	for _, n := range nodes {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		r, err := n.conn.Control.GetJob(ctx, &v1.GetJobRequest{Id: id, Consistent: true})
		cancel()
		if err == nil {
			return r.GetJob(), nil
		}
		errs = append(errs, fmt.Sprintf("%s: %v", n.id, err))
	}
	return nil, fmt.Errorf("no node answers: %s", strings.Join(errs, "; "))
}
