// Package local holds fleet.sh, which runs a whole Tidemark fleet on one
// machine, and the test that runs it end to end.
package local
