package controller_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestIdempotencyKeyInProcess: a keyed submit or cancel sent again returns
// the first result and acts once; the same key with another request is
// refused with a message that says why; a key too long is refused. (The
// request's history reaches the job's backup params.)
func TestIdempotencyKeyInProcess(t *testing.T) {
	srv, c := startInProcess(t, nil)
	a, err := connectAgent(t, []string{srv.Addr()}, "db1")
	if err != nil {
		t.Fatal(err)
	}
	a.close() // jobs stay pending
	ctx := context.Background()
	req := &v1.SubmitBackupRequest{Instance: "db1", Engine: "logical", IdempotencyKey: "key-1", History: true}
	r1, err := c.Control.SubmitBackup(ctx, req)
	if err != nil || r1.GetReplayed() || !r1.GetJob().GetBackup().GetHistory() {
		t.Fatalf("first submit: %v, %v", r1, err)
	}
	r2, err := c.Control.SubmitBackup(ctx, req)
	if err != nil || !r2.GetReplayed() || r2.GetJob().GetId() != r1.GetJob().GetId() {
		t.Fatalf("the same submit again: %v, %v; want job %s replayed", r2, err, r1.GetJob().GetId())
	}
	jobs, err := c.Control.ListJobs(ctx, &v1.ListJobsRequest{Instance: "db1", Consistent: true})
	if err != nil || len(jobs.GetJobs()) != 1 {
		t.Fatalf("jobs of db1 after a repeated submit: %v, %v", jobs, err)
	}

	// The same key with other parameters (another engine) is refused.
	_, err = c.Control.SubmitBackup(ctx, &v1.SubmitBackupRequest{Instance: "db1", Engine: "physical", IdempotencyKey: "key-1"})
	wantCode(t, err, codes.InvalidArgument, `idempotency key "key-1" was first used at`)
	wantCode(t, err, codes.InvalidArgument, "for /tidemark.v1.ControlService/SubmitBackup with other parameters or by another caller: a key names one request; send a new key for a new request")
	// Or by another caller: keys are not shared.
	otto, err := client.DialAny(ctx, []string{srv.Addr()}, client.Options{TLS: testCA(t).Source(t, testenv.User("otto", tlsx.RoleOperator)).ClientConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = otto.Close() }()
	_, err = otto.Control.SubmitBackup(ctx, req)
	wantCode(t, err, codes.InvalidArgument, "with other parameters or by another caller")
	// Or with another method.
	_, err = c.Control.CancelJob(ctx, &v1.CancelJobRequest{Id: r1.GetJob().GetId(), IdempotencyKey: "key-1"})
	wantCode(t, err, codes.InvalidArgument, "for /tidemark.v1.ControlService/SubmitBackup with other parameters")

	// A cancel sent again (its reply lost) returns the cancelled job, not
	// "already cancelled".
	cancelReq := &v1.CancelJobRequest{Id: r1.GetJob().GetId(), IdempotencyKey: "key-2"}
	c1, err := c.Control.CancelJob(ctx, cancelReq)
	if err != nil || c1.GetJob().GetState() != v1.JobState_JOB_STATE_CANCELLED {
		t.Fatalf("cancel: %v, %v", c1, err)
	}
	c2, err := c.Control.CancelJob(ctx, cancelReq)
	if err != nil || !c2.GetReplayed() || c2.GetJob().GetId() != r1.GetJob().GetId() {
		t.Fatalf("the same cancel again: %v, %v", c2, err)
	}
	// A new key is a new request: a second cancel is refused as always.
	_, err = c.Control.CancelJob(ctx, &v1.CancelJobRequest{Id: r1.GetJob().GetId(), IdempotencyKey: "key-3"})
	wantCode(t, err, codes.FailedPrecondition, "already cancelled")

	_, err = c.Control.SubmitBackup(ctx, &v1.SubmitBackupRequest{Instance: "db1", IdempotencyKey: strings.Repeat("k", 200)})
	wantCode(t, err, codes.InvalidArgument, "idempotency_key is 200 bytes long; at most 128")

	// The client fills an empty key itself, a new one per call: two
	// submits of the same request object are two writes.
	auto := &v1.SubmitBackupRequest{Instance: "db1", Engine: "logical"}
	j1, err := c.Control.SubmitBackup(ctx, auto)
	if err != nil || j1.GetReplayed() {
		t.Fatalf("submit with a key from the client: %v, %v", j1, err)
	}
	if auto.GetIdempotencyKey() != "" {
		t.Fatal("the client changed the caller's request")
	}
	_, err = c.Control.SubmitBackup(ctx, auto)
	wantCode(t, err, codes.FailedPrecondition, "already has backup job "+j1.GetJob().GetId())
}
