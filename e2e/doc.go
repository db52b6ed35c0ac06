// Package e2e runs the tidemark binary as real processes (controllers,
// agents, `tidemark dev`, the CLI) against real servers, and kills, pauses
// and restarts them.
package e2e
