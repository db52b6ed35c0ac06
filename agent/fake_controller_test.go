package agent

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// fakeController is a test double of the controller's side of the agent
// protocol (AgentService.Connect), scripted by each test: a real gRPC server
// on loopback, so the agent's dialing, streaming and reconnecting are real.
// The real controller is tested against the same protocol in the controller
// package.
type fakeController struct {
	v1.UnimplementedAgentServiceServer
	t    *testing.T
	addr string
	srv  *grpc.Server

	// answer decides the reply to a Register; nil accepts with Registered.
	answer    func(*v1.Register) *v1.ControllerMessage
	heartbeat time.Duration
	// lease is Registered.lease_duration (0: three heartbeats); with acks
	// the fake answers every Heartbeat and the Register with
	// LeasesRenewed for every job listed, as a leader does.
	lease     time.Duration
	grace     time.Duration // Registered.takeover_grace
	acks      bool
	streams   chan *fakeStream
	registers chan *v1.Register // every Register received, accepted or not
}

// fakeStream is one accepted Connect stream. The agent's messages are
// queued by kind, in arrival order, each with its arrival time.
type fakeStream struct {
	reg        *v1.Register
	heartbeats chan received
	progress   chan received
	results    chan received
	reprobes   chan received // Registers on the open stream: re-probes
	out        chan *v1.ControllerMessage
	cut        chan struct{}
	seq        uint64
	mu         sync.Mutex
}

func startFake(t *testing.T, configure ...func(*fakeController)) *fakeController {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeController{t: t, addr: l.Addr().String(), srv: grpc.NewServer(tlsServer(t)), heartbeat: 100 * time.Millisecond,
		streams: make(chan *fakeStream, 10), registers: make(chan *v1.Register, 10)}
	for _, c := range configure {
		c(f)
	}
	v1.RegisterAgentServiceServer(f.srv, f)
	go func() { _ = f.srv.Serve(l) }()
	t.Cleanup(f.srv.Stop)
	return f
}

func (f *fakeController) Connect(stream v1.AgentService_ConnectServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	reg := first.GetRegister()
	if reg == nil {
		return status.Error(codes.InvalidArgument, "first message must be Register")
	}
	f.registers <- reg
	var ans *v1.ControllerMessage
	if f.answer != nil {
		ans = f.answer(reg)
	}
	if ans == nil {
		lease := f.lease
		if lease == 0 {
			lease = 3 * f.heartbeat
		}
		ans = &v1.ControllerMessage{Msg: &v1.ControllerMessage_Registered{Registered: &v1.Registered{
			AgentId: "agent-" + reg.GetName(), HeartbeatInterval: durationpb.New(f.heartbeat),
			LeaseDuration: durationpb.New(lease), ControllerNode: f.addr, RenewalAcks: f.acks && reg.GetRenewalAcks(),
			TakeoverGrace: durationpb.New(f.grace)}}}
	}
	ans.Seq = 1
	if err := stream.Send(ans); err != nil {
		return err
	}
	if ans.GetRegistered() == nil {
		return nil
	}
	fs := &fakeStream{reg: reg, heartbeats: make(chan received, 1000), progress: make(chan received, 1000),
		results: make(chan received, 1000), reprobes: make(chan received, 100), out: make(chan *v1.ControllerMessage, 100), cut: make(chan struct{}), seq: 1}
	f.streams <- fs
	renewed := func(seq uint64, running []*v1.RunningJob) {
		if !f.acks {
			return
		}
		var ids []string
		for _, r := range running {
			ids = append(ids, r.GetJobId())
		}
		fs.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_LeasesRenewed{LeasesRenewed: &v1.LeasesRenewed{Seq: seq, JobIds: ids}}})
	}
	renewed(first.GetSeq(), reg.GetRunning())
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			r := received{m, time.Now()}
			switch {
			case m.GetHeartbeat() != nil:
				renewed(m.GetSeq(), m.GetHeartbeat().GetRunning())
				fs.heartbeats <- r
			case m.GetJobProgress() != nil:
				fs.progress <- r
			case m.GetJobResult() != nil:
				fs.results <- r
			case m.GetRegister() != nil:
				fs.reprobes <- r
			default:
				f.t.Errorf("fake controller: unexpected message %v", m)
			}
		}
	}()
	for {
		select {
		case m := <-fs.out:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-fs.cut:
			return status.Error(codes.Unavailable, "fake controller cut the stream")
		case err := <-recvErr:
			return err
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// next waits for the next accepted stream.
func (f *fakeController) next(t *testing.T, within time.Duration) *fakeStream {
	t.Helper()
	select {
	case s := <-f.streams:
		return s
	case <-time.After(testenv.Wait(within)):
		t.Fatalf("fake controller %s: no agent registered within %s", f.addr, within)
		return nil
	}
}

func (s *fakeStream) send(m *v1.ControllerMessage) {
	s.mu.Lock()
	s.seq++
	m.Seq = s.seq
	s.mu.Unlock()
	s.out <- m
}

func (s *fakeStream) assign(job *v1.Job, lease *v1.LeaseToken) {
	s.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_AssignJob{AssignJob: &v1.JobAssignment{Job: job, Lease: lease}}})
}

func (s *fakeStream) ack(seq uint64) {
	s.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_Ack{Ack: &v1.Ack{Seq: seq}}})
}

// received is one message from the agent and when it arrived.
type received struct {
	*v1.AgentMessage
	at time.Time
}

// await returns the first message of queue that match accepts, dropping
// the ones before it.
func (s *fakeStream) await(t *testing.T, queue chan received, within time.Duration, what string, match func(*v1.AgentMessage) bool) received {
	t.Helper()
	deadline := time.After(testenv.Wait(within))
	for {
		select {
		case m := <-queue:
			if match(m.AgentMessage) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %s from the agent within %s", what, within)
			return received{}
		}
	}
}

func (s *fakeStream) result(t *testing.T, jobID string) *v1.AgentMessage {
	t.Helper()
	return s.await(t, s.results, 30*time.Second, "result of "+jobID, func(m *v1.AgentMessage) bool {
		return m.GetJobResult().GetJobId() == jobID
	}).AgentMessage
}

func (s *fakeStream) heartbeat(t *testing.T, what string, match func(*v1.Heartbeat) bool) received {
	t.Helper()
	return s.await(t, s.heartbeats, 3*time.Second, what, func(m *v1.AgentMessage) bool { return match(m.GetHeartbeat()) })
}

func (s *fakeStream) progressOf(t *testing.T, jobID string) *v1.JobProgressReport {
	t.Helper()
	return s.await(t, s.progress, 10*time.Second, "progress of "+jobID, func(m *v1.AgentMessage) bool {
		return m.GetJobProgress().GetJobId() == jobID
	}).GetJobProgress()
}

// blackHole accepts TCP connections and never says a word: a MySQL server
// that hangs, so a job on it runs until it is cancelled.
func blackHole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	})
	return l.Addr().String()
}

// notGRPC serves something other than gRPC: "http" a plain HTTP/1 server,
// "tcp" a server that writes a line and hangs up.
func notGRPC(t *testing.T, kind string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4096)
				_, _ = c.Read(buf)
				switch kind {
				case "http":
					_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nConnection: close\r\n\r\nbad request"))
				default:
					_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.2p1\r\n"))
				}
			}()
		}
	}()
	return l.Addr().String()
}

// agentRun is an agent running in the background.
type agentRun struct {
	done   chan struct{} // closed when Run returned
	err    error         // Run's error, once done
	cancel context.CancelFunc
}

// wait waits for Run to return by itself.
func (r *agentRun) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(testenv.Wait(within)):
		t.Fatalf("agent's Run did not return within %s", within)
		return nil
	}
}

// runAgent runs the agent until the test ends.
func runAgent(t *testing.T, cfg Config) *agentRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &agentRun{done: make(chan struct{}), cancel: cancel}
	go func() { r.err = Run(ctx, cfg); close(r.done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(testenv.Wait(30 * time.Second)):
			t.Errorf("agent did not stop within 30s")
		}
	})
	return r
}

// testCA issues the credentials of the package's tests: the fake
// controllers serve TLS with a controller certificate, as real ones do.
var (
	testCAOnce sync.Once
	testCAv    *testenv.TestCA
)

func testCA(t testing.TB) *testenv.TestCA {
	testCAOnce.Do(func() { testCAv = testenv.NewTestCA(t) })
	return testCAv
}

// tlsServer is the server option of a fake controller.
func tlsServer(t testing.TB) grpc.ServerOption {
	return grpc.Creds(credentials.NewTLS(testCA(t).Source(t, testenv.Controller("fake")).ServerConfig()))
}

// testConfig is a config for a test agent with short timers.
func testConfig(t *testing.T, name string, controllers ...string) Config {
	cfg := DefaultConfig()
	cfg.Name = name
	cfg.Controllers = controllers
	cfg.TLS = testCA(t).Files(t, testenv.Agent(name))
	cfg.BackoffMin, cfg.BackoffMax = 50*time.Millisecond, 400*time.Millisecond
	cfg.ConnectTimeout = 2 * time.Second
	cfg.ProgressInterval = 200 * time.Millisecond
	cfg.ProbeTimeout = 2 * time.Second
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.Logger = testLogger(t)
	return cfg
}

func lease(job string, term, index uint64) *v1.LeaseToken {
	return &v1.LeaseToken{JobId: job, Term: term, Index: index}
}

func backupJob(id, instance, backupID string) *v1.Job {
	return &v1.Job{Id: id, Kind: v1.JobKind_JOB_KIND_BACKUP, Instance: instance, Attempt: 1,
		Params: &v1.Job_Backup{Backup: &v1.BackupParams{BackupId: backupID, Engine: "auto"}}}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
