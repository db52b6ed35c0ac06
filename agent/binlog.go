package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// BinlogStreamer runs one binlog stream: the agent's view of
// engines/binlog.Stream, which the binary wires in (a few lines in cmd or
// cli: copy the fields, convert the Watermark).
//
// Contract: it streams until ctx is cancelled, then flushes what it holds
// and returns nil; it returns an error when the stream cannot go on (no
// server reachable at the start, a server refusing it, the repository
// failing). engines/binlog.Stream retries a lost connection itself, and
// records binlog purged before it was archived as a gap in the archive and
// goes on from the server's oldest binlog, with no error; it calls OnGap
// for that gap once it is durable, and for every gap the archive holds
// when it starts (so the same gap comes again from every call).
// The agent then calls it again, after a backoff, with the same params: a
// new call resumes from what the repository holds, with no gap and no
// duplicate. OnWatermark is called after each durable flush, and OnGap,
// from the streamer's goroutine; both are cheap and never block. A
// streamer must not call either after it returned.
type BinlogStreamer func(ctx context.Context, p BinlogStreamParams) error

// BinlogStreamParams are a stream's inputs, shaped after
// engines/binlog.StreamParams.
type BinlogStreamParams struct {
	// DSNs are the replication group's servers, the job's instance first;
	// the streamer reads from the first reachable primary and follows a
	// failover to the next one, at the same GTID position.
	DSNs []string
	Repo *archive.Repo
	// Instance is the stream's name in the repository (the job's instance).
	Instance      string
	Flush         time.Duration
	ServerID      uint32
	PurgeArchived bool
	OnWatermark   func(BinlogWatermark)
	OnGap         func(BinlogGap)
	Logger        *slog.Logger
}

// BinlogGap is engines/binlog.Gap: a stretch of the server's binlog the
// archive lacks, after After up to Before (the same two points every time
// the gap is reported).
type BinlogGap struct {
	After, Before         string
	AfterGTID, BeforeGTID string
	FromTime, ToTime      time.Time // server times of the last event before and the first after
	Reason                string
	DetectedAt            time.Time // when the streamer recorded it; zero when unknown
}

// maxReportedGaps bounds the gaps a stream's heartbeat carries: the newest
// are kept (the leader records each once, so older ones already reached it
// unless a run reported more than this many at once).
const maxReportedGaps = 64

// BinlogWatermark is engines/binlog.Watermark: how far the stream is
// durable in the repository.
type BinlogWatermark struct {
	Instance      string
	GTID          string
	File          string
	Position      uint64
	LastEventTime time.Time // server timestamp of the last durable event
	DurableAt     time.Time
}

// ErrNoStreamer is the error of a stream job on an agent built without a
// BinlogStreamer (Config.BinlogStreamer nil).
var ErrNoStreamer = errors.New("this agent has no binlog engine wired in (Config.BinlogStreamer is nil)")

// runStream runs a binlog stream job until its context ends: the
// controller cancelled it (binlog stop), a newer lease superseded it, or
// the agent is shutting down. A stream is never done, so it reports no
// result: a run that fails is started again after a backoff (doubling from
// StreamBackoffMin to StreamBackoffMax, back to the minimum after a run
// that made progress) under the same lease, and the heartbeat carries the
// last error, the failure count and the next start. When the attempt ends,
// the job leaves the agent's list; the controller requeues or has
// cancelled it.
func (a *Agent) runStream(ctx context.Context, j *job, log *slog.Logger) {
	defer func() {
		a.mu.Lock()
		if a.jobs[j.id] == j {
			delete(a.jobs, j.id)
		}
		a.mu.Unlock()
		j.cancel(nil)
		close(j.done)
	}()
	p := j.job.GetBinlogStream()
	inst := j.job.GetInstance()
	stopProgress := a.reportProgress(ctx, j)
	defer stopProgress()
	setPhase := func(phase string) {
		j.progress.Store(&v1.JobProgress{Phase: phase, UpdatedAt: timestamppb.Now()})
		select {
		case j.progressKick <- struct{}{}:
		default:
		}
	}
	backoff := a.cfg.StreamBackoffMin
	var failures uint32
	for ctx.Err() == nil {
		setPhase("streaming")
		var progressed atomic.Bool
		err := a.streamOnce(ctx, j, p, inst, log, func(w BinlogWatermark) {
			progressed.Store(true)
			j.setWatermark(w)
		}, j.addGap)
		if ctx.Err() != nil {
			break
		}
		if err == nil {
			err = errors.New("the binlog streamer returned while the job runs")
		}
		if progressed.Load() {
			failures, backoff = 0, a.cfg.StreamBackoffMin
		}
		failures++
		retryAt := time.Now().Add(backoff)
		j.setFailure(err, failures, retryAt)
		log.Warn("binlog stream failed; restarting it after a backoff", "instance", inst, "err", err, "failures", failures, "backoff", backoff)
		setPhase(fmt.Sprintf("retrying in %s: %v", backoff, err))
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		j.clearRetry()
		backoff = min(2*backoff, a.cfg.StreamBackoffMax)
	}
	log.Info("binlog stream stopped", "instance", inst, "cause", context.Cause(ctx))
}

// streamOnce runs the streamer once with the repository opened for it.
func (a *Agent) streamOnce(ctx context.Context, j *job, p *v1.BinlogStreamParams, inst string, log *slog.Logger, onWM func(BinlogWatermark), onGap func(BinlogGap)) error {
	if a.cfg.BinlogStreamer == nil {
		return ErrNoStreamer
	}
	dsns, err := a.streamDSNs(inst, p.GetSources(), log)
	if err != nil {
		return err
	}
	repo, closeRepo, err := a.openRepo(ctx, p.GetRepositoryUri())
	if err != nil {
		return fmt.Errorf("binlog stream of %s: %w", inst, err)
	}
	defer closeRepo()
	flush := p.GetFlush().AsDuration()
	if flush <= 0 {
		flush = time.Second
	}
	err = a.cfg.BinlogStreamer(ctx, BinlogStreamParams{
		DSNs: dsns, Repo: repo, Instance: inst, Flush: flush, ServerID: p.GetServerId(),
		PurgeArchived: p.GetPurgeArchived(), OnWatermark: onWM, OnGap: onGap, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("binlog stream of %s: %w", inst, err)
	}
	return nil
}

// streamDSNs turns a stream job's sources into DSNs: an instance this agent
// serves by its own DSN; another agent's instance by this agent's DSN for
// the job's instance with the address replaced (a replication group shares
// its replication account). A source without an address is skipped. A
// group's stream moved here because the agent of its instance is lost
// (the job's instance is another agent's) starts from the first member
// this agent serves, and reaches the others, the job's instance included,
// the same way.
func (a *Agent) streamDSNs(inst string, sources []*v1.BinlogSource, log *slog.Logger) ([]string, error) {
	base, own := inst, a.dsns[inst]
	if own == "" {
		for _, s := range sources {
			if d := a.dsns[s.GetInstance()]; d != "" {
				base, own = s.GetInstance(), d
				break
			}
		}
	}
	if own == "" {
		return nil, fmt.Errorf("instance %q is not served by agent %s (it serves: %s), nor is any member of its group", inst, a.cfg.Name, a.instanceNames())
	}
	out := []string{own}
	for _, s := range sources {
		switch {
		case s.GetInstance() == base:
			continue
		case a.dsns[s.GetInstance()] != "":
			out = append(out, a.dsns[s.GetInstance()])
		case s.GetAddress() == "":
			log.Warn("binlog stream: a member of the group has no TCP address (its agent reaches it by socket); it cannot be followed after a failover",
				"member", s.GetInstance(), "agent", s.GetAgent())
		default:
			d, err := withAddr(own, s.GetAddress())
			if err != nil {
				return nil, fmt.Errorf("binlog stream: member %s at %s: %w", s.GetInstance(), s.GetAddress(), err)
			}
			out = append(out, d)
		}
	}
	return out, nil
}

// withAddr is dsn with its server address replaced by addr (TCP).
func withAddr(dsn, addr string) (string, error) {
	d, err := mysqlx.WithAddr(dsn, addr)
	if err != nil {
		return "", errors.New("the instance's DSN does not parse")
	}
	return d, nil
}

// tcpAddr is the host:port of a TCP DSN, "" for a unix socket: what the
// agent reports as Instance.address for other agents' streams.
func tcpAddr(dsn string) string { return mysqlx.TCPAddr(dsn) }

// setWatermark records a durable flush; the next heartbeat carries it.
func (j *job) setWatermark(w BinlogWatermark) {
	j.streamMu.Lock()
	defer j.streamMu.Unlock()
	j.stream.Watermark = &v1.StreamWatermark{
		Instance: w.Instance, Gtid: w.GTID, File: w.File, Position: w.Position,
		LastEventTime: timeOrNil(w.LastEventTime), DurableAt: timeOrNil(w.DurableAt),
	}
	j.stream.Failures = 0
}

// addGap keeps a gap the streamer reported, once (by After and Before);
// every heartbeat carries the list.
func (j *job) addGap(g BinlogGap) {
	j.streamMu.Lock()
	defer j.streamMu.Unlock()
	for _, o := range j.stream.Gaps {
		if o.GetAfter() == g.After && o.GetBefore() == g.Before {
			return
		}
	}
	j.stream.Gaps = append(j.stream.Gaps, &v1.BinlogGap{
		After: g.After, Before: g.Before, AfterGtid: g.AfterGTID, BeforeGtid: g.BeforeGTID,
		FromTime: timeOrNil(g.FromTime), ToTime: timeOrNil(g.ToTime), Reason: g.Reason, DetectedAt: timeOrNil(g.DetectedAt),
	})
	if n := len(j.stream.Gaps); n > maxReportedGaps {
		j.stream.Gaps = slices.Delete(j.stream.Gaps, 0, n-maxReportedGaps)
	}
}

func (j *job) setFailure(err error, failures uint32, retryAt time.Time) {
	j.streamMu.Lock()
	defer j.streamMu.Unlock()
	j.stream.LastError, j.stream.LastErrorAt = err.Error(), timestamppb.Now()
	j.stream.Failures, j.stream.RetryAt = failures, timestamppb.New(retryAt)
}

func (j *job) clearRetry() {
	j.streamMu.Lock()
	defer j.streamMu.Unlock()
	j.stream.RetryAt = nil
}

// streamReport is a copy of the stream's state for a heartbeat; nil for
// other jobs.
func (j *job) streamReport() *v1.StreamReport {
	if j.job.GetKind() != v1.JobKind_JOB_KIND_BINLOG_STREAM {
		return nil
	}
	j.streamMu.Lock()
	defer j.streamMu.Unlock()
	return &v1.StreamReport{
		Watermark: j.stream.Watermark, LastError: j.stream.LastError, LastErrorAt: j.stream.LastErrorAt,
		Failures: j.stream.Failures, RetryAt: j.stream.RetryAt, Gaps: slices.Clone(j.stream.Gaps),
	}
}

func timeOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
