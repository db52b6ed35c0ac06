// Package client dials a Tidemark controller cluster for the CLI, agents
// and joining nodes: it tries every address it is given, tells a controller
// from anything else at an address (or a failed TLS handshake), finds the
// leader, and exchanges a join token for a certificate. Callers choose the
// transport (mutual TLS or an explicit --insecure); there is no default.
//
// A Conn's unary calls ride out leader changes (retry.go): reads, and writes
// whose request carries an idempotency_key (the client makes one per call
// when the caller left it empty), are sent again to every known address
// with backoff and per-attempt timeouts until the call's deadline. The
// controller records the key with the write in one Raft entry, so a retry
// after a lost reply returns the first result instead of acting twice.
package client
