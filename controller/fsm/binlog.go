package fsm

import (
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// applyRecordWatermarks commits the binlog streams' latest state as the
// leader batched it. Each entry is fenced on its own: one whose lease is not
// its job's current one (the attempt was superseded, the job stopped) is
// skipped, and a watermark older than the stored one never replaces it (a
// late batch cannot move a stream backwards); the other entries still
// apply. An entry's gaps are added to the record's, each once (by after and
// before), stamped with recorded_at; a gap the record holds keeps its
// stamps. The value is the command with only the entries applied.
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
		rec.Gaps = mergeGaps(rec.GetGaps(), e.GetGaps(), c.GetRecordedAt())
		rec.UpdatedAt = c.GetRecordedAt()
		if err := w.PutBinlogStream(rec); err != nil {
			return nil, err
		}
		applied.Streams = append(applied.Streams, rec)
	}
	return applied, nil
}

// GapKey identifies a binlog gap of a stream: where the archive stops and
// where it starts again. An agent reports a gap with every heartbeat and
// again after a restart, always with the same two points.
func GapKey(g *v1.BinlogGap) string { return g.GetAfter() + "\x00" + g.GetBefore() }

// mergeGaps is have plus the reported gaps it lacks (oldest first), each
// stamped with at. have is not changed.
func mergeGaps(have, reported []*v1.BinlogGap, at *timestamppb.Timestamp) []*v1.BinlogGap {
	known := make(map[string]bool, len(have))
	for _, g := range have {
		known[GapKey(g)] = true
	}
	out := slices.Clone(have)
	for _, g := range reported {
		k := GapKey(g)
		if known[k] {
			continue
		}
		known[k] = true
		g = proto.CloneOf(g)
		g.RecordedAt, g.AlertedAt = at, nil
		out = append(out, g)
	}
	return out
}

// applyMarkBinlogGapsAlerted stamps alerted_at on the named gaps of a
// stream record that are not alerted yet. A record or gap that is not
// there changes nothing (the value lists the gaps stamped).
func applyMarkBinlogGapsAlerted(w *catalog.Write, c *v1.MarkBinlogGapsAlerted) (proto.Message, error) {
	applied := &v1.MarkBinlogGapsAlerted{Instance: c.GetInstance(), AlertedAt: c.GetAlertedAt()}
	old, err := w.BinlogStream(c.GetInstance())
	if err != nil {
		return applied, errUnchanged
	}
	want := map[string]bool{}
	for _, g := range c.GetGaps() {
		want[GapKey(g)] = true
	}
	rec := proto.CloneOf(old)
	for _, g := range rec.GetGaps() {
		if want[GapKey(g)] && g.GetAlertedAt() == nil {
			g.AlertedAt = c.GetAlertedAt()
			applied.Gaps = append(applied.Gaps, g)
		}
	}
	if len(applied.Gaps) == 0 {
		return applied, errUnchanged
	}
	if err := w.PutBinlogStream(rec); err != nil {
		return nil, err
	}
	return applied, nil
}
