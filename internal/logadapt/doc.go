// Package logadapt routes the loggers of third-party libraries
// (hashicorp/raft's hclog, gRPC's grpclog) into a log/slog logger, so their
// lines share the process's handler and format (JSON under --log-format
// json).
package logadapt
