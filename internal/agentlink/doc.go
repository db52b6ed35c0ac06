// Package agentlink is the timing contract of the agent's Connect stream
// that both ends build on: gRPC keepalive, the cap on the agent's reconnect
// backoff while it holds leases, and from them the grace a new leader adds
// to the leases it inherits.
package agentlink
