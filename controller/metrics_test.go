package controller_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestCatalogCollector: the leader's catalog gauges from one snapshot —
// the newest COMPLETE backup per instance (not a newer failed one), RPO
// against the collector's clock, jobs counted by kind and state.
func TestCatalogCollector(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	ts := timestamppb.New
	store, err := catalog.Load(&v1.CatalogSnapshot{
		Instances: []*v1.Instance{{Name: "db1", Agent: "a"}, {Name: "db2", Agent: "a"}, {Name: "db3", Agent: "a"}},
		Backups: []*v1.Backup{
			{Id: "b1", Instance: "db1", Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE, FinishedAt: ts(t0.Add(-2 * time.Hour))},
			{Id: "b2", Instance: "db1", Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE, FinishedAt: ts(t0.Add(-time.Hour))},
			{Id: "b3", Instance: "db1", Status: v1.BackupStatus_BACKUP_STATUS_FAILED, FinishedAt: ts(t0)},
			{Id: "b4", Instance: "db2", Status: v1.BackupStatus_BACKUP_STATUS_RUNNING},
		},
		Jobs: []*v1.Job{
			{Id: "j1", Instance: "db1", Kind: v1.JobKind_JOB_KIND_BACKUP, State: v1.JobState_JOB_STATE_SUCCEEDED},
			{Id: "j2", Instance: "db1", Kind: v1.JobKind_JOB_KIND_BACKUP, State: v1.JobState_JOB_STATE_SUCCEEDED},
			{Id: "j3", Instance: "db2", Kind: v1.JobKind_JOB_KIND_BINLOG_STREAM, State: v1.JobState_JOB_STATE_RUNNING},
		},
		BinlogStreams: []*v1.BinlogStream{
			{Instance: "db2", Watermark: &v1.StreamWatermark{LastEventTime: ts(t0.Add(-1500 * time.Millisecond))}},
			{Instance: "db3"}, // no event yet: no series
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := controller.NewCatalogCollector(store.Read)
	c.Now = func() time.Time { return t0 }
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			got[key] = m.GetGauge().GetValue()
		}
	}
	want := map[string]float64{
		"tidemark_catalog_instances":                                   3,
		"tidemark_catalog_jobs,kind=backup,state=succeeded":            2,
		"tidemark_catalog_jobs,kind=binlog_stream,state=running":       1,
		"tidemark_instance_last_backup_timestamp_seconds,instance=db1": float64(t0.Add(-time.Hour).Unix()),
		"tidemark_instance_binlog_rpo_seconds,instance=db2":            1.5,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("series %v, want exactly %v", got, want)
	}

	// A follower (nil read) exports none of them.
	reg = prometheus.NewRegistry()
	reg.MustRegister(controller.NewCatalogCollector(func() *catalog.Read { return nil }))
	if fams, _ := reg.Gather(); len(fams) != 0 {
		t.Errorf("a follower's catalog collector gathered %d families", len(fams))
	}
}
