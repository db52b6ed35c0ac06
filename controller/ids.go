package controller

import (
	"crypto/rand"
	"encoding/hex"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// now is the leader's clock, stamped into commands: the FSM never reads
// one.
func now() *timestamppb.Timestamp { return timestamppb.Now() }

// newJobID returns a time-ordered job id such as 20261126T174300Z-1f2e3d4c,
// the same shape as backup ids: sorting ids sorts jobs by submission.
func newJobID(t time.Time) string {
	return t.UTC().Format("20060102T150405Z") + "-" + randomHex(4)
}

// newAgentID returns the stable id an agent gets at first registration.
func newAgentID() string { return "agent-" + randomHex(8) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

func timestampOf(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }
