// Package prototest checks the generated protobuf API in proto/gen/tidemark/v1:
// binary and JSON round trips of every message, and that the tests cover every
// arm of the Raft command envelope.
package prototest
