package controller_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// finishedJob submits a backup of instance and cancels it: one finished
// job record.
func finishedJob(t *testing.T, c *client.Conn, instance string) string {
	t.Helper()
	j := submitBackup(t, c, instance)
	if _, err := c.Control.CancelJob(context.Background(), &v1.CancelJobRequest{Id: j.GetId(), Reason: "test"}); err != nil {
		t.Fatalf("CancelJob(%s): %v", j.GetId(), err)
	}
	return j.GetId()
}

func listJobIDs(t *testing.T, c *client.Conn, size uint32) []string {
	t.Helper()
	var out []string
	tok := ""
	for {
		r, err := c.Control.ListJobs(context.Background(), &v1.ListJobsRequest{PageSize: size, PageToken: tok})
		if err != nil {
			t.Fatalf("ListJobs: %v", err)
		}
		for _, j := range r.GetJobs() {
			out = append(out, j.GetId())
		}
		if tok = r.GetNextPageToken(); tok == "" {
			return out
		}
	}
}

// TestListJobsKeysetPages: ListJobs pages of 2 through a real controller
// while new jobs are submitted between every two pages list exactly the
// jobs there were at the first page, newest first, none twice, none
// skipped; a token that is not one is refused by name.
func TestListJobsKeysetPages(t *testing.T) {
	srv, c := startInProcess(t, nil)
	if _, err := connectAgent(t, []string{srv.Addr()}, "db1"); err != nil {
		t.Fatal(err)
	}
	for range 7 {
		finishedJob(t, c, "db1")
	}
	want := listJobIDs(t, c, 0)
	if len(want) != 7 {
		t.Fatalf("%d jobs in one page, want 7", len(want))
	}
	var got []string
	tok := ""
	for {
		r, err := c.Control.ListJobs(context.Background(), &v1.ListJobsRequest{PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range r.GetJobs() {
			got = append(got, j.GetId())
		}
		if tok = r.GetNextPageToken(); tok == "" {
			break
		}
		finishedJob(t, c, "db1") // newer than everything listed so far
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pages with inserts between them listed %v, want %v", got, want)
	}
	_, err := c.Control.ListJobs(context.Background(), &v1.ListJobsRequest{PageToken: "12"})
	wantCode(t, err, 3, "bad page_token")
}

// TestHistoryPruned: the leader's prune loop keeps the newest
// --job-history-max finished jobs; an active job is never removed.
func TestHistoryPruned(t *testing.T) {
	srv, c := startInProcess(t, func(cfg *controller.Config) {
		cfg.JobHistoryMax = 3
		cfg.PruneInterval = 50 * time.Millisecond
	})
	// The agent registers db1 and leaves: the jobs are cancelled while
	// pending, never assigned (an assigned-then-cancelled backup's dead
	// attempt is kept for the reconcile sweep, which this test is not
	// about), and the active one stays pending.
	a, err := connectAgent(t, []string{srv.Addr()}, "db1")
	if err != nil {
		t.Fatal(err)
	}
	a.close()
	testenv.WaitFor(t, "the agent's session gone", 10*time.Second, func() error {
		r, err := c.Control.ListAgents(context.Background(), &v1.ListAgentsRequest{})
		if err != nil {
			return err
		}
		for _, ag := range r.GetAgents() {
			if ag.GetConnected() {
				return fmt.Errorf("agent %s still connected", ag.GetName())
			}
		}
		return nil
	})
	var ids []string
	for range 6 {
		ids = append(ids, finishedJob(t, c, "db1"))
	}
	active := submitBackup(t, c, "db1").GetId()
	want := []string{active, ids[5], ids[4], ids[3]}
	testenv.WaitFor(t, "history pruned to the newest 3 finished jobs", 10*time.Second, func() error {
		if got := listJobIDs(t, c, 0); !slices.Equal(got, want) {
			return fmt.Errorf("jobs %v, want %v", got, want)
		}
		return nil
	})
}
