package agentlink

import (
	"testing"
	"time"
)

// TestNumbersAgree: the two ends' keepalive settings fit together, and the
// grace a new leader gives is what PROTOCOL.md's table adds up to.
func TestNumbersAgree(t *testing.T) {
	c, e := ClientParameters(), EnforcementPolicy()
	if c.Time < 10*time.Second {
		t.Errorf("client keepalive time %s: grpc-go raises it to 10s, so Detection would be understated", c.Time)
	}
	if e.MinTime > c.Time {
		t.Errorf("the controller allows a ping every %s, the agent pings every %s: GOAWAY too_many_pings", e.MinTime, c.Time)
	}
	if !e.PermitWithoutStream || !c.PermitWithoutStream {
		t.Error("pings must be sent and allowed with no RPC in flight, or the controller refuses the agent's")
	}
	if got := ReconnectAllowance(); got != 30*time.Second {
		t.Errorf("ReconnectAllowance %s; PROTOCOL.md's table says 30s", got)
	}
	if BackoffMax*4 > 20*time.Second {
		t.Errorf("backoff cap %s is not well under the default 20s lease", BackoffMax)
	}
}
