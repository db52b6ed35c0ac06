package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// tWriter sends log lines to t.Log until the test ends.
type tWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newRepo creates a file:// repository and returns its URI.
func newRepo(t *testing.T) string {
	t.Helper()
	uri := "file://" + filepath.Join(t.TempDir(), "repo")
	ctx := context.Background()
	st, err := location.Open(ctx, uri, location.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := archive.Init(ctx, st, archive.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	repo.Close()
	_ = st.Close()
	return uri
}

func openRepo(t *testing.T, uri string) *archive.Repo {
	t.Helper()
	ctx := context.Background()
	st, err := location.Open(ctx, uri, location.Options{})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := archive.Open(ctx, st, archive.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close(); _ = st.Close() })
	return repo
}

// TestRegisterAndHeartbeat: the agent registers with its name, labels,
// instances and capabilities, then heartbeats at the interval the
// controller gave, listing the lease of every job it holds.
func TestRegisterAndHeartbeat(t *testing.T) {
	t.Parallel()
	fc := startFake(t, func(f *fakeController) { f.heartbeat = 150 * time.Millisecond })
	cfg := testConfig(t, "db-eu-1", fc.addr)
	cfg.Labels = map[string]string{"dc": "eu", "tier": "gold"}
	cfg.MySQL = "tidemark@tcp(" + blackHole(t) + ")/" // never answers: its jobs run until cancelled
	cfg.ProbeTimeout = 300 * time.Millisecond
	runAgent(t, cfg)

	s := fc.next(t, 10*time.Second)
	reg := s.reg
	if reg.GetName() != "db-eu-1" || reg.GetLabels()["dc"] != "eu" || reg.GetAgentVersion() == "" || len(reg.GetRunning()) != 0 {
		t.Fatalf("register %v", reg)
	}
	if len(reg.GetInstances()) != 1 || reg.GetInstances()[0].GetName() != "db-eu-1" || reg.GetInstances()[0].GetAgent() != "db-eu-1" {
		t.Fatalf("instances %v", reg.GetInstances())
	}
	c := reg.GetCapabilities()
	if c.GetStorageReachable() || !strings.Contains(c.GetStorageError(), "no repository configured") || c.GetProbedAt() == nil {
		t.Fatalf("capabilities %v", c)
	}

	// Heartbeats come at the controller's interval (on average: one late
	// tick makes the next gap short).
	var at []time.Time
	for len(at) < 5 {
		at = append(at, s.heartbeat(t, "heartbeat", func(*v1.Heartbeat) bool { return true }).at)
	}
	if avg := at[len(at)-1].Sub(at[0]) / time.Duration(len(at)-1); avg < 120*time.Millisecond || avg > testenv.Wait(300*time.Millisecond) {
		t.Errorf("heartbeats every %s on average, want about 150ms", avg)
	}

	// A job the agent runs appears in every heartbeat with its lease.
	l := lease("job-hb", 4, 17)
	s.assign(backupJob("job-hb", "db-eu-1", "b-hb"), l)
	hb := s.heartbeat(t, "heartbeat listing job-hb", func(h *v1.Heartbeat) bool { return len(h.GetRunning()) == 1 })
	if r := hb.GetHeartbeat().GetRunning()[0]; r.GetJobId() != "job-hb" || !proto.Equal(r.GetLease(), l) {
		t.Fatalf("heartbeat running %v", r)
	}
	// It has no repository: it fails at once; until the controller
	// acknowledges the result, the lease is still listed.
	res := s.result(t, "job-hb")
	if res.GetJobResult().GetOk() || !strings.Contains(res.GetJobResult().GetError(), "--repo") {
		t.Fatalf("result %v", res)
	}
	s.heartbeat(t, "heartbeat still listing job-hb", func(h *v1.Heartbeat) bool { return len(h.GetRunning()) == 1 })
	s.ack(res.GetSeq())
	s.heartbeat(t, "heartbeat without job-hb", func(h *v1.Heartbeat) bool { return len(h.GetRunning()) == 0 })
}

// TestBackupJob runs a backup job against a real MariaDB into a file://
// repository and restores it onto the agent's second instance; then a
// backup job whose result the controller refuses as stale, after which the
// agent deletes the manifest it wrote.
func TestBackupJob(t *testing.T) {
	t.Parallel()
	m, scratch := testenv.StartMariaDB(t), testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "scratch"})
	testenv.LoadSample(t, m.DB(t), "shop", 300)
	repoURI := newRepo(t)
	fc := startFake(t)
	cfg := testConfig(t, "db-1", fc.addr)
	cfg.MySQL = m.DSN
	cfg.Instances = map[string]string{"db-1/scratch": scratch.DSN}
	cfg.Repo = repoURI
	cfg.Parallel = 2
	runAgent(t, cfg)

	s := fc.next(t, 10*time.Second)
	if n := len(s.reg.GetInstances()); n != 2 {
		t.Fatalf("%d instances registered", n)
	}
	inst := s.reg.GetInstances()[0]
	if c := inst.GetCapabilities(); c.GetFlavor() != "mariadb" || !c.GetStorageReachable() || !c.GetBinlogEnabled() || inst.GetServer().GetServerId() != m.ServerID {
		t.Fatalf("instance %v", inst)
	}

	start := time.Now()
	l := lease("job-1", 2, 42)
	s.assign(backupJob("job-1", "db-1", "backup-1"), l)
	if p := s.progressOf(t, "job-1"); !proto.Equal(p.GetLease(), l) {
		t.Fatalf("progress %v", p)
	}
	msg := s.result(t, "job-1")
	res := msg.GetJobResult()
	t.Logf("backup took %s", time.Since(start))
	if !res.GetOk() || res.GetError() != "" || res.GetBackupId() != "backup-1" || !proto.Equal(res.GetLease(), l) ||
		res.GetManifestKey() != archive.ManifestKey("backup-1") {
		t.Fatalf("result %v", res)
	}
	if rm := res.GetManifest(); rm.GetBackupId() != "backup-1" || !proto.Equal(rm.GetFence(), l) || len(rm.GetStreams()) != 0 ||
		rm.GetLogicalBytes() == 0 || rm.GetConsistency().GetBinlogFile() == "" {
		t.Fatalf("result manifest %v", rm)
	}
	repo := openRepo(t, repoURI)
	man, err := repo.LoadManifest(context.Background(), "backup-1")
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(man.GetFence(), l) || man.GetInstance() != "db-1" || man.GetEngine() != "logical" {
		t.Fatalf("manifest fence %v instance %q engine %q", man.GetFence(), man.GetInstance(), man.GetEngine())
	}
	// The reported key is where the manifest is.
	if _, err := repo.Store().Stat(context.Background(), res.GetManifestKey()); err != nil {
		t.Fatalf("manifest key %s: %v", res.GetManifestKey(), err)
	}
	s.ack(msg.GetSeq())

	// Restore it onto the scratch instance.
	s.assign(&v1.Job{Id: "job-restore", Kind: v1.JobKind_JOB_KIND_RESTORE, Instance: "db-1/scratch",
		Params: &v1.Job_Restore{Restore: &v1.RestoreParams{BackupId: "backup-1", TargetInstance: "db-1/scratch"}}},
		lease("job-restore", 2, 43))
	msg = s.result(t, "job-restore")
	if res := msg.GetJobResult(); !res.GetOk() || res.GetBackupId() != "backup-1" {
		t.Fatalf("restore result %v", res)
	}
	s.ack(msg.GetSeq())
	testenv.Compare(t, m.DB(t), scratch.DB(t), "shop")

	// A result refused as stale: the agent deletes its manifest.
	l2 := lease("job-2", 2, 50)
	s.assign(backupJob("job-2", "db-1", "backup-2"), l2)
	msg = s.result(t, "job-2")
	if !msg.GetJobResult().GetOk() {
		t.Fatalf("result %v", msg)
	}
	if _, err := repo.LoadManifest(context.Background(), "backup-2"); err != nil {
		t.Fatal(err)
	}
	s.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_Error{Error: &v1.Error{
		Seq: msg.GetSeq(), Code: 9, Message: "stale lease 2/50: job-2 is held by lease 3/7"}}})
	deadline := time.Now().Add(testenv.Wait(10 * time.Second))
	for {
		_, err := repo.Store().Stat(context.Background(), archive.ManifestKey("backup-2"))
		if errors.Is(err, storage.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("manifest of the refused attempt still there: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The first backup is untouched, and the refused job is no longer held.
	if _, err := repo.LoadManifest(context.Background(), "backup-1"); err != nil {
		t.Fatal(err)
	}
	s.heartbeat(t, "heartbeat without jobs", func(h *v1.Heartbeat) bool { return len(h.GetRunning()) == 0 })
}

// TestReconnect: when the stream to the first controller is cut and that
// controller is gone, the agent reconnects (with backoff) to the second and
// re-registers with the job it still runs, so its lease survives.
func TestReconnect(t *testing.T) {
	t.Parallel()
	f1, f2 := startFake(t), startFake(t)
	cfg := testConfig(t, "db-2", f1.addr, f2.addr)
	cfg.MySQL = "tidemark@tcp(" + blackHole(t) + ")/"
	cfg.ProbeTimeout = 300 * time.Millisecond
	cfg.Repo = newRepo(t)
	runAgent(t, cfg)

	s1 := f1.next(t, 10*time.Second)
	l := lease("job-r", 1, 9)
	s1.assign(backupJob("job-r", "db-2", "b-r"), l)
	s1.heartbeat(t, "heartbeat with job-r", func(h *v1.Heartbeat) bool { return len(h.GetRunning()) == 1 })

	cut := time.Now()
	f1.srv.Stop() // ends the stream and refuses new connections
	s2 := f2.next(t, 10*time.Second)
	t.Logf("re-registered with the second controller %s after the cut", time.Since(cut))
	if r := s2.reg.GetRunning(); len(r) != 1 || r[0].GetJobId() != "job-r" || !proto.Equal(r[0].GetLease(), l) {
		t.Fatalf("register after reconnect lists %v", r)
	}
	// The job is still the agent's: cancelling it on the new stream works.
	s2.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_CancelJob{CancelJob: &v1.JobCancellation{JobId: "job-r", Lease: l, Reason: "test over"}}})
	msg := s2.result(t, "job-r")
	if res := msg.GetJobResult(); res.GetOk() || !strings.Contains(res.GetError(), "test over") {
		t.Fatalf("result %v", res)
	}
	s2.ack(msg.GetSeq())
}

// TestLeaderRedirect: a follower's answer names the leader (an address the
// agent was not given) and the agent registers there; when that leader
// steps down it names the next one, and the agent follows at once.
func TestLeaderRedirect(t *testing.T) {
	t.Parallel()
	leader2 := startFake(t)
	leader1 := startFake(t)
	follower := startFake(t, func(f *fakeController) {
		f.answer = func(*v1.Register) *v1.ControllerMessage {
			return &v1.ControllerMessage{Msg: &v1.ControllerMessage_Error{Error: &v1.Error{Seq: 1, Code: 9,
				Message: "not the leader", Leader: leader1.addr, LeaderId: "node-2"}}}
		}
	})
	cfg := testConfig(t, "db-6", follower.addr)
	cfg.MySQL = "tidemark@tcp(127.0.0.1:1)/"
	// A long backoff: only following the hints can be quick.
	cfg.BackoffMin, cfg.BackoffMax = 5*time.Second, 10*time.Second
	runAgent(t, cfg)

	s1 := leader1.next(t, 5*time.Second)
	if n := len(follower.registers); n != 1 {
		t.Fatalf("follower saw %d registrations", n)
	}
	start := time.Now()
	s1.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_Error{Error: &v1.Error{Code: 9, Message: "stepping down", Leader: leader2.addr}}})
	leader2.next(t, 3*time.Second)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %s to follow the new leader", d)
	}
}

// TestNoLeaderRetries: UNAVAILABLE (an election) is retried with backoff.
func TestNoLeaderRetries(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	refusals := 2
	fc := startFake(t, func(f *fakeController) {
		f.answer = func(*v1.Register) *v1.ControllerMessage {
			mu.Lock()
			defer mu.Unlock()
			if refusals == 0 {
				return nil
			}
			refusals--
			return &v1.ControllerMessage{Msg: &v1.ControllerMessage_Error{Error: &v1.Error{Seq: 1, Code: 14, Message: "no leader"}}}
		}
	})
	cfg := testConfig(t, "db-7", fc.addr)
	cfg.MySQL = "tidemark@tcp(127.0.0.1:1)/"
	runAgent(t, cfg)
	fc.next(t, 5*time.Second)
	if n := len(fc.registers); n != 3 {
		t.Fatalf("%d registrations, want 3", n)
	}
}

// TestCancelAndShutdown: a cancellation stops the job and its result says
// why; a job still running at shutdown fails with "agent shutting down" and
// Run returns nil once the controller took the result.
func TestCancelAndShutdown(t *testing.T) {
	t.Parallel()
	fc := startFake(t)
	cfg := testConfig(t, "db-3", fc.addr)
	cfg.MySQL = "tidemark@tcp(" + blackHole(t) + ")/"
	cfg.ProbeTimeout = 300 * time.Millisecond
	cfg.Repo = newRepo(t)
	run := runAgent(t, cfg)
	s := fc.next(t, 10*time.Second)

	l := lease("job-c", 5, 1)
	s.assign(backupJob("job-c", "db-3", "b-c"), l)
	s.progressOf(t, "job-c")
	// A cancellation for another attempt is ignored.
	s.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_CancelJob{CancelJob: &v1.JobCancellation{JobId: "job-c", Lease: lease("job-c", 4, 1)}}})
	s.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_CancelJob{CancelJob: &v1.JobCancellation{JobId: "job-c", Lease: l, Reason: "operator asked"}}})
	msg := s.result(t, "job-c")
	if res := msg.GetJobResult(); res.GetOk() || res.GetError() != "cancelled by the controller: operator asked" || !proto.Equal(res.GetLease(), l) {
		t.Fatalf("result %v", res)
	}
	s.ack(msg.GetSeq())

	// A newer lease for a job the agent runs replaces the old attempt,
	// which is never reported.
	s.assign(backupJob("job-x", "db-3", "b-x"), lease("job-x", 5, 10))
	s.progressOf(t, "job-x")
	newer := lease("job-x", 6, 1)
	s.assign(backupJob("job-x", "db-3", "b-x"), newer)
	s.assign(backupJob("job-x", "db-3", "b-x"), lease("job-x", 5, 11)) // older than the one held: ignored
	s.heartbeat(t, "heartbeat with the newer lease only", func(h *v1.Heartbeat) bool {
		return len(h.GetRunning()) == 1 && proto.Equal(h.GetRunning()[0].GetLease(), newer)
	})
	s.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_CancelJob{CancelJob: &v1.JobCancellation{JobId: "job-x", Reason: "done"}}})
	msg = s.result(t, "job-x")
	if res := msg.GetJobResult(); !proto.Equal(res.GetLease(), newer) || res.GetError() != "cancelled by the controller: done" {
		t.Fatalf("result %v", res)
	}
	s.ack(msg.GetSeq())

	// A job for an instance the agent does not serve is refused.
	s.assign(backupJob("job-u", "db-elsewhere", "b-u"), lease("job-u", 5, 2))
	msg = s.result(t, "job-u")
	if res := msg.GetJobResult(); res.GetOk() || !strings.Contains(res.GetError(), `instance "db-elsewhere" is not served by agent db-3`) {
		t.Fatalf("result %v", res)
	}
	s.ack(msg.GetSeq())

	// Shutdown with a job running.
	s.assign(backupJob("job-s", "db-3", "b-s"), lease("job-s", 5, 3))
	s.progressOf(t, "job-s")
	run.cancel()
	msg = s.result(t, "job-s")
	if res := msg.GetJobResult(); res.GetOk() || res.GetError() != "agent shutting down" {
		t.Fatalf("result %v", res)
	}
	s.ack(msg.GetSeq())
	if err := run.wait(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if len(s.results) > 0 {
		t.Fatalf("unexpected result %v", (<-s.results).AgentMessage)
	}
}

// TestNameTaken: registration refused because the name is held by a live
// agent ends Run with an error that says what to do, and no retry loop.
func TestNameTaken(t *testing.T) {
	t.Parallel()
	fc := startFake(t, func(f *fakeController) {
		f.answer = func(r *v1.Register) *v1.ControllerMessage {
			return &v1.ControllerMessage{Msg: &v1.ControllerMessage_Error{Error: &v1.Error{Seq: 1, Code: 6,
				Message: "agent " + r.GetName() + " is connected from 10.0.0.7:51234"}}}
		}
	})
	cfg := testConfig(t, "db-4", fc.addr)
	cfg.MySQL = "tidemark@tcp(127.0.0.1:1)/"
	err := runAgent(t, cfg).wait(t, 10*time.Second)
	var fe *FatalError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), `agent name "db-4" is already connected`) ||
		!strings.Contains(err.Error(), "choose another --name") || !strings.Contains(err.Error(), "10.0.0.7") {
		t.Fatalf("Run: %v", errString(err))
	}
	if n := len(fc.registers); n != 1 {
		t.Fatalf("%d registrations, want 1", n)
	}
}

// TestNotAController: addresses that speak HTTP or another protocol end Run
// with an error naming each, once every address was tried.
func TestNotAController(t *testing.T) {
	t.Parallel()
	httpAddr, tcpAddr := notGRPC(t, "http"), notGRPC(t, "tcp")
	// A gRPC server without the agent service.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other := grpc.NewServer(tlsServer(t))
	go func() { _ = other.Serve(l) }()
	t.Cleanup(other.Stop)
	grpcAddr := l.Addr().String()

	cfg := testConfig(t, "db-5", httpAddr, tcpAddr, grpcAddr)
	cfg.MySQL = "tidemark@tcp(127.0.0.1:1)/"
	msg := errString(runAgent(t, cfg).wait(t, 20*time.Second))
	for _, want := range []string{"no Tidemark controller at", httpAddr + ": it does not speak TLS", tcpAddr + ": it does not speak TLS",
		grpcAddr + ": a gRPC server without the Tidemark agent service"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Run's error lacks %q: %s", want, msg)
		}
	}
}
