package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// fakeStreamer is a test double of the binlog engine's Stream: each call is
// one run, scripted by the test through runs (the n-th call does runs[n];
// the last entry repeats). It records every call and checks that no two
// run at once.
type fakeStreamer struct {
	runs []func(ctx context.Context, p BinlogStreamParams) error

	mu        sync.Mutex
	calls     []BinlogStreamParams
	callAt    []time.Time
	active    int
	maxActive int
	ended     chan error // each run's return, in order
}

func newFakeStreamer(runs ...func(ctx context.Context, p BinlogStreamParams) error) *fakeStreamer {
	return &fakeStreamer{runs: runs, ended: make(chan error, 100)}
}

func (f *fakeStreamer) stream(ctx context.Context, p BinlogStreamParams) error {
	f.mu.Lock()
	n := len(f.calls)
	f.calls = append(f.calls, p)
	f.callAt = append(f.callAt, time.Now())
	f.active++
	f.maxActive = max(f.maxActive, f.active)
	f.mu.Unlock()
	err := f.runs[min(n, len(f.runs)-1)](ctx, p)
	f.mu.Lock()
	f.active--
	f.mu.Unlock()
	f.ended <- err
	return err
}

func (f *fakeStreamer) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// emit sends watermarks with GTIDs seq..seq+n-1 of domain 0, server 1.
func emit(p BinlogStreamParams, seq, n int) {
	for i := range n {
		p.OnWatermark(BinlogWatermark{Instance: p.Instance, GTID: fmt.Sprintf("0-1-%d", seq+i), File: "bin.000001",
			Position: uint64(1000 + seq + i), LastEventTime: time.Now().Add(-time.Second), DurableAt: time.Now()})
	}
}

func streamJob(id, instance string, sources ...*v1.BinlogSource) *v1.Job {
	return &v1.Job{Id: id, Kind: v1.JobKind_JOB_KIND_BINLOG_STREAM, Instance: instance, Attempt: 1,
		Params: &v1.Job_BinlogStream{BinlogStream: &v1.BinlogStreamParams{Flush: durationpb.New(50 * time.Millisecond), Sources: sources}}}
}

func streamOf(h *v1.Heartbeat, job string) *v1.StreamReport {
	for _, r := range h.GetRunning() {
		if r.GetJobId() == job {
			return r.GetStream()
		}
	}
	return nil
}

// TestBinlogStreamJob: a stream job runs the streamer with the group's
// DSNs; its watermarks and its failures travel in heartbeats (no result,
// no progress per flush); a failed run is started again after the backoff
// under the same lease; a reconnect does not restart it; a cancellation
// ends the run through its context and the job leaves the heartbeats
// without a result.
func TestBinlogStreamJob(t *testing.T) {
	t.Parallel()
	fs := newFakeStreamer(
		func(ctx context.Context, p BinlogStreamParams) error {
			emit(p, 1, 3)
			return errors.New("connection refused")
		},
		func(ctx context.Context, p BinlogStreamParams) error {
			// A gap the archive holds (reported at the start) and then
			// again: the heartbeat carries it once.
			g := BinlogGap{After: "GTID 0-1-3 (bin.000001:900)", Before: "GTID 0-1-4 (bin.000003:4)", AfterGTID: "0-1-3",
				Reason: "purged", DetectedAt: time.Now()}
			p.OnGap(g)
			emit(p, 4, 2)
			p.OnGap(g)
			<-ctx.Done()
			return nil
		},
	)
	f1, f2 := startFake(t), startFake(t)
	cfg := testConfig(t, "db-b", f1.addr, f2.addr)
	cfg.MySQL = "repl:secret@tcp(" + blackHole(t) + ")/"
	cfg.ProbeTimeout = 300 * time.Millisecond
	cfg.Repo = newRepo(t)
	cfg.StreamBackoffMin, cfg.StreamBackoffMax = time.Second, 2*time.Second
	cfg.BinlogStreamer = fs.stream
	runAgent(t, cfg)

	s := f1.next(t, 10*time.Second)
	if got := s.reg.GetInstances()[0].GetAddress(); got == "" || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Fatalf("instance address %q, want the DSN's host:port", got)
	}
	l := lease("stream-1", 3, 7)
	s.assign(streamJob("stream-1", "db-b",
		&v1.BinlogSource{Instance: "db-b", Agent: "db-b"},
		&v1.BinlogSource{Instance: "db-b2", Agent: "other", Address: "10.0.0.2:3306"},
		&v1.BinlogSource{Instance: "db-b3", Agent: "other"}, // socket only: skipped
	), l)
	// One progress report moves the job to RUNNING (its phase is the
	// latest: "streaming" or already "retrying ...").
	if p := s.progressOf(t, "stream-1"); p.GetProgress().GetPhase() == "" || !proto.Equal(p.GetLease(), l) {
		t.Fatalf("first progress %v", p)
	}
	// While it waits to retry, the heartbeats carry the first run's last
	// watermark, its error and the retry time.
	hb := s.heartbeat(t, "the first run's failure and its retry time", func(h *v1.Heartbeat) bool {
		r := streamOf(h, "stream-1")
		return r.GetRetryAt() != nil && r.GetWatermark().GetGtid() == "0-1-3"
	})
	r := streamOf(hb.GetHeartbeat(), "stream-1")
	if !strings.Contains(r.GetLastError(), "connection refused") || r.GetFailures() != 1 || r.GetLastErrorAt() == nil {
		t.Fatalf("report after the failure %v", r)
	}
	hb = s.heartbeat(t, "the second run's watermark", func(h *v1.Heartbeat) bool {
		r := streamOf(h, "stream-1")
		return r.GetWatermark().GetGtid() == "0-1-5" && r.GetFailures() == 0 && r.GetRetryAt() == nil
	})
	if gs := streamOf(hb.GetHeartbeat(), "stream-1").GetGaps(); len(gs) != 1 || gs[0].GetAfterGtid() != "0-1-3" ||
		gs[0].GetBefore() != "GTID 0-1-4 (bin.000003:4)" || gs[0].GetReason() != "purged" || gs[0].GetDetectedAt() == nil {
		t.Fatalf("heartbeat gaps %v, want the reported gap once", gs)
	}
	fs.mu.Lock()
	gap := fs.callAt[1].Sub(fs.callAt[0])
	p0 := fs.calls[0]
	fs.mu.Unlock()
	if gap < time.Second {
		t.Fatalf("second run started %s after the first: less than the backoff", gap)
	}
	// The password stays out of the DSN strings (held by mysqlx) and comes
	// back for the other member too: a group shares its replication account.
	if len(p0.DSNs) != 2 || p0.DSNs[0] != strings.Replace(cfg.MySQL, "repl:secret@", "repl@", 1) || !strings.HasPrefix(p0.DSNs[1], "repl@tcp(10.0.0.2:3306)/") ||
		p0.Instance != "db-b" || p0.Flush != 50*time.Millisecond || p0.Repo == nil {
		t.Fatalf("stream params %+v", p0)
	}
	for _, dsn := range p0.DSNs {
		if d, err := mysqlx.ParseDSN(dsn); err != nil || d.Config().Passwd != "secret" {
			t.Fatalf("the stream's DSN %s does not give back the password (%v)", dsn, err)
		}
	}

	// The controller goes away: the agent registers elsewhere, listing the
	// stream with its watermark; the run goes on, not restarted.
	f1.srv.Stop()
	s2 := f2.next(t, 10*time.Second)
	if rj := s2.reg.GetRunning(); len(rj) != 1 || !proto.Equal(rj[0].GetLease(), l) || rj[0].GetStream().GetWatermark().GetGtid() != "0-1-5" {
		t.Fatalf("register after the reconnect lists %v", rj)
	}
	// The same assignment again (a new leader re-sends it) is a no-op.
	s2.assign(streamJob("stream-1", "db-b"), l)
	time.Sleep(200 * time.Millisecond)
	if n := fs.callCount(); n != 2 {
		t.Fatalf("%d streamer runs after the reconnect, want still 2", n)
	}

	// binlog stop: the run's context ends, the job leaves the heartbeats,
	// and no result is sent.
	s2.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_CancelJob{CancelJob: &v1.JobCancellation{JobId: "stream-1", Lease: l, Reason: "binlog stream stopped"}}})
	select {
	case err := <-drain(fs.ended, 2):
		if err != nil {
			t.Fatalf("the cancelled run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the streamer's context was not cancelled")
	}
	s2.heartbeat(t, "a heartbeat without the stream", func(h *v1.Heartbeat) bool { return len(h.GetRunning()) == 0 })
	if len(s2.results) > 0 {
		t.Fatalf("a stream job sent a result: %v", (<-s2.results).AgentMessage)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.maxActive != 1 || len(fs.calls) != 2 {
		t.Fatalf("%d runs, at most %d at once; want 2 runs, one at a time", len(fs.calls), fs.maxActive)
	}
}

// drain returns a channel with the n-th value of ch (the ones before are
// dropped).
func drain(ch chan error, n int) <-chan error {
	out := make(chan error, 1)
	go func() {
		var err error
		for range n {
			err = <-ch
		}
		out <- err
	}()
	return out
}

// TestBinlogStreamWithoutEngine: an agent built without a streamer keeps
// the job and reports why it cannot stream, retrying, instead of failing
// the job or spinning.
func TestBinlogStreamWithoutEngine(t *testing.T) {
	t.Parallel()
	fc := startFake(t)
	cfg := testConfig(t, "db-n", fc.addr)
	cfg.MySQL = "tidemark@tcp(" + blackHole(t) + ")/"
	cfg.ProbeTimeout = 300 * time.Millisecond
	cfg.StreamBackoffMin, cfg.StreamBackoffMax = 100*time.Millisecond, 200*time.Millisecond
	runAgent(t, cfg)
	s := fc.next(t, 10*time.Second)
	s.assign(streamJob("stream-n", "db-n"), lease("stream-n", 1, 1))
	s.heartbeat(t, "the missing engine reported", func(h *v1.Heartbeat) bool {
		r := streamOf(h, "stream-n")
		return strings.Contains(r.GetLastError(), "no binlog engine wired in") && r.GetFailures() >= 2
	})
	if len(s.results) > 0 {
		t.Fatalf("unexpected result %v", (<-s.results).AgentMessage)
	}
}

// TestPITRJob: a restore job with a stop point goes to the PITRRestorer
// with the target DSN, base backup, source archive, stop point and serve
// TLS settings; without
// one wired in it fails with a clear error.
func TestPITRJob(t *testing.T) {
	t.Parallel()
	var got PITRParams
	fc := startFake(t)
	cfg := testConfig(t, "db-p", fc.addr)
	cfg.MySQL = "tidemark@tcp(" + blackHole(t) + ")/"
	cfg.ProbeTimeout = 300 * time.Millisecond
	cfg.Repo = newRepo(t)
	cfg.PITRRestorer = func(ctx context.Context, p PITRParams) (*PITRResult, error) {
		got = p
		p.Progress("replaying binlogs", 10, 20)
		return &PITRResult{BackupID: p.BackupID, Tables: 3, Transactions: 42}, nil
	}
	runAgent(t, cfg)
	s := fc.next(t, 10*time.Second)
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	job := &v1.Job{Id: "r-1", Kind: v1.JobKind_JOB_KIND_RESTORE, Instance: "db-p", Attempt: 1,
		Params: &v1.Job_Restore{Restore: &v1.RestoreParams{BackupId: "b-1", TargetInstance: "db-p", SourceInstance: "db-src", TargetDatadir: "/srv/new",
			StopAt:   &v1.RestoreParams_StopAtTime{StopAtTime: timestamppb.New(at)},
			ServeTls: v1.ServeTLS_SERVE_TLS_ON, ServeTlsCertFile: "/etc/t/c.pem", ServeTlsKeyFile: "/etc/t/k.pem", ServeTlsCaFile: "/etc/mysql/ca.pem"}}}
	s.assign(job, lease("r-1", 1, 2))
	msg := s.result(t, "r-1")
	if res := msg.GetJobResult(); !res.GetOk() || res.GetBackupId() != "b-1" {
		t.Fatalf("result %v", res)
	}
	s.ack(msg.GetSeq())
	if got.DSN != cfg.MySQL || got.BackupID != "b-1" || got.SourceInstance != "db-src" || !got.StopTime.Equal(at) ||
		got.StopGTID != "" || got.StopFile != "" || got.Repo == nil || got.Datadir != "/srv/new" ||
		got.ServeTLS != "on" || got.ServeTLSCert != "/etc/t/c.pem" || got.ServeTLSKey != "/etc/t/k.pem" || got.ServeTLSCAFile != "/etc/mysql/ca.pem" {
		t.Fatalf("PITR params %+v", got)
	}

	cfg2 := testConfig(t, "db-q", fc.addr)
	cfg2.MySQL = cfg.MySQL
	cfg2.ProbeTimeout = 300 * time.Millisecond
	runAgent(t, cfg2)
	s2 := fc.next(t, 10*time.Second)
	job.Instance = "db-q"
	job.GetRestore().StopAt = &v1.RestoreParams_StopAtGtidSet{StopAtGtidSet: "0-1-9"}
	s2.assign(job, lease("r-1", 1, 3))
	msg = s2.result(t, "r-1")
	if res := msg.GetJobResult(); res.GetOk() || !strings.Contains(res.GetError(), "no binlog engine wired in for point-in-time restores") {
		t.Fatalf("result without a restorer %v", res)
	}
}

// TestStreamDSNsMovedStream: a group's stream moved to this agent (the
// job's instance is another agent's) starts from the member this agent
// serves and reaches the job's instance by its address; a stream none of
// whose members this agent serves is refused naming what it serves.
func TestStreamDSNsMovedStream(t *testing.T) {
	a := &Agent{cfg: Config{Name: "b", MySQL: "repl:pw@tcp(10.0.0.2:3306)/"}, dsns: map[string]string{"pb": "repl:pw@tcp(10.0.0.2:3306)/"}}
	log := slog.New(slog.DiscardHandler)
	got, err := a.streamDSNs("pa", []*v1.BinlogSource{
		{Instance: "pa", Agent: "a", Address: "10.0.0.1:3306"}, {Instance: "pb", Agent: "b", Address: "10.0.0.2:3306"},
	}, log)
	if err != nil || len(got) != 2 || got[0] != "repl:pw@tcp(10.0.0.2:3306)/" || !strings.Contains(got[1], "repl:pw@tcp(10.0.0.1:3306)/") {
		t.Fatalf("moved stream DSNs %v, %v", got, err)
	}
	if _, err := a.streamDSNs("pz", []*v1.BinlogSource{{Instance: "pz", Agent: "z", Address: "10.0.0.9:3306"}}, log); err == nil ||
		!strings.Contains(err.Error(), `instance "pz" is not served by agent b`) || !strings.Contains(err.Error(), "nor is any member of its group") {
		t.Fatalf("a stream of no member here: %v", err)
	}
}
