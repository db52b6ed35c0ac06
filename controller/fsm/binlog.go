package fsm

import (
	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// applyRecordWatermarks commits the binlog streams' latest state as the
// leader batched it. Each entry is fenced on its own: one whose lease is not
// its job's current one (the attempt was superseded, the job stopped) is
// skipped, and a watermark older than the stored one never replaces it (a
// late batch cannot move a stream backwards); the other entries still
// apply. The value is the command with only the entries applied.
func applyRecordWatermarks(w *catalog.Write, c *v1.RecordWatermarks) (proto.Message, error) {
	applied := &v1.RecordWatermarks{RecordedAt: c.GetRecordedAt()}
	for _, e := range c.GetStreams() {
		j, err := w.Job(e.GetJobId())
		if err != nil || j.GetKind() != v1.JobKind_JOB_KIND_BINLOG_STREAM || j.GetInstance() != e.GetInstance() ||
			!catalog.SameLease(j.GetLease(), e.GetLease()) || !catalog.Active(j.GetState()) {
			continue
		}
		rec := &v1.BinlogStream{Instance: e.GetInstance()}
		if old, err := w.BinlogStream(e.GetInstance()); err == nil {
			rec = proto.CloneOf(old)
		}
		rec.JobId, rec.Lease = e.GetJobId(), e.GetLease()
		rec.Cluster, rec.RepositoryUri = j.GetBinlogStream().GetCluster(), j.GetBinlogStream().GetRepositoryUri()
		if wm := e.GetWatermark(); wm != nil && (rec.GetWatermark() == nil ||
			!wm.GetDurableAt().AsTime().Before(rec.GetWatermark().GetDurableAt().AsTime())) {
			rec.Watermark = wm
		}
		rec.LastError, rec.LastErrorAt, rec.Failures = e.GetLastError(), e.GetLastErrorAt(), e.GetFailures()
		rec.UpdatedAt = c.GetRecordedAt()
		if err := w.PutBinlogStream(rec); err != nil {
			return nil, err
		}
		applied.Streams = append(applied.Streams, rec)
	}
	return applied, nil
}
