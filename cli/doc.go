// Package cli is the tidemark command tree: it parses flags, calls the
// packages that do the work and prints their results as tables or JSON.
package cli
