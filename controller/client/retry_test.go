package client

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
