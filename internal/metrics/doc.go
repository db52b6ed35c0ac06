// Package metrics is one process's Prometheus registry (never the global
// default, so daemons in one test process do not collide), the definitions
// of every tidemark_* metric with their bounded label sets, the readiness
// checks a daemon registers, and the HTTP listener serving /metrics,
// /healthz, /readyz and, when enabled, /debug/pprof.
package metrics
