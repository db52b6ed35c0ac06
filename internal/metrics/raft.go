package metrics

import (
	"sync"
	"time"

	gometrics "github.com/hashicorp/go-metrics"
	gmprom "github.com/hashicorp/go-metrics/prometheus"
)

var raftSinkOnce struct {
	sync.Once
	reg *Registry
	err error
}

// InstallRaftSink routes hashicorp/raft's own metrics (go-metrics, a
// process-global: raft reports through gometrics' global handle) into r
// as tidemark_raft_* (summaries such as tidemark_raft_commitTime,
// tidemark_raft_fsm_apply; gauges such as tidemark_raft_state_*). Only the
// first Registry of a process gets them: a test process running several
// controller nodes sees raft's figures of all of them in that one, and the
// later ones have none. It returns whether r is that registry.
func InstallRaftSink(r *Registry) (bool, error) {
	if r == nil {
		return false, nil
	}
	raftSinkOnce.Do(func() {
		sink, err := gmprom.NewPrometheusSinkFrom(gmprom.PrometheusOpts{
			Registerer: r.reg,
			// A series raft stops emitting (a follower's leader-only
			// timers) disappears after this long.
			Expiration: 5 * time.Minute,
			Name:       "tidemark_raft_sink",
		})
		if err != nil {
			raftSinkOnce.err = err
			return
		}
		cfg := gometrics.DefaultConfig("tidemark")
		cfg.EnableHostname = false
		cfg.EnableRuntimeMetrics = false
		cfg.EnableServiceLabel = false
		if _, err := gometrics.NewGlobal(cfg, sink); err != nil {
			raftSinkOnce.err = err
			return
		}
		raftSinkOnce.reg = r
	})
	return raftSinkOnce.reg == r, raftSinkOnce.err
}
