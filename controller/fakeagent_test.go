package controller_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// fakeAgent speaks the agent side of AgentService.Connect the way
// controller/PROTOCOL.md describes it, with every step under the test's
// control: it is the double the controller tests use in place of the real
// agent daemon (which has its own tests against its own double).
type fakeAgent struct {
	t      *testing.T
	name   string
	addr   string // the controller that accepted the session
	cc     *grpc.ClientConn
	stream v1.AgentService_ConnectClient
	cancel context.CancelFunc
	reg    *v1.Registered

	sendMu sync.Mutex
	seq    uint64

	mu      sync.Mutex
	msgs    []*v1.ControllerMessage
	used    []bool
	changed chan struct{}
	ended   error

	hbMu    sync.Mutex
	paused  bool
	running map[string]*v1.LeaseToken
	streams map[string]*v1.StreamReport // binlog stream reports sent with the heartbeats
}

// connectAgent registers name with the cluster at addrs: it tries each
// address and follows a follower's leader hint, like the real agent.
func connectAgent(t *testing.T, addrs []string, name string, running ...*v1.RunningJob) (*fakeAgent, error) {
	t.Helper()
	return connectAgentLabeled(t, addrs, name, nil, running...)
}

// connectAgentLabeled is connectAgent for an agent with labels besides
// dc=test (e.g. cluster=NAME, which makes its instance one of a group).
func connectAgentLabeled(t *testing.T, addrs []string, name string, labels map[string]string, running ...*v1.RunningJob) (*fakeAgent, error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	tried := map[string]int{}
	queue := append([]string(nil), addrs...)
	var last error
	for time.Now().Before(deadline) {
		if len(queue) == 0 {
			queue = append(queue, addrs...)
			time.Sleep(100 * time.Millisecond)
		}
		addr := queue[0]
		queue = queue[1:]
		tried[addr]++
		a, leader, err := tryAgent(t, addr, name, labels, running)
		if err == nil {
			return a, nil
		}
		last = err
		var refused *refusedError
		if errors.As(err, &refused) && refused.e.GetCode() == 6 {
			return nil, err // ALREADY_EXISTS is final
		}
		if leader != "" {
			queue = append([]string{leader}, queue...)
		}
	}
	return nil, fmt.Errorf("agent %s could not register (tried %v): %w", name, tried, last)
}

type refusedError struct{ e *v1.Error }

func (r *refusedError) Error() string {
	return fmt.Sprintf("refused: code %d: %s (leader %q)", r.e.GetCode(), r.e.GetMessage(), r.e.GetLeader())
}

func tryAgent(t *testing.T, addr, name string, labels map[string]string, running []*v1.RunningJob) (*fakeAgent, string, error) {
	return tryAgentWith(t, addr, name, agentCreds(t, name), labels, running)
}

// tryAgentWith is tryAgent presenting creds.
func tryAgentWith(t *testing.T, addr, name string, creds credentials.TransportCredentials, labels map[string]string, running []*v1.RunningJob) (*fakeAgent, string, error) {
	return tryAgentCaps(t, addr, name, creds, labels, running, &v1.Capabilities{Flavor: "mariadb", Version: "10.11.6"})
}

// tryAgentCaps is tryAgentWith reporting caps.
func tryAgentCaps(t *testing.T, addr, name string, creds credentials.TransportCredentials, labels map[string]string, running []*v1.RunningJob, caps *v1.Capabilities) (*fakeAgent, string, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, "", err
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := v1.NewAgentServiceClient(cc).Connect(ctx)
	if err != nil {
		cancel()
		_ = cc.Close()
		return nil, "", err
	}
	a := &fakeAgent{t: t, name: name, addr: addr, cc: cc, stream: stream, cancel: cancel, changed: make(chan struct{}), running: map[string]*v1.LeaseToken{},
		streams: map[string]*v1.StreamReport{}}
	for _, r := range running {
		a.running[r.GetJobId()] = r.GetLease()
	}
	all := map[string]string{"dc": "test"}
	maps.Copy(all, labels)
	a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_Register{Register: &v1.Register{
		Name: name, Labels: all, Running: running,
		Capabilities: caps,
	}}})
	first, err := stream.Recv()
	if err != nil {
		a.close()
		return nil, "", err
	}
	if e := first.GetError(); e != nil {
		a.close()
		return nil, e.GetLeader(), &refusedError{e}
	}
	a.reg = first.GetRegistered()
	if a.reg == nil {
		a.close()
		return nil, "", fmt.Errorf("first answer %v is neither Registered nor Error", first)
	}
	go a.recvLoop()
	go a.heartbeatLoop(ctx)
	return a, "", nil
}

func (a *fakeAgent) send(m *v1.AgentMessage) uint64 {
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	a.seq++
	m.Seq = a.seq
	// A send on an ended stream fails; the receive side reports why.
	_ = a.stream.Send(m)
	return m.Seq
}

func (a *fakeAgent) recvLoop() {
	for {
		m, err := a.stream.Recv()
		a.mu.Lock()
		if err != nil {
			a.ended = err
		} else {
			a.msgs = append(a.msgs, m)
			a.used = append(a.used, false)
		}
		close(a.changed)
		a.changed = make(chan struct{})
		a.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// heartbeatLoop heartbeats with the running set until paused (a stopped
// process) or closed.
func (a *fakeAgent) heartbeatLoop(ctx context.Context) {
	iv := a.reg.GetHeartbeatInterval().AsDuration()
	tick := time.NewTicker(iv)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		a.hbMu.Lock()
		if a.paused {
			a.hbMu.Unlock()
			continue
		}
		hb := &v1.Heartbeat{}
		for id, l := range a.running {
			hb.Running = append(hb.Running, &v1.RunningJob{JobId: id, Lease: l, Stream: a.streams[id]})
		}
		a.hbMu.Unlock()
		a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_Heartbeat{Heartbeat: hb}})
	}
}

func (a *fakeAgent) pause(p bool) {
	a.hbMu.Lock()
	a.paused = p
	a.hbMu.Unlock()
}

func (a *fakeAgent) setRunning(jobID string, l *v1.LeaseToken) {
	a.hbMu.Lock()
	defer a.hbMu.Unlock()
	if l == nil {
		delete(a.running, jobID)
	} else {
		a.running[jobID] = l
	}
}

// setStream sets the stream report the heartbeats carry for a job.
func (a *fakeAgent) setStream(jobID string, r *v1.StreamReport) {
	a.hbMu.Lock()
	defer a.hbMu.Unlock()
	a.streams[jobID] = r
}

func (a *fakeAgent) close() {
	a.cancel()
	_ = a.cc.Close()
}

// expect waits for the first message not yet consumed that match accepts.
func (a *fakeAgent) expect(what string, d time.Duration, match func(*v1.ControllerMessage) bool) *v1.ControllerMessage {
	a.t.Helper()
	m, err := a.wait(d, match)
	if err != nil {
		a.t.Fatalf("agent %s: waiting for %s: %v", a.name, what, err)
	}
	return m
}

func (a *fakeAgent) wait(d time.Duration, match func(*v1.ControllerMessage) bool) (*v1.ControllerMessage, error) {
	deadline := time.After(d)
	for {
		a.mu.Lock()
		for i, m := range a.msgs {
			if !a.used[i] && match(m) {
				a.used[i] = true
				a.mu.Unlock()
				return m, nil
			}
		}
		ch, ended := a.changed, a.ended
		a.mu.Unlock()
		if ended != nil {
			return nil, fmt.Errorf("stream ended: %w", ended)
		}
		select {
		case <-ch:
		case <-deadline:
			return nil, fmt.Errorf("nothing after %s", d)
		}
	}
}

// streamEnded waits until the controller closes the stream.
func (a *fakeAgent) streamEnded(d time.Duration) error {
	_, err := a.wait(d, func(*v1.ControllerMessage) bool { return false })
	if err != nil && err.Error() == fmt.Sprintf("nothing after %s", d) {
		return nil
	}
	return err
}

func (a *fakeAgent) assignment(d time.Duration) *v1.JobAssignment {
	a.t.Helper()
	m := a.expect("a job assignment", d, func(m *v1.ControllerMessage) bool { return m.GetAssignJob() != nil })
	asg := m.GetAssignJob()
	a.setRunning(asg.GetJob().GetId(), asg.GetLease())
	return asg
}

func (a *fakeAgent) progress(asg *v1.JobAssignment, done uint64) {
	a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobProgress{JobProgress: &v1.JobProgressReport{
		JobId: asg.GetJob().GetId(), Lease: asg.GetLease(), Progress: &v1.JobProgress{BytesDone: done, BytesTotal: 1000, Phase: "dumping"},
	}}})
}

// succeed reports a backup attempt as written, under lease l, and returns
// the answer (Ack or Error).
func (a *fakeAgent) succeed(asg *v1.JobAssignment, l *v1.LeaseToken) *v1.ControllerMessage {
	a.t.Helper()
	bid := asg.GetJob().GetBackup().GetBackupId()
	seq := a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: &v1.JobResultReport{
		JobId: asg.GetJob().GetId(), Lease: l, Ok: true, BackupId: bid, ManifestKey: "manifests/" + bid,
		RepositoryUri: "file:///backups",
		Manifest: &v1.Manifest{
			BackupId: bid, Instance: asg.GetJob().GetInstance(), Engine: "logical", Fence: l,
			LogicalBytes: 1000, StoredBytes: 400, Consistency: &v1.ConsistencyPoint{BinlogFile: "bin.000001", BinlogPosition: 42},
		},
	}}})
	return a.answer(seq)
}

// answer waits for the Ack or Error of message seq.
func (a *fakeAgent) answer(seq uint64) *v1.ControllerMessage {
	a.t.Helper()
	return a.expect(fmt.Sprintf("the answer to message %d", seq), 10*time.Second, func(m *v1.ControllerMessage) bool {
		return (m.GetAck() != nil && m.GetAck().GetSeq() == seq) || (m.GetError() != nil && m.GetError().GetSeq() == seq)
	})
}
