package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

func streamReport(seq int, lastEvent time.Time) *v1.StreamReport {
	return &v1.StreamReport{Watermark: &v1.StreamWatermark{Instance: "db1", Gtid: fmt.Sprintf("0-1-%d", seq), File: "bin.000001",
		Position: uint64(1000 + seq), LastEventTime: timestamppb.New(lastEvent), DurableAt: timestamppb.Now()}}
}

func commitIndex(t *testing.T, c *client.Conn) uint64 {
	t.Helper()
	st, err := c.Control.ClusterStatus(context.Background(), &v1.ClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st.GetCommitIndex()
}

func instanceNamed(t *testing.T, c *client.Conn, name string) *v1.Instance {
	t.Helper()
	r, err := c.Control.ListInstances(context.Background(), &v1.ListInstancesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range r.GetInstances() {
		if in.GetName() == name {
			return in
		}
	}
	t.Fatalf("instance %s not listed", name)
	return nil
}

// TestBinlogStream covers a continuous binlog stream through the
// controller: one per cluster group beside backups; the group's servers in
// the assignment; the watermark from heartbeats visible in ListInstances
// and GetBinlogStatus within a few seconds while Raft commits it at most
// once per interval; an agent restart resumes the same attempt at once;
// lease expiries never fail it; a stop through any group member ends it.
func TestBinlogStream(t *testing.T) {
	const commitEvery = 400 * time.Millisecond
	srv, c := startInProcess(t, func(cfg *controller.Config) { cfg.WatermarkCommitInterval = commitEvery })
	ctx := context.Background()
	group := map[string]string{"cluster": "c1"}
	a1, err := connectAgentLabeled(t, []string{srv.Addr()}, "db1", group)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := connectAgentLabeled(t, []string{srv.Addr()}, "db2", group)
	if err != nil {
		t.Fatal(err)
	}
	defer a2.close()

	_, err = c.Control.StartBinlogStream(ctx, &v1.StartBinlogStreamRequest{Instance: "db1", Flush: durationpb.New(time.Hour)})
	wantCode(t, err, codes.InvalidArgument, "flush 1h0m0s: must be between")
	r, err := c.Control.StartBinlogStream(ctx, &v1.StartBinlogStreamRequest{Instance: "db1", Flush: durationpb.New(200 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	job := r.GetJob()
	if job.GetKind() != v1.JobKind_JOB_KIND_BINLOG_STREAM || job.GetBinlogStream().GetCluster() != "c1" {
		t.Fatalf("stream job %v", job)
	}
	_, err = c.Control.StartBinlogStream(ctx, &v1.StartBinlogStreamRequest{Instance: "db2"})
	wantCode(t, err, codes.FailedPrecondition, fmt.Sprintf(`instance "db2" is in cluster "c1", whose binlog stream job %s`, job.GetId()))

	asg := a1.assignment(5 * time.Second)
	if asg.GetJob().GetId() != job.GetId() {
		t.Fatalf("assigned %v", asg.GetJob())
	}
	var srcs []string
	for _, s := range asg.GetJob().GetBinlogStream().GetSources() {
		srcs = append(srcs, s.GetInstance()+"@"+s.GetAgent())
	}
	if strings.Join(srcs, ",") != "db1@db1,db2@db2" {
		t.Fatalf("stream sources %v, want db1 first then db2", srcs)
	}
	// A backup runs beside the stream.
	b := submitBackup(t, c, "db1")
	bAsg := a1.assignment(5 * time.Second)
	if _, err := c.Control.CancelJob(ctx, &v1.CancelJobRequest{Id: b.GetId()}); err != nil {
		t.Fatal(err)
	}
	a1.setRunning(bAsg.GetJob().GetId(), nil)

	a1.progress(asg, 0)
	lastEvent := time.Now().Add(-2 * time.Second).Truncate(time.Second)
	a1.setStream(job.GetId(), streamReport(1, lastEvent))
	testenv.WaitFor(t, "the watermark in ListInstances", 5*time.Second, func() error {
		for _, name := range []string{"db1", "db2"} {
			if g := instanceNamed(t, c, name).GetBinlog().GetWatermark().GetGtid(); g != "0-1-1" {
				return fmt.Errorf("%s: watermark %q", name, g)
			}
		}
		return nil
	})
	if in := instanceNamed(t, c, "db1"); !in.GetBinlog().GetWatermark().GetLastEventTime().AsTime().Equal(lastEvent) || in.GetBinlog().GetJobId() != job.GetId() {
		t.Fatalf("db1 binlog %v", in.GetBinlog())
	}

	// Rate limit: a new watermark every 20 ms (ten per heartbeat) for two
	// seconds costs at most one Raft entry per commit interval.
	testenv.WaitFor(t, "the first commit", 5*time.Second, func() error {
		st, err := c.Control.GetBinlogStatus(ctx, &v1.GetBinlogStatusRequest{Instance: "db1"})
		if err != nil {
			return err
		}
		if st.GetStream().GetUpdatedAt() == nil {
			return fmt.Errorf("status %v: nothing committed yet", st)
		}
		return nil
	})
	before := commitIndex(t, c)
	const window = 2 * time.Second
	end := time.Now().Add(window)
	seq := 2
	for time.Now().Before(end) {
		a1.setStream(job.GetId(), streamReport(seq, time.Now()))
		seq++
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(commitEvery)
	entries := commitIndex(t, c) - before
	limit := uint64((window+commitEvery)/commitEvery) + 1
	t.Logf("%d watermarks over %s (heartbeat %s) took %d Raft entries (commit interval %s, limit %d)", seq-2, window, 100*time.Millisecond, entries, commitEvery, limit)
	if entries < 2 || entries > limit {
		t.Fatalf("%d Raft entries for %d watermarks in %s: want between 2 and %d", entries, seq-2, window, limit)
	}
	st, err := c.Control.GetBinlogStatus(ctx, &v1.GetBinlogStatusRequest{Instance: "db2", Consistent: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetJob().GetId() != job.GetId() || st.GetStream().GetWatermark().GetGtid() != fmt.Sprintf("0-1-%d", seq-1) || len(st.GetSources()) != 2 {
		t.Fatalf("status through db2: %v", st)
	}
	if j := getJob(t, c, job.GetId()); j.GetState() != v1.JobState_JOB_STATE_RUNNING || !strings.Contains(j.GetProgress().GetPhase(), "streaming: durable to bin.000001") {
		t.Fatalf("job %v", j)
	}

	// The agent restarts: it lists nothing, and gets the same attempt back
	// at once, long before the lease would expire.
	a1.close()
	a1, err = connectAgentLabeled(t, []string{srv.Addr()}, "db1", group)
	if err != nil {
		t.Fatal(err)
	}
	again := a1.assignment(testLease / 2)
	if !proto.Equal(again.GetLease(), asg.GetLease()) {
		t.Fatalf("after the restart: lease %v, want the running attempt's %v", again.GetLease(), asg.GetLease())
	}

	// Lease expiries, more than max_attempts (2): it is never failed. (A
	// paused agent's session outlives the lease by a little, so it may be
	// given the job again, and lose that lease too.)
	for i := range 2 {
		a1.pause(true)
		if err := a1.streamEnded(5 * time.Second); err == nil {
			t.Fatal("the controller kept the silent agent's session open")
		}
		j := waitJobState(t, c, job.GetId(), v1.JobState_JOB_STATE_PENDING, 5*time.Second)
		if n := len(j.GetPreviousAttempts()); n < i+1 {
			t.Fatalf("after expiry %d: %d previous attempts", i+1, n)
		}
		a1.close()
		a1, err = connectAgentLabeled(t, []string{srv.Addr()}, "db1", group)
		if err != nil {
			t.Fatal(err)
		}
		asg = a1.assignment(5 * time.Second)
	}
	if n := asg.GetJob().GetAttempt(); n <= 2 {
		t.Fatalf("attempt %d after two expiries", n)
	}
	defer func() { a1.close() }()
	// A failing run, retried by the agent: its error shows in the job (what
	// `tidemark jobs` prints) and in the binlog status.
	failing := streamReport(seq, time.Now())
	failing.LastError, failing.LastErrorAt, failing.Failures = "dial tcp 10.0.0.9:3306: connection refused", timestamppb.Now(), 3
	failing.RetryAt = timestamppb.New(time.Now().Add(8 * time.Second))
	a1.setStream(job.GetId(), failing)
	testenv.WaitFor(t, "the stream's error in the job and the binlog status", 5*time.Second, func() error {
		j := getJob(t, c, job.GetId())
		if !strings.Contains(j.GetProgress().GetPhase(), "after 3 failed run(s): dial tcp 10.0.0.9:3306: connection refused") {
			return fmt.Errorf("phase %q", j.GetProgress().GetPhase())
		}
		st, err := c.Control.GetBinlogStatus(ctx, &v1.GetBinlogStatusRequest{Instance: "db1"})
		if err != nil {
			return err
		}
		if st.GetStream().GetFailures() != 3 || !strings.Contains(st.GetStream().GetLastError(), "connection refused") {
			return fmt.Errorf("stream %v", st.GetStream())
		}
		return nil
	})

	// Stop through the other member of the group.
	stop, err := c.Control.StopBinlogStream(ctx, &v1.StopBinlogStreamRequest{Instance: "db2", Reason: "binlog stop by test"})
	if err != nil {
		t.Fatal(err)
	}
	if stop.GetJob().GetState() != v1.JobState_JOB_STATE_CANCELLED || stop.GetJob().GetId() != job.GetId() {
		t.Fatalf("stopped %v", stop.GetJob())
	}
	a1.expect("the stream's cancellation", 5*time.Second, func(m *v1.ControllerMessage) bool {
		return m.GetCancelJob().GetJobId() == job.GetId() && proto.Equal(m.GetCancelJob().GetLease(), asg.GetLease())
	})
	_, err = c.Control.StopBinlogStream(ctx, &v1.StopBinlogStreamRequest{Instance: "db1"})
	wantCode(t, err, codes.NotFound, `instance "db1" has no binlog stream running`)
	if in := instanceNamed(t, c, "db1"); in.GetBinlog() != nil {
		t.Fatalf("a stopped stream still listed: %v", in.GetBinlog())
	}
	st, err = c.Control.GetBinlogStatus(ctx, &v1.GetBinlogStatusRequest{Instance: "db1"})
	if err != nil || st.GetJob() != nil || st.GetStream().GetWatermark() == nil {
		t.Fatalf("status after stop: %v, %v", st, err)
	}
	// A new stream may start.
	if _, err := c.Control.StartBinlogStream(ctx, &v1.StartBinlogStreamRequest{Instance: "db2"}); err != nil {
		t.Fatal(err)
	}
}

// TestPITRRestoreSubmit: a point-in-time restore job names its target
// point; the base backup is the newest complete one at or before the
// target time; bad targets are refused with what was expected.
func TestPITRRestoreSubmit(t *testing.T) {
	srv, c := startInProcess(t, nil)
	ctx := context.Background()
	a, err := connectAgent(t, []string{srv.Addr()}, "db1")
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	restore := func(p *v1.RestoreParams) (*v1.Job, error) {
		r, err := c.Control.SubmitRestore(ctx, &v1.SubmitRestoreRequest{Params: p})
		return r.GetJob(), err
	}
	at := func(t time.Time) *v1.RestoreParams_StopAtTime {
		return &v1.RestoreParams_StopAtTime{StopAtTime: timestamppb.New(t)}
	}
	_, err = restore(&v1.RestoreParams{SourceInstance: "db1", TargetInstance: "db1", StopAt: at(time.Now())})
	wantCode(t, err, codes.NotFound, `instance "db1" has no complete logical backup consistent at or before`)

	job := submitBackup(t, c, "db1")
	asg := a.assignment(5 * time.Second)
	consistentAt := time.Now().Add(-time.Minute)
	bid := asg.GetJob().GetBackup().GetBackupId()
	seq := a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: &v1.JobResultReport{
		JobId: job.GetId(), Lease: asg.GetLease(), Ok: true, BackupId: bid, ManifestKey: "manifests/" + bid, RepositoryUri: "file:///backups",
		Manifest: &v1.Manifest{BackupId: bid, Instance: "db1", Engine: "logical", Fence: asg.GetLease(),
			Consistency: &v1.ConsistencyPoint{BinlogFile: "bin.000001", BinlogPosition: 42, Time: timestamppb.New(consistentAt)}},
	}}})
	if ans := a.answer(seq); ans.GetAck() == nil {
		t.Fatalf("backup result answered %v", ans)
	}
	waitJobState(t, c, job.GetId(), v1.JobState_JOB_STATE_SUCCEEDED, 5*time.Second)

	// A physical backup, older than the logical one: a datadir restore
	// picks it, a restore onto the server refuses it.
	job2 := submitBackup(t, c, "db1")
	asg2 := a.assignment(5 * time.Second)
	physID := asg2.GetJob().GetBackup().GetBackupId()
	seq = a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: &v1.JobResultReport{
		JobId: job2.GetId(), Lease: asg2.GetLease(), Ok: true, BackupId: physID, ManifestKey: "manifests/" + physID, RepositoryUri: "file:///backups",
		Manifest: &v1.Manifest{BackupId: physID, Instance: "db1", Engine: "snapshot", Fence: asg2.GetLease(),
			Consistency: &v1.ConsistencyPoint{BinlogFile: "bin.000001", BinlogPosition: 40, Time: timestamppb.New(consistentAt.Add(-time.Second))}},
	}}})
	if ans := a.answer(seq); ans.GetAck() == nil {
		t.Fatalf("backup result answered %v", ans)
	}
	waitJobState(t, c, job2.GetId(), v1.JobState_JOB_STATE_SUCCEEDED, 5*time.Second)
	_, err = restore(&v1.RestoreParams{BackupId: physID, TargetInstance: "db1"})
	wantCode(t, err, codes.FailedPrecondition, "give --to-datadir DIR")

	for _, tc := range []struct {
		p    *v1.RestoreParams
		code codes.Code
		msg  string
	}{
		{&v1.RestoreParams{SourceInstance: "db1", TargetInstance: "db1", StopAt: &v1.RestoreParams_StopAtGtidSet{StopAtGtidSet: "0-1"}},
			codes.InvalidArgument, `stop_at_gtid_set "0-1": expected a MariaDB GTID position such as 0-1-100`},
		{&v1.RestoreParams{SourceInstance: "db1", TargetInstance: "db1", StopAt: &v1.RestoreParams_StopAtPosition{StopAtPosition: &v1.BinlogPosition{File: "bin.000001", Position: 2}}},
			codes.InvalidArgument, "a binlog event starts at offset 4 or later"},
		{&v1.RestoreParams{TargetInstance: "db1", StopAt: at(time.Now())},
			codes.InvalidArgument, "needs the source instance (--instance) or a base backup (--from-backup)"},
		{&v1.RestoreParams{BackupId: bid, TargetInstance: "db1", StopAt: at(time.Now().Add(-time.Hour))},
			codes.FailedPrecondition, fmt.Sprintf("backup %s is consistent at", bid)},
		{&v1.RestoreParams{SourceInstance: "db1", TargetInstance: "db1", StopAt: at(time.Now().Add(-time.Hour))},
			codes.NotFound, "no complete logical backup consistent at or before"},
		{&v1.RestoreParams{BackupId: physID, TargetInstance: "db1", TargetDatadir: "srv/new"},
			codes.InvalidArgument, "an absolute path"},
		// A logical backup does not restore into a datadir.
		{&v1.RestoreParams{BackupId: bid, TargetInstance: "db1", TargetDatadir: "/srv/new"},
			codes.FailedPrecondition, "leave out --to-datadir"},
		// A datadir restore starts from a physical backup only.
		{&v1.RestoreParams{SourceInstance: "db1", TargetInstance: "db1", TargetDatadir: "/srv/new", StopAt: at(time.Now().Add(-time.Hour))},
			codes.NotFound, "no complete physical"},
	} {
		_, err := restore(tc.p)
		wantCode(t, err, tc.code, tc.msg)
	}
	target := time.Now().Add(time.Minute).Truncate(time.Second)
	jd, err := restore(&v1.RestoreParams{SourceInstance: "db1", TargetInstance: "db1", TargetDatadir: "/srv/new", StopAt: at(target)})
	if err != nil {
		t.Fatal(err)
	}
	if rp := jd.GetRestore(); rp.GetBackupId() != physID || rp.GetTargetDatadir() != "/srv/new" {
		t.Fatalf("datadir restore params %v, want base %s", rp, physID)
	}
	if _, err := c.Control.CancelJob(ctx, &v1.CancelJobRequest{Id: jd.GetId()}); err != nil {
		t.Fatal(err)
	}
	j, err := restore(&v1.RestoreParams{SourceInstance: "db1", TargetInstance: "db1", StopAt: at(target)})
	if err != nil {
		t.Fatal(err)
	}
	rp := j.GetRestore()
	if rp.GetBackupId() != bid || rp.GetSourceInstance() != "db1" || !rp.GetStopAtTime().AsTime().Equal(target) || rp.GetRepositoryUri() != "file:///backups" {
		t.Fatalf("restore params %v", rp)
	}
	pitr := a.assignment(5 * time.Second)
	if pitr.GetJob().GetRestore().GetStopAtTime() == nil {
		t.Fatalf("assignment %v", pitr)
	}
}

// TestGroupStreamStandIn (in-process): a `cluster` group's stream whose
// instance's agent this leader has never seen stays pending for the
// leader's first lease and takeover grace (the agent may be reconnecting
// after a leader change), then moves to the live agent of another member;
// a stream of one instance never moves.
func TestGroupStreamStandIn(t *testing.T) {
	const grace = 2 * time.Second
	start := time.Now()
	srv, c := startInProcess(t, func(cfg *controller.Config) { cfg.TakeoverGrace = grace })
	ctx := context.Background()
	pa, err := connectAgentLabeled(t, []string{srv.Addr()}, "pg-a", map[string]string{"cluster": "pg"})
	if err != nil {
		t.Fatal(err)
	}
	solo, err := connectAgentLabeled(t, []string{srv.Addr()}, "solo", nil)
	if err != nil {
		t.Fatal(err)
	}
	pa.close()
	solo.close()
	pb, err := connectAgentLabeled(t, []string{srv.Addr()}, "pg-b", map[string]string{"cluster": "pg"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pb.close)
	testenv.WaitFor(t, "pg-a's session to end", testenv.Wait(5*time.Second), func() error {
		as, err := c.Control.ListAgents(ctx, &v1.ListAgentsRequest{})
		if err != nil {
			return err
		}
		for _, a := range as.GetAgents() {
			if a.GetName() != "pg-b" && a.GetConnected() {
				return fmt.Errorf("%s still connected", a.GetName())
			}
		}
		return nil
	})
	for _, in := range []string{"pg-a", "solo"} {
		if _, err := c.Control.StartBinlogStream(ctx, &v1.StartBinlogStreamRequest{Instance: in}); err != nil {
			t.Fatal(err)
		}
	}
	asg := pb.assignment(testenv.Wait(10*time.Second) + testLease + grace)
	waited := time.Since(start)
	if j := asg.GetJob(); j.GetInstance() != "pg-a" || j.GetKind() != v1.JobKind_JOB_KIND_BINLOG_STREAM || j.GetBinlogStream().GetCluster() != "pg" {
		t.Fatalf("pg-b's agent was assigned %v", j)
	}
	if waited < testLease+grace {
		t.Fatalf("the stream moved %s after the leader started, within its first lease and grace (%s)", waited, testLease+grace)
	}
	if m, err := pb.wait(500*time.Millisecond, func(m *v1.ControllerMessage) bool { return m.GetAssignJob() != nil }); err == nil {
		t.Fatalf("pg-b's agent was also assigned %v", m.GetAssignJob().GetJob())
	}
}
