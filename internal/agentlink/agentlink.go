package agentlink

import (
	"time"

	"google.golang.org/grpc/keepalive"
)

// The numbers both ends agree on. controller/PROTOCOL.md ("Leadership
// change") does the arithmetic with them.
const (
	// KeepaliveTime is how long the agent reads nothing from its
	// controller before it pings it. A leader that dies silently (power
	// loss, a frozen VM, SIGSTOP) leaves the TCP connection open and the
	// agent's heartbeats in a socket buffer; only the unanswered ping
	// shows it is gone. grpc-go raises any client value under 10 s to
	// 10 s (with a logged warning), so 10 s is the floor.
	KeepaliveTime = 10 * time.Second
	// KeepaliveTimeout is how long the agent waits for the ping's answer
	// before it closes the connection and reconnects.
	KeepaliveTimeout = 5 * time.Second

	// ServerKeepaliveTime and ServerKeepaliveTimeout are the controller's
	// side: it pings an agent connection idle that long and drops it
	// without an answer, so a frozen agent host's stream ends too.
	ServerKeepaliveTime    = 10 * time.Second
	ServerKeepaliveTimeout = 5 * time.Second
	// MinPingInterval is the most often the controller lets a client ping
	// (more often is answered with GOAWAY "too_many_pings" and the
	// connection closed): half the agent's KeepaliveTime, so timer jitter
	// never trips it.
	MinPingInterval = KeepaliveTime / 2

	// BackoffMax caps the agent's wait between two rounds of reconnect
	// attempts while it holds a lease (a running job, or a result not yet
	// acknowledged), whatever its configured backoff_max.
	BackoffMax = 5 * time.Second
	// ConnectTimeout is the agent's default bound on one attempt to
	// register: an address that accepts TCP but never answers (the frozen
	// old leader) costs this much once per round.
	ConnectTimeout = 10 * time.Second
)

// Detection is the longest a silently dead controller goes unnoticed by
// an agent: a KeepaliveTime with nothing read, then the ping's timeout.
// (A killed process is noticed at once: its kernel resets the connection.)
func Detection() time.Duration { return KeepaliveTime + KeepaliveTimeout }

// ReconnectAllowance is the worst time from a leader's death to its
// agents' Register on the new leader, for agents that hold leases and run
// with the default connect timeout: Detection, one attempt on the dead
// address, and one capped backoff before the round that finds the new
// leader (a follower names it).
func ReconnectAllowance() time.Duration { return Detection() + ConnectTimeout + BackoffMax }

// ClientParameters is the agent's keepalive: ping after KeepaliveTime of
// silence even with no RPC in flight.
func ClientParameters() keepalive.ClientParameters {
	return keepalive.ClientParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout, PermitWithoutStream: true}
}

// ServerParameters is the controller's keepalive.
func ServerParameters() keepalive.ServerParameters {
	return keepalive.ServerParameters{Time: ServerKeepaliveTime, Timeout: ServerKeepaliveTimeout}
}

// EnforcementPolicy is what the controller accepts of its clients'
// pings: one every MinPingInterval, with or without a stream open.
func EnforcementPolicy() keepalive.EnforcementPolicy {
	return keepalive.EnforcementPolicy{MinTime: MinPingInterval, PermitWithoutStream: true}
}
