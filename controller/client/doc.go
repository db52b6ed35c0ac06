// Package client dials a Tidemark controller cluster for the CLI, agents
// and joining nodes: it tries every address it is given, tells a controller
// from anything else at an address, and finds the leader.
package client
