package client

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

func TestReadOnly(t *testing.T) {
	for m, want := range map[string]bool{
		"/tidemark.v1.ControlService/ListJobs":           true,
		"/tidemark.v1.ControlService/GetBackup":          true,
		"/tidemark.v1.ControlService/ExplainEngines":     true,
		"/tidemark.v1.ControlService/PlanRetention":      true,
		"/tidemark.v1.ControlService/ClusterStatus":      true,
		"/tidemark.v1.ClusterService/NodeStatus":         true,
		"/tidemark.v1.ControlService/SubmitBackup":       false,
		"/tidemark.v1.ControlService/ApplyRetention":     false,
		"/tidemark.v1.ControlService/ApplyPolicies":      false,
		"/tidemark.v1.ControlService/RevokeAgent":        false,
		"/tidemark.v1.ControlService/CreateJoinToken":    false,
		"/tidemark.v1.ClusterService/TakeSnapshot":       false,
		"/tidemark.v1.ControlService/TransferLeadership": false,
	} {
		if got := readOnly(m); got != want {
			t.Errorf("readOnly(%s) = %v, want %v", m, got, want)
		}
	}
}

func TestPoolOrder(t *testing.T) {
	p := newPool([]string{"a", "b", "c"}, Options{})
	p.add("d", "b", "")
	if got := strings.Join(p.order("b"), ","); got != "b,a,c,d" {
		t.Fatalf("order from b: %s", got)
	}
	// After c answered, calls start at c, then their own address.
	p.answered("c")
	if got := strings.Join(p.order("a"), ","); got != "c,a,b,d" {
		t.Fatalf("order from a after c answered: %s", got)
	}
}

func TestCallError(t *testing.T) {
	e := &CallError{
		Method:   "/tidemark.v1.ControlService/SubmitBackup",
		Attempts: map[string]int{"h1:1": 3, "h2:2": 2},
		Elapsed:  2 * time.Second,
		last:     status.Error(codes.Unavailable, "node c2 knows no leader; retry"),
	}
	e.Tried = []*AddrError{
		{Addr: "h1:1", Err: status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp h1:1: connect: connection refused"`)},
		{Addr: "h2:2", Err: e.last},
	}
	want := "SubmitBackup failed at every controller tried within 2s: h1:1 (3 attempts): unreachable: dial tcp h1:1: connect: connection refused; h2:2 (2 attempts): node c2 knows no leader; retry"
	if e.Error() != want {
		t.Fatalf("CallError:\n got %s\nwant %s", e.Error(), want)
	}
	if st := status.Convert(e); st.Code() != codes.Unavailable || st.Message() != want {
		t.Fatalf("status of a CallError: %v", st)
	}
	var ae *AddrError
	if !errors.As(e, &ae) || ae.Addr != "h1:1" {
		t.Fatalf("errors.As AddrError: %v", ae)
	}
}

// TestUnkeyedWriteRetry: a write without an idempotency key (here an
// ApplyPolicies request) is sent again after a failure that proves it was
// not applied (no leader; nothing answered), and never after one that may
// hide a commit (a leader stepping down, an attempt's deadline).
func TestUnkeyedWriteRetry(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unavailable, "node c2 knows no leader (an election is under way or the cluster has no quorum); retry"), true},
		{status.Error(codes.Unavailable, `node c3 received a forwarded request but is not the leader (it knows "c1" as leader); retry`), true},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`), true},
		{&AddrError{Addr: "h:1", Err: ErrUnreachable}, true},
		{status.Error(codes.Unavailable, "leadership lost while committing log"), false},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), false},
		{status.Error(codes.InvalidArgument, "bad policy"), false},
	} {
		if got := notApplied(ctx, tc.err); got != tc.want {
			t.Errorf("notApplied(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}

	// Through the interceptor, one address: it first knows no leader,
	// then applies; a lost leadership instead is final.
	p := newPool([]string{"a"}, Options{})
	calls := 0
	invoke := func(answers ...error) error {
		calls = 0
		ic := p.interceptor("a")
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return ic(cctx, "/tidemark.v1.ControlService/ApplyPolicies", &v1.ApplyPoliciesRequest{Yaml: "x"}, &v1.ApplyPoliciesResponse{}, nil,
			func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
				calls++
				if calls <= len(answers) {
					return answers[calls-1]
				}
				return nil
			})
	}
	if err := invoke(status.Error(codes.Unavailable, "node a knows no leader; retry")); err != nil || calls != 2 {
		t.Fatalf("after no leader: err %v after %d calls, want success on the second", err, calls)
	}
	if err := invoke(status.Error(codes.Unavailable, "leadership lost while committing log")); err == nil || calls != 1 {
		t.Fatalf("after a lost leadership: err %v after %d calls, want that error after one", err, calls)
	}
}
