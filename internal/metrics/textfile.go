package metrics

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Run is one run of a standalone command (tidemark backup --mysql …), for
// WriteRunTextfile.
type Run struct {
	Job
	// Instance names the server (the backup's instance).
	Instance string
	// End is when the run ended.
	End time.Time
}

// The standalone gauges. A one-shot process cannot keep a counter, so
// what it leaves is the last run's facts, per kind and instance, in a file
// node_exporter's textfile collector serves.
const (
	standaloneLastRun      = "tidemark_standalone_last_run_timestamp_seconds"
	standaloneLastDuration = "tidemark_standalone_last_run_duration_seconds"
	standaloneLastSuccess  = "tidemark_standalone_last_success_timestamp_seconds"
	standaloneBackupBytes  = "tidemark_standalone_last_backup_bytes"
	standaloneBackupLock   = "tidemark_standalone_last_backup_lock_seconds"
)

// StandaloneNames lists the metrics WriteRunTextfile writes.
func StandaloneNames() []string {
	return []string{standaloneBackupBytes, standaloneBackupLock, standaloneLastDuration, standaloneLastSuccess, standaloneLastRun}
}

// WriteRunTextfile records run in the Prometheus text file at path, for
// node_exporter's textfile collector: the run's end time and duration
// (labels kind, instance, engine, outcome), the last success time (kind,
// instance; kept from the file's previous content when this run failed),
// and for a successful backup its bytes (instance, engine, state) and lock
// time. Series of other kinds and instances already in the file are kept,
// so several commands may share one file (not at the same moment: the
// last writer wins). The file is replaced atomically (written beside it,
// then renamed), so the collector never reads half of it.
func WriteRunTextfile(path string, run Run) error {
	kind, outcome, engine := jobLabels(run.Job)
	prev, err := readTextfile(path)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	lastRun := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: standaloneLastRun,
		Help: "Unix time the last standalone run of this kind on this instance ended."}, []string{"kind", "instance", "engine", "outcome"})
	lastDur := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: standaloneLastDuration,
		Help: "Wall time of the last standalone run of this kind on this instance."}, []string{"kind", "instance", "engine", "outcome"})
	lastOK := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: standaloneLastSuccess,
		Help: "Unix time the last successful standalone run of this kind on this instance ended."}, []string{"kind", "instance"})
	bytes := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: standaloneBackupBytes,
		Help: "Bytes of the last successful standalone backup of the instance: logical, stored, new."}, []string{"instance", "engine", "state"})
	lock := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: standaloneBackupLock,
		Help: "How long the last successful standalone backup of the instance blocked writes."}, []string{"instance", "engine"})
	reg.MustRegister(lastRun, lastDur, lastOK, bytes, lock)
	vecs := map[string]*prometheus.GaugeVec{standaloneLastRun: lastRun, standaloneLastDuration: lastDur, standaloneLastSuccess: lastOK,
		standaloneBackupBytes: bytes, standaloneBackupLock: lock}
	okBackup := kind == "backup" && outcome == OutcomeOK
	for name := range prev {
		if vecs[name] == nil {
			return fmt.Errorf("--metrics-textfile %s holds %s, which tidemark does not write: give a file of its own", path, name)
		}
	}
	// Keep what this run does not replace.
	for name, mf := range prev {
		vec := vecs[name]
		for _, m := range mf.GetMetric() {
			l := labelMap(m.GetLabel())
			mine := l["instance"] == run.Instance
			switch name {
			case standaloneLastRun, standaloneLastDuration:
				mine = mine && l["kind"] == kind
			case standaloneLastSuccess:
				mine = mine && l["kind"] == kind && outcome == OutcomeOK
			default:
				mine = mine && okBackup
			}
			if mine {
				continue
			}
			g, err := vec.GetMetricWith(l)
			if err != nil {
				continue // labels of another version: dropped
			}
			g.Set(m.GetGauge().GetValue())
		}
	}
	end := float64(run.End.UnixNano()) / 1e9
	lastRun.WithLabelValues(kind, run.Instance, engine, outcome).Set(end)
	lastDur.WithLabelValues(kind, run.Instance, engine, outcome).Set(run.Took.Seconds())
	if outcome == OutcomeOK {
		lastOK.WithLabelValues(kind, run.Instance).Set(end)
	}
	if okBackup {
		bytes.WithLabelValues(run.Instance, engine, "logical").Set(float64(run.LogicalBytes))
		bytes.WithLabelValues(run.Instance, engine, "stored").Set(float64(run.StoredBytes))
		bytes.WithLabelValues(run.Instance, engine, "new").Set(float64(run.NewBytes))
		lock.WithLabelValues(run.Instance, engine).Set(run.Lock.Seconds())
	}
	if err := prometheus.WriteToTextfile(path, reg); err != nil {
		return fmt.Errorf("--metrics-textfile %s: %w", path, err)
	}
	return nil
}

// jobLabels are a job's kind, outcome and engine label values, bounded as
// JobDone's.
func jobLabels(j Job) (kind, outcome, engine string) {
	outcome = OutcomeOK
	switch {
	case j.Canceled:
		outcome = OutcomeCanceled
	case j.Err != nil:
		outcome = OutcomeFailed
	}
	kind = j.Kind
	if kind != "backup" && kind != "restore" {
		kind = "other"
	}
	return kind, outcome, engineLabel(j.Engine)
}

// readTextfile parses the file's previous content; a missing file is
// empty, an unreadable one is an error naming it (it is not silently
// replaced: it may be someone else's).
func readTextfile(path string) (map[string]*dto.MetricFamily, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("--metrics-textfile %s: %w", path, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		return nil, fmt.Errorf("--metrics-textfile %s holds something other than Prometheus text format (%w): give a file of its own", path, err)
	}
	return fams, nil
}

func labelMap(ls []*dto.LabelPair) prometheus.Labels {
	m := prometheus.Labels{}
	for _, l := range ls {
		m[l.GetName()] = l.GetValue()
	}
	return m
}
