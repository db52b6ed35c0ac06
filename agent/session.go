package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/internal/agentlink"
	"github.com/tidemark-backup/tidemark/internal/version"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// session is one registered Connect stream.
type session struct {
	addr      string
	node      string
	stream    v1.AgentService_ConnectClient
	heartbeat time.Duration

	sendMu sync.Mutex // grpc allows one Send at a time
	seq    uint64

	// Guarded by Agent.mu: which job each result sent on this stream is
	// for, and which jobs' results went out on it.
	results map[uint64]*job
	sent    map[*job]bool
	// progressSeq maps the seq of the last progress sent for each job (and
	// back), so an Error about it finds its job.
	progressSeq map[uint64]*job
	progressOf  map[*job]uint64

	leader atomic.Pointer[string] // set when the controller points elsewhere

	// Guarded by Agent.mu: when each Heartbeat (and the Register) was sent,
	// until the controller answers it with LeasesRenewed (lease.go), and
	// the send time of the last one answered.
	sentAt      map[uint64]time.Time
	lastRenewal time.Time

	// registered is what the session last reported of the instances (at
	// Register, then at each re-probe that found a change); only the
	// serve goroutine touches it.
	registered *probed
	// reprobe: the Register carried an old probe (the agent held leases
	// and would not make them wait for a new one); probe at once.
	reprobe bool
}

// send stamps m with the stream's next seq and sends it. before, when set,
// runs with the seq before the message leaves, so an answer cannot arrive
// before the caller has recorded what the seq was.
func (s *session) send(m *v1.AgentMessage, before func(seq uint64)) (uint64, error) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.seq++
	m.Seq = s.seq
	if before != nil {
		before(m.Seq)
	}
	return m.Seq, s.stream.Send(m)
}

// Errors of one attempt to reach a controller; connectLoop decides on them.
type (
	// notControllerError: the address answers, but not as a controller.
	notControllerError struct {
		addr string
		err  error
	}
	// redirectError: a follower named the leader, or the leader stepped
	// down naming its successor (live: after a registered session).
	redirectError struct {
		addr, leader string
		live         bool
	}
	// lostError: a registered session ended.
	lostError struct {
		addr string
		err  error
	}
)

func (e *notControllerError) Error() string {
	return fmt.Sprintf("%s is not a Tidemark controller: %v", e.addr, e.err)
}
func (e *redirectError) Error() string {
	return fmt.Sprintf("%s is not the leader; the leader is %s", e.addr, e.leader)
}
func (e *lostError) Error() string { return fmt.Sprintf("stream to %s lost: %v", e.addr, e.err) }

// maxRedirects bounds the leader hints followed in a row, so two nodes that
// disagree about the leader cannot bounce the agent forever.
const maxRedirects = 3

// connectLoop keeps one session to a controller until ctx ends (it returns
// ctx's error) or a fatal error. A round tries every address once, starting
// after the one that last served, and follows leader hints at once; between
// rounds it waits an exponential backoff with jitter.
func (a *Agent) connectLoop(ctx context.Context) error {
	addrs := a.cfg.Controllers
	start := 0
	backoff := a.cfg.BackoffMin
	for {
		established := false // a session ran and was lost: wait, then a new round
		hadSession := false  // a session ran (lost, or redirected)
		var notCtl []string
		redirects := 0
		queue := append(slices.Clone(addrs[start:]), addrs[:start]...)
		for len(queue) > 0 && !established {
			addr := queue[0]
			queue = queue[1:]
			err := a.session(ctx, addr)
			if ctx.Err() != nil {
				return ctx.Err() // stopped: whatever the session said is moot
			}
			var (
				fatal *FatalError
				nc    *notControllerError
				rd    *redirectError
				lost  *lostError
			)
			switch {
			case errors.As(err, &fatal):
				return err
			case errors.As(err, &lost):
				established, hadSession = true, true
				if k := slices.Index(addrs, addr); k >= 0 {
					start = (k + 1) % len(addrs)
				}
				a.log.Warn("controller stream lost; reconnecting", "controller", addr, "err", lost.err)
			case errors.As(err, &rd):
				a.log.Info("controller is not the leader; following its hint", "controller", addr, "leader", rd.leader)
				hadSession = hadSession || rd.live
				if redirects < maxRedirects && rd.leader != addr {
					redirects++
					queue = append([]string{rd.leader}, queue...)
				}
			case errors.As(err, &nc):
				a.log.Error("controller address does not answer as a Tidemark controller", "controller", addr, "err", nc.err)
				if slices.Contains(addrs, addr) {
					notCtl = append(notCtl, fmt.Sprintf("%s: %v", addr, nc.err))
				}
			default:
				a.log.Warn("controller unreachable", "controller", addr, "err", err)
			}
		}
		if hadSession {
			backoff = a.cfg.BackoffMin
		}
		if !established {
			if len(notCtl) == len(addrs) {
				return &FatalError{Msg: fmt.Sprintf("no Tidemark controller at %s: %s; check --controller (the controller's gRPC address)",
					strings.Join(addrs, ", "), strings.Join(notCtl, "; "))}
			}
			start = (start + 1) % len(addrs)
		}
		// Jitter spreads the reconnects of a whole fleet after a controller
		// restart: wait between half and all of the backoff.
		backoff = min(backoff, a.backoffMax())
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		if !established {
			backoff = min(2*backoff, a.backoffMax())
		}
	}
}

// backoffMax is the longest wait between two rounds of reconnect attempts:
// the configured one, capped at agentlink.BackoffMax while the agent holds
// a lease (a running job, or a result not acknowledged yet), so that it is
// back well within the first lease window a new leader gives it.
func (a *Agent) backoffMax() time.Duration {
	if a.runningCount() > 0 {
		return min(a.cfg.BackoffMax, agentlink.BackoffMax)
	}
	return a.cfg.BackoffMax
}

// session connects to addr, registers, and serves the stream until it ends.
// It returns a *lostError if it was registered, else why registration
// failed.
func (a *Agent) session(ctx context.Context, addr string) error {
	p, reprobe := a.registrationProbe(ctx)
	// Keepalive: a leader that dies silently (power loss, a frozen VM)
	// leaves the connection open; its unanswered ping ends the session
	// within agentlink.Detection instead of when TCP gives up.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(a.transport()), grpc.WithKeepaliveParams(agentlink.ClientParameters()))
	if err != nil {
		return &notControllerError{addr, err}
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var timedOut atomic.Bool
	timer := time.AfterFunc(a.cfg.ConnectTimeout, func() { timedOut.Store(true); cancel() })
	fail := func(err error) error {
		timer.Stop()
		if timedOut.Load() {
			return fmt.Errorf("%s: no answer to Register within %s: %w", addr, a.cfg.ConnectTimeout, err)
		}
		return classify(addr, err)
	}
	stream, err := v1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		return fail(err)
	}
	s := &session{addr: addr, stream: stream, results: map[uint64]*job{}, sent: map[*job]bool{},
		progressSeq: map[uint64]*job{}, progressOf: map[*job]uint64{}, reprobe: reprobe, sentAt: map[uint64]time.Time{}}
	reg := &v1.Register{
		Name: a.cfg.Name, Labels: a.cfg.Labels, Capabilities: p.host, Instances: p.instances,
		AgentVersion: version.Get().Version, Running: a.runningJobs(), RenewalAcks: true,
	}
	if _, err := s.send(&v1.AgentMessage{Msg: &v1.AgentMessage_Register{Register: reg}}, a.noteSent(s)); err != nil {
		return fail(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return fail(err)
	}
	timer.Stop()
	if timedOut.Load() {
		return fmt.Errorf("%s: no answer to Register within %s", addr, a.cfg.ConnectTimeout)
	}
	switch m := first.GetMsg().(type) {
	case *v1.ControllerMessage_Registered:
		s.heartbeat = m.Registered.GetHeartbeatInterval().AsDuration()
		s.node = m.Registered.GetControllerNode()
		a.mu.Lock()
		a.relayRepo = m.Registered.GetRelayRepositoryUri()
		a.mu.Unlock()
		a.setLeaseTerms(s, m.Registered)
		if s.heartbeat <= 0 {
			s.heartbeat = a.cfg.HeartbeatInterval
		}
		a.log.Info("registered with controller", "controller", addr, "node", s.node, "agent_id", m.Registered.GetAgentId(),
			"heartbeat", s.heartbeat, "lease", m.Registered.GetLeaseDuration().AsDuration(), "running_jobs", len(reg.Running))
	case *v1.ControllerMessage_Error:
		return a.registerRefused(addr, m.Error)
	default:
		return fmt.Errorf("%s answered Register with %T instead of Registered", addr, first.GetMsg())
	}
	s.registered = p
	a.mu.Lock()
	a.sess = s
	a.mu.Unlock()
	err = a.serve(ctx, cancel, s)
	a.mu.Lock()
	a.sess = nil
	a.mu.Unlock()
	if leader := s.leader.Load(); leader != nil {
		return &redirectError{addr, *leader, true}
	}
	return &lostError{addr, err}
}

// registerRefused turns the controller's answer to a Register into the
// connect loop's verdict.
func (a *Agent) registerRefused(addr string, e *v1.Error) error {
	msg := e.GetMessage()
	switch e.GetCode() {
	case codeAlreadyExists:
		return &FatalError{Msg: fmt.Sprintf("agent name %q is already connected: another live agent holds it (controller %s: %s); choose another --name",
			a.cfg.Name, addr, msg)}
	case codeFailedPrecondition:
		// A follower; without a hint (no leader known) the next address
		// may know better.
		if l := leaderHint(e); l != "" {
			return &redirectError{addr, l, false}
		}
		return fmt.Errorf("%s is not the leader and knows none: %s", addr, msg)
	case codeUnavailable:
		return fmt.Errorf("%s has no leader right now (election or no quorum): %s", addr, msg)
	case codeInvalidArgument, codePermissionDenied, codeUnauthenticated:
		return &FatalError{Msg: fmt.Sprintf("controller %s refused agent %q: %s", addr, a.cfg.Name, msg)}
	}
	return fmt.Errorf("%s refused registration (code %d): %s", addr, e.GetCode(), msg)
}

// leaderHint returns the leader's gRPC address from a follower's answer
// (empty when the follower knows none).
func leaderHint(e *v1.Error) string { return strings.TrimSpace(e.GetLeader()) }

// classify sorts an error from the stream before registration: an address
// that speaks something other than gRPC, or gRPC without the agent
// service, is not a controller; anything else may pass.
func classify(addr string, err error) error {
	st, _ := status.FromError(err)
	msg := st.Message()
	switch st.Code() {
	case codes.Unimplemented:
		return &notControllerError{addr, fmt.Errorf("a gRPC server without the Tidemark agent service (%s)", msg)}
	case codes.Unauthenticated, codes.PermissionDenied:
		return &FatalError{Msg: fmt.Sprintf("controller %s refused the agent: %s", addr, msg)}
	case codes.Unavailable, codes.Internal, codes.Unknown:
		if strings.Contains(msg, "first record does not look like a TLS handshake") {
			return &notControllerError{addr, errors.New("it does not speak TLS (plaintext: a controller started with --insecure? then give the agent --insecure too)")}
		}
		if i := max(strings.Index(msg, "tls: "), strings.Index(msg, "x509: ")); i >= 0 {
			return &notControllerError{addr, fmt.Errorf("TLS handshake failed: %s (is the agent's certificate from the cluster's CA, unexpired, and are the clocks right?)", strings.TrimSuffix(msg[i:], `"`))}
		}
		if strings.Contains(msg, "HTTP/1") || strings.Contains(msg, "unexpected HTTP status") || strings.Contains(msg, "content-type") {
			return &notControllerError{addr, fmt.Errorf("an HTTP server, not gRPC (%s)", msg)}
		}
		for _, sign := range []string{"server preface", "http2:", "malformed", "frame too large", "tls:"} {
			if strings.Contains(msg, sign) {
				return &notControllerError{addr, fmt.Errorf("does not speak gRPC (%s)", msg)}
			}
		}
	}
	return fmt.Errorf("%s: %w", addr, err)
}

// serve runs a registered session: heartbeats, results, and the messages
// the controller sends. It returns when the stream ends or ctx does, after
// cancelling the stream (cancel) and waiting for the receive goroutine, so
// no controller message is handled once serve has returned.
func (a *Agent) serve(ctx context.Context, cancel context.CancelFunc, s *session) error {
	recvErr := make(chan error, 1)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			m, err := s.stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			a.handle(s, m)
		}
	}()
	defer func() { cancel(); <-recvDone }()
	hb := time.NewTicker(s.heartbeat)
	defer hb.Stop()
	// Periodic re-probe: a change (datadir moved, plugin installed, server
	// upgraded, tool replaced) is reported with a Register on the live
	// stream, so engine selection re-decides without a reconnect. The
	// probe runs beside the loop: it queries the servers and may be slow.
	rp := time.NewTicker(a.cfg.ReprobeInterval)
	defer rp.Stop()
	reprobed := make(chan *probed, 1)
	probing := false
	if s.reprobe {
		probing = true
		go func() { reprobed <- a.reprobe(ctx) }()
	}
	a.resendProgress()
	err := a.flushResults(s)
	for err == nil {
		select {
		case <-rp.C:
			if !probing {
				probing = true
				go func() { reprobed <- a.reprobe(ctx) }()
			}
		case p := <-reprobed:
			probing = false
			if changed(s.registered, p) {
				_, err = s.send(&v1.AgentMessage{Msg: &v1.AgentMessage_Register{Register: &v1.Register{
					Name: a.cfg.Name, Labels: a.cfg.Labels, Capabilities: p.host, Instances: p.instances, AgentVersion: version.Get().Version,
				}}}, nil)
				if err == nil {
					s.registered = p
					a.log.Info("capabilities changed; reported to the controller", "controller", s.addr)
				}
			}
		case <-ctx.Done():
			_ = s.stream.CloseSend()
			return ctx.Err()
		case err = <-recvErr:
			return err
		case <-hb.C:
			_, err = s.send(&v1.AgentMessage{Msg: &v1.AgentMessage_Heartbeat{Heartbeat: &v1.Heartbeat{Running: a.runningJobs()}}}, a.noteSent(s))
			if err == nil {
				err = a.flushResults(s)
			}
		case <-a.wake:
			err = a.flushResults(s)
		}
		if s.leader.Load() != nil {
			return errors.New("controller redirected the agent to the leader")
		}
	}
	return err
}

// resendProgress sends, on a new session, the latest progress of every job
// still running: progress is sent only when it changes, and a new leader
// knows none of it (nor, if the old leader died before committing it, that
// the job started), so the job's state resumes at once instead of at its
// next change.
func (a *Agent) resendProgress() {
	a.mu.Lock()
	var running []*job
	for _, j := range a.jobs {
		if j.result == nil && !j.superseded && j.progress.Load() != nil {
			running = append(running, j)
		}
	}
	a.mu.Unlock()
	for _, j := range running {
		a.sendProgress(j, j.progress.Load())
	}
}

// flushResults sends every result that is ready and not yet sent on s.
func (a *Agent) flushResults(s *session) error {
	a.mu.Lock()
	var ready []*job
	for _, j := range a.jobs {
		if j.result != nil && !j.superseded && !s.sent[j] {
			ready = append(ready, j)
		}
	}
	a.mu.Unlock()
	for _, j := range ready {
		seq, err := s.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: j.result}}, func(seq uint64) {
			a.mu.Lock()
			s.results[seq] = j
			s.sent[j] = true
			a.mu.Unlock()
		})
		if err != nil {
			return err
		}
		a.log.Info("job result sent", "job", j.id, "ok", j.result.GetOk(), "seq", seq)
	}
	return nil
}

// handle acts on one controller message; it runs on the receive goroutine.
func (a *Agent) handle(s *session, m *v1.ControllerMessage) {
	switch msg := m.GetMsg().(type) {
	case *v1.ControllerMessage_AssignJob:
		a.assign(msg.AssignJob)
	case *v1.ControllerMessage_CancelJob:
		a.cancelJob(msg.CancelJob)
	case *v1.ControllerMessage_Ack:
		a.mu.Lock()
		j := s.results[msg.Ack.GetSeq()]
		delete(s.results, msg.Ack.GetSeq())
		a.mu.Unlock()
		if j != nil {
			a.resultAcked(j)
		}
	case *v1.ControllerMessage_Error:
		a.handleError(s, msg.Error)
	case *v1.ControllerMessage_LeasesRenewed:
		a.leasesRenewed(s, msg.LeasesRenewed)
	case *v1.ControllerMessage_Registered:
		a.log.Warn("controller sent Registered again; ignored", "controller", s.addr)
	default:
		a.log.Warn("unknown message from the controller; ignored (is the agent older than the controller?)", "type", fmt.Sprintf("%T", m.GetMsg()))
	}
}

// handleError acts on an Error: about a result, a progress report, or the
// whole session.
func (a *Agent) handleError(s *session, e *v1.Error) {
	a.mu.Lock()
	rj := s.results[e.GetSeq()]
	delete(s.results, e.GetSeq())
	if rj != nil && retryable(e.GetCode()) {
		delete(s.sent, rj) // resent with the next heartbeat
	}
	pj := s.progressSeq[e.GetSeq()]
	a.mu.Unlock()
	if rj != nil {
		a.resultRefused(rj, e)
		return
	}
	if pj != nil && e.GetCode() == codeFailedPrecondition {
		// The controller no longer holds this attempt's lease: whatever it
		// finishes would be refused as stale, so stop now.
		a.log.Warn("controller refused the job's progress: its lease is no longer valid; stopping the job",
			"job", pj.id, "lease", leaseString(pj.lease), "message", e.GetMessage())
		pj.cancel(fmt.Errorf("lease %s lost: %s", leaseString(pj.lease), e.GetMessage()))
		return
	}
	if e.GetSeq() == 0 && e.GetCode() == codeFailedPrecondition {
		// The leader stepped down and is closing the stream; go straight to
		// the new leader when it named one (else the stream's end makes
		// the connect loop try every address).
		a.log.Warn("controller stepped down", "controller", s.addr, "leader", e.GetLeader(), "message", e.GetMessage())
		if l := leaderHint(e); l != "" {
			s.leader.Store(&l)
			a.kick()
		}
		return
	}
	a.log.Warn("controller rejected a message", "seq", e.GetSeq(), "code", e.GetCode(), "message", e.GetMessage())
}
