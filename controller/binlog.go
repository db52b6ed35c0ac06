package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Binlog streams through the controller. A stream is a job of kind
// JOB_KIND_BINLOG_STREAM: submitting it is "streaming enabled" for the
// instance and its `cluster` group, cancelling it is "disabled", and the job
// is never done in between (the FSM sends every ended attempt back to
// pending; the agent retries a failing stream itself, with backoff, under
// the same lease). Its watermark comes with the agent's heartbeats, which
// never reach the Raft log: the leader keeps the latest report per job
// (streamLatest) and commitLoop writes the streams that moved in one
// RecordWatermarks entry at most every Config.WatermarkCommitInterval.
// The reports also carry the gaps the stream's archive records; the FSM
// adds each to the stream record once, status shows it until a full backup
// after it, and alertLoop sends its binlog_gap webhook once.

// streamLatest is the latest report of one stream job's attempt.
type streamLatest struct {
	instance string
	lease    *v1.LeaseToken
	report   *v1.StreamReport
	at       time.Time // when the leader received it
	dirty    bool      // not committed yet
}

// noteStream keeps a heartbeat's report of stream job j (under its current
// lease). Cheap: a map write under the hub's lock.
func (h *agentHub) noteStream(j *v1.Job, rep *v1.StreamReport) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.leading {
		return
	}
	st := h.streams[j.GetId()]
	if st != nil && catalog.SameLease(st.lease, j.GetLease()) && proto.Equal(st.report, rep) {
		st.at = time.Now()
		return
	}
	h.streams[j.GetId()] = &streamLatest{instance: j.GetInstance(), lease: j.GetLease(), report: rep, at: time.Now(), dirty: true}
	close(h.progressed) // watchers of the job see the new watermark
	h.progressed = make(chan struct{})
}

// latestStream returns the leader's latest report of stream job id (nil
// when it has none).
func (h *agentHub) latestStream(id string, lease *v1.LeaseToken) *v1.StreamReport {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st := h.streams[id]; st != nil && catalog.SameLease(st.lease, lease) {
		return st.report
	}
	return nil
}

// commitLoop commits the streams' watermarks every commitEvery while the
// node leads. A leader change loses at most one interval of uncommitted
// reports, and only in the catalog: the agents report their latest to the
// new leader with their next heartbeat.
func (h *agentHub) commitLoop(ctx context.Context) {
	t := time.NewTicker(h.commitEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.commitStreams(ctx)
		}
	}
}

// commitStreams writes every stream report not committed yet, in one
// RecordWatermarks entry. Entries that failed to commit stay dirty.
func (h *agentHub) commitStreams(ctx context.Context) {
	h.mu.Lock()
	var (
		entries []*v1.BinlogStream
		taken   []*streamLatest
	)
	for id, st := range h.streams {
		if !st.dirty {
			continue
		}
		r := st.report
		entries = append(entries, &v1.BinlogStream{
			Instance: st.instance, JobId: id, Lease: st.lease, Watermark: r.GetWatermark(),
			LastError: r.GetLastError(), LastErrorAt: r.GetLastErrorAt(), Failures: r.GetFailures(), Gaps: r.GetGaps(),
		})
		taken = append(taken, st)
		st.dirty = false
	}
	h.mu.Unlock()
	if len(entries) == 0 {
		return
	}
	slices.SortFunc(entries, func(a, b *v1.BinlogStream) int { return strings.Compare(a.GetInstance(), b.GetInstance()) })
	_, err := h.node.apply(ctx, &v1.Command{Cmd: &v1.Command_RecordWatermarks{RecordWatermarks: &v1.RecordWatermarks{
		Streams: entries, RecordedAt: now(),
	}}})
	if err != nil {
		h.log.Warn("could not commit binlog watermarks; retrying at the next interval", "streams", len(entries), "err", err)
		h.mu.Lock()
		for _, st := range taken {
			st.dirty = true
		}
		h.mu.Unlock()
	}
}

// withSources returns a copy of stream job j whose params list the
// servers of its group as the catalog has them now, the job's instance
// first.
func withSources(r *catalog.Read, j *v1.Job) *v1.Job {
	j = proto.CloneOf(j)
	p := j.GetBinlogStream()
	p.Sources = nil
	in, err := r.Instance(j.GetInstance())
	if err != nil {
		return j
	}
	for _, m := range groupOf(r, in, p.GetCluster()) {
		p.Sources = append(p.Sources, &v1.BinlogSource{Instance: m.GetName(), Agent: m.GetAgent(), Address: m.GetAddress()})
	}
	return j
}

// groupOf is in's group by the cluster label value the job recorded (the
// instance's labels may have changed since).
func groupOf(r *catalog.Read, in *v1.Instance, cluster string) []*v1.Instance {
	if cluster == "" {
		return []*v1.Instance{in}
	}
	out := []*v1.Instance{in}
	for _, o := range r.Instances() {
		if o.GetName() != in.GetName() && o.GetLabels()[catalog.ClusterLabel] == cluster {
			out = append(out, o)
		}
	}
	return out
}

// streamProgress renders a stream report as a job's progress, so `tidemark
// jobs` and `job watch` show how far it is and its last error.
func streamProgress(r *v1.StreamReport, at time.Time) *v1.JobProgress {
	p := &v1.JobProgress{UpdatedAt: timestamppb.New(at)}
	wm := r.GetWatermark()
	switch {
	case r.GetRetryAt() != nil:
		p.Phase = fmt.Sprintf("retrying at %s after %d failed run(s): %s",
			r.GetRetryAt().AsTime().UTC().Format(time.RFC3339), r.GetFailures(), r.GetLastError())
	case wm == nil:
		p.Phase = "streaming: nothing durable yet"
	default:
		p.Phase = fmt.Sprintf("streaming: durable to %s:%d", wm.GetFile(), wm.GetPosition())
		if wm.GetGtid() != "" {
			p.Phase += " (gtid " + wm.GetGtid() + ")"
		}
		if wm.GetLastEventTime() != nil {
			p.Phase += ", last event " + wm.GetLastEventTime().AsTime().UTC().Format(time.RFC3339)
		}
		if r.GetLastError() != "" {
			p.Phase += "; last error: " + r.GetLastError()
		}
	}
	if wm != nil {
		p.BytesDone = wm.GetPosition()
	}
	return p
}

// A stream's flush interval: below minFlush the repository takes an object
// per few events; beyond maxFlush the RPO is no longer "continuous".
const (
	minFlush = 10 * time.Millisecond
	maxFlush = 10 * time.Minute
)

func (c *controlService) StartBinlogStream(ctx context.Context, req *v1.StartBinlogStreamRequest) (*v1.StartBinlogStreamResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.StartBinlogStream)
	}
	return keyed(ctx, s, req, replayed("job", func(v *v1.Job) *v1.StartBinlogStreamResponse {
		return &v1.StartBinlogStreamResponse{Job: v, Replayed: true}
	}), func(ctx context.Context) (*v1.StartBinlogStreamResponse, error) {
		if req.GetInstance() == "" {
			return nil, invalid("instance is required")
		}
		if f := req.GetFlush(); f != nil {
			if d := f.AsDuration(); d < minFlush || d > maxFlush {
				return nil, invalid("flush %s: must be between %s and %s", d, minFlush, maxFlush)
			}
		}
		if err := checkRepo(req.GetRepositoryUri()); err != nil {
			return nil, err
		}
		in, err := s.fsm.Store().Read().Instance(req.GetInstance())
		if err != nil {
			return nil, catalog.Errorf(catalog.ErrNotFound, "instance %q not found: see `tidemark instances`", req.GetInstance())
		}
		repo := req.GetRepositoryUri()
		if repo == "" {
			repo = s.cfg.Repo
		}
		flush := req.GetFlush()
		if flush == nil {
			flush = durationpb.New(time.Second)
		}
		t := time.Now()
		job := &v1.Job{
			Id: newJobID(t), Kind: v1.JobKind_JOB_KIND_BINLOG_STREAM, Instance: in.GetName(), State: v1.JobState_JOB_STATE_PENDING,
			CreatedAt: timestampOf(t), UpdatedAt: timestampOf(t),
			Params: &v1.Job_BinlogStream{BinlogStream: &v1.BinlogStreamParams{
				Flush: flush, RepositoryUri: repo, Cluster: in.GetLabels()[catalog.ClusterLabel],
				ServerId: req.GetServerId(), PurgeArchived: req.GetPurgeArchived(),
			}},
		}
		resp, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: job}}})
		if err != nil {
			return nil, err
		}
		s.agents.kickAssigner()
		s.log.Info("binlog stream submitted", "job", job.GetId(), "instance", job.GetInstance(), "cluster", job.GetBinlogStream().GetCluster())
		return &v1.StartBinlogStreamResponse{Job: resp.Value.(*v1.Job)}, nil
	})
}

func (c *controlService) StopBinlogStream(ctx context.Context, req *v1.StopBinlogStreamRequest) (*v1.StopBinlogStreamResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.StopBinlogStream)
	}
	return keyed(ctx, s, req, replayed("job", func(v *v1.Job) *v1.StopBinlogStreamResponse {
		return &v1.StopBinlogStreamResponse{Job: v, Replayed: true}
	}), func(ctx context.Context) (*v1.StopBinlogStreamResponse, error) {
		r := s.fsm.Store().Read()
		in, err := r.Instance(req.GetInstance())
		if err != nil {
			return nil, catalog.Errorf(catalog.ErrNotFound, "instance %q not found: see `tidemark instances`", req.GetInstance())
		}
		j := r.ActiveStreamOf(in)
		if j == nil {
			return nil, catalog.Errorf(catalog.ErrNotFound, "instance %q has no binlog stream running (start one with `tidemark binlog start --instance %s`)", in.GetName(), in.GetName())
		}
		reason := req.GetReason()
		if reason == "" {
			reason = "binlog stream stopped"
		}
		nj, err := s.cancelJob(ctx, j.GetId(), reason)
		if err != nil {
			return nil, err
		}
		return &v1.StopBinlogStreamResponse{Job: nj}, nil
	})
}

func (c *controlService) GetBinlogStatus(ctx context.Context, req *v1.GetBinlogStatusRequest) (*v1.GetBinlogStatusResponse, error) {
	s := c.s
	fwd, info, err := c.readPrep(ctx, req.GetStale())
	if fwd {
		return forwardRead(ctx, s, req, v1.ControlServiceClient.GetBinlogStatus)
	}
	if err != nil {
		return nil, err
	}
	if req.GetStale() && !s.isLeader() && !wasForwarded(ctx) {
		// The latest watermark is in the leader's memory: ask it, and
		// answer from the committed record when it cannot be reached.
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := forward(fctx, s, req, v1.ControlServiceClient.GetBinlogStatus)
		cancel()
		if err == nil {
			return resp, nil
		}
	}
	r := s.fsm.Store().Read()
	in, err := r.Instance(req.GetInstance())
	if err != nil {
		return nil, catalog.Errorf(catalog.ErrNotFound, "instance %q not found: see `tidemark instances`", req.GetInstance())
	}
	out := &v1.GetBinlogStatusResponse{Read: info}
	name := in.GetName()
	if j := r.ActiveStreamOf(in); j != nil {
		if s.agents.isLeading() {
			j, _ = s.agents.overlay(j)
		}
		out.Job = j
		name = j.GetInstance()
		out.Sources = withSources(r, j).GetBinlogStream().GetSources()
	}
	if rec, err := r.BinlogStream(name); err == nil {
		out.Stream = s.agents.streamView(rec, out.Job)
	}
	return out, nil
}

// streamView is a committed stream record with the latest report the
// leader holds for its active job (nil job: the record as committed).
func (h *agentHub) streamView(rec *v1.BinlogStream, j *v1.Job) *v1.BinlogStream {
	if j == nil || !h.isLeading() {
		return rec
	}
	rep := h.latestStream(j.GetId(), j.GetLease())
	if rep == nil {
		return rec
	}
	rec = proto.CloneOf(rec)
	if wm := rep.GetWatermark(); wm != nil && (rec.GetWatermark() == nil ||
		!wm.GetDurableAt().AsTime().Before(rec.GetWatermark().GetDurableAt().AsTime())) {
		rec.Watermark = wm
	}
	rec.LastError, rec.LastErrorAt, rec.Failures = rep.GetLastError(), rep.GetLastErrorAt(), rep.GetFailures()
	return rec
}

// fillStreams sets Instance.binlog on a list of instances (clones): the
// stream that covers each one (its own or its group's) while one is
// active, with the leader's latest watermark.
func (s *Server) fillStreams(r *catalog.Read, list []*v1.Instance) []*v1.Instance {
	active := map[string]*v1.Job{}  // by instance
	byGroup := map[string]*v1.Job{} // by cluster label value
	for _, j := range r.ActiveJobs() {
		if j.GetKind() != v1.JobKind_JOB_KIND_BINLOG_STREAM {
			continue
		}
		active[j.GetInstance()] = j
		if c := j.GetBinlogStream().GetCluster(); c != "" {
			byGroup[c] = j
		}
	}
	out := make([]*v1.Instance, len(list))
	for i, in := range list {
		out[i] = in
		j := active[in.GetName()]
		if j == nil {
			if c := in.GetLabels()[catalog.ClusterLabel]; c != "" {
				j = byGroup[c]
			}
		}
		if j == nil {
			continue
		}
		rec, err := r.BinlogStream(j.GetInstance())
		if err != nil {
			rec = &v1.BinlogStream{Instance: j.GetInstance(), JobId: j.GetId()}
		}
		in = proto.CloneOf(in)
		in.Binlog = s.agents.streamView(rec, j)
		out[i] = in
	}
	return out
}
