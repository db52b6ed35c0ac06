// Package probe finds what one database server and its host can do, one
// small probe per capability, each over a querier or host interface so it is
// tested against captured output.
package probe
