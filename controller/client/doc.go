// Package client dials a Tidemark controller cluster for the CLI, agents
// and joining nodes: it tries every address it is given, tells a controller
// from anything else at an address (or a failed TLS handshake), finds the
// leader, and exchanges a join token for a certificate. Callers choose the
// transport (mutual TLS or an explicit --insecure); there is no default.
package client
