package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/fsm"
	"github.com/tidemark-backup/tidemark/engines/selection"
	"github.com/tidemark-backup/tidemark/internal/metrics"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// agentHub is the leader's side of every agent: the sessions (one Connect
// stream each), the lease timers and the jobs' latest progress. All of it
// is in memory and exists only while the node leads; the catalog, through
// Raft, gets only state changes.
type agentHub struct {
	node      hubNode
	log       *slog.Logger
	nodeID    string
	ttl       time.Duration // lease duration: of job leases and of silent sessions
	grace     time.Duration // Config.TakeoverGrace: added to the inherited leases' first window
	heartbeat time.Duration
	relayRepo string // this node's --repo, told to agents in Registered
	metrics   *metrics.Registry
	// logicalBelow is Config.LogicalBelow, for the decisions recorded at
	// registration.
	logicalBelow uint64

	mu      sync.Mutex
	leading bool
	// leadingSince is when this node's leadership was established: agents
	// get one lease and the takeover grace from then to reconnect before a
	// group's stream moves off theirs (streamStandIn).
	leadingSince time.Time
	// streamExpired: stream jobs whose lease ran out on this leader, with
	// the agent that held it: that agent had its full window, so the
	// stream may move at once.
	streamExpired map[string]string
	sessions      map[string]*session // by agent name
	leases        map[string]*lease   // by job id
	progress      map[string]*v1.JobProgress
	// streams holds the latest report of every binlog stream job, by job
	// id, as heartbeats bring it; commitStreams writes the ones that moved.
	streams     map[string]*streamLatest
	commitEvery time.Duration
	// progressed is closed (and replaced) whenever progress changes, so
	// WatchJob wakes up without polling.
	progressed chan struct{}
	kick       chan struct{}

	// afterExpire, when set (tests only), runs in expire between the
	// ExpireLease entry and the dropping of the expired lease's timer:
	// where a reassignment can slip in.
	afterExpire func(jobID string)
}

// hubNode is what the agent hub needs of its node. apply is called from
// session goroutines, lease timers and the assigner at once, and blocks
// until the command is applied here or fails (at most the apply timeout);
// catalog returns the current store (a snapshot restore replaces it).
type hubNode interface {
	apply(ctx context.Context, cmd *v1.Command) (*fsm.Response, error)
	catalog() *catalog.Store
	// term is the current Raft term, stamped into new leases.
	term() uint64
	// memberAddr is a controller node's gRPC address, "" when unknown.
	memberAddr(id string) string
}

func newAgentHub(node hubNode, nodeID string, cfg Config) *agentHub {
	return &agentHub{
		node: node, log: cfg.Logger.With("node", nodeID), nodeID: nodeID, ttl: cfg.LeaseDuration, grace: cfg.TakeoverGrace, heartbeat: cfg.HeartbeatInterval,
		relayRepo: cfg.Repo, metrics: cfg.Metrics, logicalBelow: cfg.LogicalBelow, sessions: map[string]*session{}, leases: map[string]*lease{}, progress: map[string]*v1.JobProgress{},
		streams: map[string]*streamLatest{}, streamExpired: map[string]string{}, commitEvery: cfg.WatermarkCommitInterval,
		progressed: make(chan struct{}), kick: make(chan struct{}, 1),
	}
}

// establish starts the leader's work on agents: every assigned or running
// job gets a lease timer of one full lease plus the takeover grace from
// now, so agents have the time to notice the old leader is gone (keepalive),
// reconnect to this one and renew (PROTOCOL.md, "Leadership change").
func (h *agentHub) establish() {
	jobs := h.node.catalog().Read().ActiveJobs()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.leading = true
	h.leadingSince = time.Now()
	n := 0
	for _, j := range jobs {
		if j.GetLease() != nil && j.GetState() != v1.JobState_JOB_STATE_PENDING {
			h.armLease(j.GetId(), j.GetLease(), j.GetAgent(), h.ttl+h.grace)
			n++
		}
	}
	h.log.Info("leadership established", "leases", n, "first_window", h.ttl+h.grace)
}

// revoke ends the leader's work: lease timers stop and every agent session
// is closed with an Error naming the leader (if known), so agents go there.
func (h *agentHub) revoke(leaderID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.leading = false
	for id, l := range h.leases {
		l.timer.Stop()
		delete(h.leases, id)
	}
	clear(h.progress)
	clear(h.streams)
	clear(h.streamExpired)
	addr := ""
	if leaderID != "" && leaderID != h.nodeID {
		addr = h.node.memberAddr(leaderID)
	}
	for name, ss := range h.sessions {
		ss.closeWith(errorMsg(0, codes.FailedPrecondition, fmt.Sprintf("controller %s is no longer the leader", h.nodeID), leaderID, addr),
			errors.New("this node is no longer the leader"))
		delete(h.sessions, name)
	}
}

func (h *agentHub) isLeading() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.leading
}

// sessionCount is the number of live agent sessions.
func (h *agentHub) sessionCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

// session returns the live session of an agent, or nil.
func (h *agentHub) session(agent string) *session {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ss := h.sessions[agent]; ss != nil && ss.live(h.ttl) {
		return ss
	}
	return nil
}

// agentState is what ListAgents adds to the catalog's record.
func (h *agentHub) agentState(agent string) (connected bool, lastSeen time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ss := h.sessions[agent]; ss != nil {
		return ss.live(h.ttl), time.Unix(0, ss.lastSeen.Load())
	}
	return false, time.Time{}
}

func (h *agentHub) kickAssigner() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// setProgress records a job's progress (nil forgets it) and wakes watchers.
func (h *agentHub) setProgress(jobID string, p *v1.JobProgress) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p == nil {
		delete(h.progress, jobID)
		delete(h.streams, jobID) // the attempt is over; a new one reports afresh
	} else {
		h.progress[jobID] = p
	}
	close(h.progressed)
	h.progressed = make(chan struct{})
}

// overlay returns j with what only the leader's memory knows: the latest
// progress and the lease deadline as heartbeats moved it. j is not changed.
func (h *agentHub) overlay(j *v1.Job) (*v1.Job, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := h.progressed
	p := h.progress[j.GetId()]
	if st := h.streams[j.GetId()]; st != nil && catalog.SameLease(st.lease, j.GetLease()) {
		// A stream's heartbeat report is newer and says more than the
		// progress it sent when it started.
		p = streamProgress(st.report, st.at)
	}
	l := h.leases[j.GetId()]
	if p == nil && (l == nil || !catalog.SameLease(l.token, j.GetLease())) {
		return j, ch
	}
	j = proto.CloneOf(j)
	if p != nil {
		j.Progress = p
	}
	if l != nil && catalog.SameLease(l.token, j.GetLease()) {
		j.LeaseDeadline = timestampOf(l.deadline)
	}
	return j, ch
}

// session is one agent's Connect stream on the leader.
type session struct {
	hub      *agentHub
	name     string
	addr     string
	out      chan *v1.ControllerMessage
	seq      atomic.Uint64
	lastSeen atomic.Int64 // unix nanoseconds of the last message received
	ctx      context.Context
	cancel   context.CancelCauseFunc
	// drain asks the sender to flush the queue and end the session.
	drain     chan struct{}
	drainOnce sync.Once
	cause     error
	watchdog  *time.Timer
	// renewalAcks: the agent asked for LeasesRenewed (Register).
	renewalAcks bool
}

func (h *agentHub) newSession(ctx context.Context, name, addr string) *session {
	ctx, cancel := context.WithCancelCause(ctx)
	ss := &session{hub: h, name: name, addr: addr, out: make(chan *v1.ControllerMessage, 256), ctx: ctx, cancel: cancel, drain: make(chan struct{})}
	ss.lastSeen.Store(time.Now().UnixNano())
	ss.watchdog = time.AfterFunc(h.ttl, func() {
		h.log.Warn("agent stopped heartbeating; closing its session", "agent", name, "addr", addr, "silent_for", h.ttl)
		ss.closeWith(errorMsg(0, codes.Unavailable, fmt.Sprintf("no message from agent %s for %s: session closed", name, h.ttl), "", ""),
			fmt.Errorf("agent %s sent nothing for %s", name, h.ttl))
		h.forget(ss)
	})
	return ss
}

// live: the stream is open and the agent spoke within one lease.
func (ss *session) live(ttl time.Duration) bool {
	return ss.ctx.Err() == nil && time.Since(time.Unix(0, ss.lastSeen.Load())) < ttl
}

func (ss *session) touch() {
	ss.lastSeen.Store(time.Now().UnixNano())
	ss.watchdog.Reset(ss.hub.ttl)
}

// send queues a message. A session whose queue is full is too slow to keep:
// it is closed and the agent reconnects.
func (ss *session) send(m *v1.ControllerMessage) {
	m.Seq = ss.seq.Add(1)
	select {
	case ss.out <- m:
	case <-ss.ctx.Done():
	default:
		ss.closeWith(nil, errors.New("send queue full"))
	}
}

// closeWith queues a last message (if any) and ends the session once the
// queue is flushed.
func (ss *session) closeWith(last *v1.ControllerMessage, cause error) {
	ss.drainOnce.Do(func() {
		ss.cause = cause
		if last != nil {
			last.Seq = ss.seq.Add(1)
			select {
			case ss.out <- last:
			default:
			}
		}
		close(ss.drain)
	})
}

// forget removes ss from the sessions if it is still the agent's.
func (h *agentHub) forget(ss *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sessions[ss.name] == ss {
		delete(h.sessions, ss.name)
	}
}

// cut ends the named agent's session, if it has one here, telling it why
// (PermissionDenied: it is not to come back). It reports whether there was
// one.
func (h *agentHub) cut(name, why string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	ss, ok := h.sessions[name]
	if !ok {
		return false
	}
	ss.closeWith(errorMsg(0, codes.PermissionDenied, why, "", ""), errors.New(why))
	delete(h.sessions, name)
	return true
}

func errorMsg(seq uint64, code codes.Code, msg, leaderID, leaderAddr string) *v1.ControllerMessage {
	return &v1.ControllerMessage{Msg: &v1.ControllerMessage_Error{Error: &v1.Error{
		Seq: seq, Code: int32(code), Message: msg, Leader: leaderAddr, LeaderId: leaderID,
	}}}
}

// agentService is AgentService on every node; only the leader keeps
// sessions.
type agentService struct {
	v1.UnimplementedAgentServiceServer
	s *Server
}

// Connect runs one agent session; see the protocol comment in agent.proto.
func (a *agentService) Connect(stream v1.AgentService_ConnectServer) error {
	s, h := a.s, a.s.agents
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	reg := first.GetRegister()
	if reg == nil {
		return stream.Send(errorMsg(first.GetSeq(), codes.InvalidArgument, "the first message of a Connect stream must be Register", "", ""))
	}
	if id := callerOf(stream.Context()); s.tls != nil && (id.Kind != tlsx.KindAgent || id.Name != reg.GetName()) {
		return stream.Send(errorMsg(first.GetSeq(), codes.PermissionDenied,
			fmt.Sprintf("the certificate names %s, but it registered as agent %q: an agent registers under the name its certificate carries", id, reg.GetName()), "", ""))
	}
	if !s.isLeader() {
		id, addr := s.leader()
		if id == "" || id == s.id.NodeID {
			return stream.Send(errorMsg(first.GetSeq(), codes.Unavailable,
				fmt.Sprintf("controller %s knows no leader (election under way or no quorum); retry", s.id.NodeID), "", ""))
		}
		return stream.Send(errorMsg(first.GetSeq(), codes.FailedPrecondition,
			fmt.Sprintf("controller %s is a follower; the leader is %s at %s", s.id.NodeID, id, addr), id, addr))
	}
	addr := ""
	if p, ok := peer.FromContext(stream.Context()); ok {
		addr = p.Addr.String()
	}
	ss, err := h.register(stream.Context(), first.GetSeq(), reg, addr)
	if err != nil {
		code := codeOf(err)
		if errors.Is(err, catalog.ErrConflict) {
			// An instance owned by another agent: retrying cannot help.
			code = codes.InvalidArgument
		}
		return stream.Send(errorMsg(first.GetSeq(), code, status.Convert(toStatus(err)).Message(), "", ""))
	}
	defer h.forget(ss)
	defer ss.watchdog.Stop()

	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				ss.closeWith(nil, fmt.Errorf("stream from agent %s ended: %w", ss.name, err))
				return
			}
			ss.touch()
			h.handle(ss, m)
		}
	}()
	for {
		select {
		case m := <-ss.out:
			if err := stream.Send(m); err != nil {
				ss.cancel(err)
				return err
			}
		case <-ss.drain:
			for {
				select {
				case m := <-ss.out:
					if err := stream.Send(m); err != nil {
						ss.cancel(err)
						return err
					}
				default:
					ss.cancel(ss.cause)
					s.log.Info("agent session ended", "agent", ss.name, "cause", ss.cause)
					return status.Error(codes.Unavailable, ss.cause.Error())
				}
			}
		case <-stream.Context().Done():
			ss.cancel(stream.Context().Err())
			return stream.Context().Err()
		}
	}
}

// register opens a session for a Register: it refuses a name held by a
// live agent, writes RegisterAgent (with the instances, one named after the
// agent by default), answers Registered, reconciles the jobs the agent says
// it runs and re-sends assignments it may have missed.
func (h *agentHub) register(ctx context.Context, seq uint64, reg *v1.Register, addr string) (*session, error) {
	name := reg.GetName()
	if name == "" {
		return nil, invalid("Register needs the agent's name")
	}
	h.mu.Lock()
	if !h.leading {
		h.mu.Unlock()
		return nil, catalog.Errorf(ErrNoLeader, "controller %s is taking over the leadership; retry in a moment", h.nodeID)
	}
	if old := h.sessions[name]; old != nil {
		if old.live(h.ttl) {
			h.mu.Unlock()
			return nil, catalog.Errorf(catalog.ErrAlreadyExists, "agent name %q is already connected from %s", name, old.addr)
		}
		old.closeWith(errorMsg(0, codes.AlreadyExists, "replaced by a newer session of agent "+name, "", ""), errors.New("replaced by a newer session"))
	}
	ss := h.newSession(ctx, name, addr)
	ss.renewalAcks = reg.GetRenewalAcks()
	h.sessions[name] = ss
	h.mu.Unlock()

	ok := false
	defer func() {
		if !ok {
			ss.watchdog.Stop()
			ss.cancel(errors.New("registration failed"))
			h.forget(ss)
		}
	}()
	t := now()
	r := h.node.catalog().Read()
	id := newAgentID()
	if old, err := r.Agent(name); err == nil {
		id = old.GetId()
	}
	agent := &v1.Agent{
		Id: id, Name: name, Labels: reg.GetLabels(), Capabilities: reg.GetCapabilities(),
		LastSeen: t, Address: addr, ControllerNode: h.nodeID, RegisteredAt: t,
	}
	instances := reg.GetInstances()
	if len(instances) == 0 {
		instances = []*v1.Instance{{}}
	}
	var ins []*v1.Instance
	for _, in := range instances {
		in = proto.CloneOf(in)
		if in.Name == "" {
			in.Name = name
		}
		in.Agent = name
		if in.Capabilities == nil {
			in.Capabilities = reg.GetCapabilities()
		}
		labels := maps.Clone(reg.GetLabels())
		if labels == nil {
			labels = map[string]string{}
		}
		maps.Copy(labels, in.GetLabels())
		in.Labels = labels
		in.UpdatedAt = t
		if old, err := r.Instance(in.Name); err == nil && old.GetAgent() != name {
			return nil, catalog.Errorf(catalog.ErrConflict, "instance %q belongs to agent %q; give this agent's instance another name", in.Name, old.GetAgent())
		}
		ins = append(ins, in)
	}
	if _, err := h.node.apply(ctx, &v1.Command{Cmd: &v1.Command_RegisterAgent{RegisterAgent: &v1.RegisterAgent{
		Agent: agent, Instances: ins, RegisteredAt: t,
	}}}); err != nil {
		return nil, err
	}
	ok = true
	names := make([]string, len(ins))
	for i, in := range ins {
		names[i] = in.GetName()
	}
	if err := h.recordEngineDecisions(ctx, names); err != nil {
		h.log.Warn("engine selection after registration", "agent", name, "err", err)
	}
	ss.touch()
	ss.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_Registered{Registered: &v1.Registered{
		AgentId: id, HeartbeatInterval: durationpb.New(h.heartbeat),
		LeaseDuration: durationpb.New(h.ttl), ControllerNode: h.nodeID, RelayRepositoryUri: h.relayRepo,
		RenewalAcks: true, TakeoverGrace: durationpb.New(h.grace),
	}}})
	h.log.Info("agent registered", "agent", name, "addr", addr, "instances", len(ins), "running", len(reg.GetRunning()))

	h.ackRenewals(ss, seq, h.checkRunning(ss, reg.GetRunning()))
	h.stoppedUnlisted(ss, reg.GetRunning(), "register")
	listed := map[string]bool{}
	for _, rj := range reg.GetRunning() {
		listed[rj.GetJobId()] = true
	}
	// Assigned jobs the agent does not list never reached it; a running
	// binlog stream it does not list was lost with the agent's restart and
	// resumes at once under the same lease (a stream is idempotent: it
	// continues from what the repository holds), instead of waiting for
	// the lease to expire.
	r = h.node.catalog().Read()
	for _, j := range r.ActiveJobs() {
		if j.GetAgent() != name || listed[j.GetId()] {
			continue
		}
		if j.GetState() == v1.JobState_JOB_STATE_ASSIGNED ||
			(j.GetState() == v1.JobState_JOB_STATE_RUNNING && fsm.Continuous(j.GetKind())) {
			ss.send(h.assignmentMsg(r, j))
		}
	}
	h.kickAssigner()
	return ss, nil
}

// assignmentMsg is the JobAssignment of j's current attempt. A binlog
// stream's gets the servers of its group as the catalog has them now.
func (h *agentHub) assignmentMsg(r *catalog.Read, j *v1.Job) *v1.ControllerMessage {
	if j.GetBinlogStream() != nil {
		j = withSources(r, j)
	}
	return &v1.ControllerMessage{Msg: &v1.ControllerMessage_AssignJob{AssignJob: &v1.JobAssignment{Job: j, Lease: j.GetLease()}}}
}

// handle processes one message of a registered session, on the session's
// receive goroutine (so one agent's messages are handled in order).
func (h *agentHub) handle(ss *session, m *v1.AgentMessage) {
	switch msg := m.GetMsg().(type) {
	case *v1.AgentMessage_Heartbeat:
		renewed := h.checkRunning(ss, msg.Heartbeat.GetRunning())
		h.ackRenewals(ss, m.GetSeq(), renewed)
		h.stoppedUnlisted(ss, msg.Heartbeat.GetRunning(), "heartbeat")
	case *v1.AgentMessage_JobProgress:
		h.handleProgress(ss, m.GetSeq(), msg.JobProgress)
	case *v1.AgentMessage_JobResult:
		h.handleResult(ss, m.GetSeq(), msg.JobResult)
	case *v1.AgentMessage_Register:
		// On a registered stream: the agent's periodic re-probe found a
		// change.
		if err := h.reprobed(ss, msg.Register); err != nil {
			ss.send(errorMsg(m.GetSeq(), codeOf(err), err.Error(), "", ""))
		}
	default:
		ss.send(errorMsg(m.GetSeq(), codes.InvalidArgument, fmt.Sprintf("unknown agent message %T", msg), "", ""))
	}
}

// reprobed records the capabilities an agent's re-probe reported on its
// live session, for the instances the catalog already gives it (a new
// instance needs a new registration: the agent's config changed, so it
// restarted), and re-decides their engines.
func (h *agentHub) reprobed(ss *session, reg *v1.Register) error {
	if reg.GetName() != ss.name {
		return invalid("session of agent %q cannot report for agent %q", ss.name, reg.GetName())
	}
	t := now()
	var names []string
	for _, in := range reg.GetInstances() {
		name := in.GetName()
		if name == "" {
			name = ss.name
		}
		old, err := h.node.catalog().Read().Instance(name)
		if err != nil || old.GetAgent() != ss.name {
			h.log.Warn("re-probe reports an instance this agent did not register; it is taken at the next registration", "agent", ss.name, "instance", name)
			continue
		}
		up := proto.CloneOf(old)
		up.Capabilities, up.Server, up.UpdatedAt = in.GetCapabilities(), in.GetServer(), t
		if up.Capabilities == nil {
			up.Capabilities = reg.GetCapabilities()
		}
		if _, err := h.node.apply(ss.ctx, &v1.Command{Cmd: &v1.Command_UpsertInstance{UpsertInstance: &v1.UpsertInstance{Instance: up, UpdatedAt: t}}}); err != nil {
			return fmt.Errorf("instance %s: recording its re-probe: %w", name, err)
		}
		names = append(names, name)
	}
	h.log.Info("agent re-probed", "agent", ss.name, "instances", len(names))
	return h.recordEngineDecisions(ss.ctx, names)
}

// checkRunning renews the leases an agent lists under their current token
// and tells it to stop attempts whose lease the job no longer holds. It
// returns the jobs whose leases it renewed.
func (h *agentHub) checkRunning(ss *session, running []*v1.RunningJob) (renewed []string) {
	r := h.node.catalog().Read()
	for _, rj := range running {
		j, err := r.Job(rj.GetJobId())
		var why string
		switch {
		case err != nil:
			why = fmt.Sprintf("job %s is unknown to the controller", rj.GetJobId())
		case catalog.SameLease(rj.GetLease(), j.GetLease()) && catalog.Terminal(j.GetState()):
			continue // its result is recorded; the Ack may be on its way
		case catalog.SameLease(rj.GetLease(), j.GetLease()) && j.GetAgent() == ss.name:
			if rj.GetStream() != nil && j.GetKind() == v1.JobKind_JOB_KIND_BINLOG_STREAM {
				h.noteStream(j, rj.GetStream())
			}
			if !h.renew(j.GetId(), rj.GetLease()) {
				// A lease the timers do not know yet (assigned while this
				// leader was taking over): start its timer now.
				h.mu.Lock()
				if h.leading {
					h.armLease(j.GetId(), j.GetLease(), ss.name, h.ttl)
				}
				h.mu.Unlock()
			}
			renewed = append(renewed, j.GetId())
			continue
		default:
			why = fmt.Sprintf("lease %s is no longer the job's (job is %s under lease %s)",
				catalog.LeaseString(rj.GetLease()), catalog.StateName(j.GetState()), catalog.LeaseString(j.GetLease()))
		}
		ss.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_CancelJob{CancelJob: &v1.JobCancellation{
			JobId: rj.GetJobId(), Lease: rj.GetLease(), Reason: why,
		}}})
	}
	return renewed
}

// ackRenewals answers a Heartbeat or Register (seq) with the leases it
// renewed, so the agent knows from when to count them (it stops a job
// whose lease it has not seen renewed for a lease_duration).
func (h *agentHub) ackRenewals(ss *session, seq uint64, renewed []string) {
	if !ss.renewalAcks {
		return // an older agent, which would log every one as unknown
	}
	ss.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_LeasesRenewed{LeasesRenewed: &v1.LeasesRenewed{Seq: seq, JobIds: renewed}}})
}

// staleMsg is the Error that refuses a report under a lease the job does
// not hold: the fence.
func staleMsg(seq uint64, j *v1.Job, l *v1.LeaseToken) *v1.ControllerMessage {
	return errorMsg(seq, codes.FailedPrecondition, fmt.Sprintf("stale lease %s: job %s is %s under lease %s; the report is not recorded",
		catalog.LeaseString(l), j.GetId(), catalog.StateName(j.GetState()), catalog.LeaseString(j.GetLease())), "", "")
}

// handleProgress keeps a running job's progress in memory; the first report
// of an assigned job writes its move to RUNNING.
func (h *agentHub) handleProgress(ss *session, seq uint64, p *v1.JobProgressReport) {
	j, err := h.node.catalog().Read().Job(p.GetJobId())
	if err != nil {
		ss.send(errorMsg(seq, codes.NotFound, err.Error(), "", ""))
		return
	}
	if !catalog.SameLease(p.GetLease(), j.GetLease()) || !catalog.Active(j.GetState()) {
		if !catalog.SameLease(p.GetLease(), j.GetLease()) {
			ss.send(staleMsg(seq, j, p.GetLease()))
		}
		return
	}
	h.renew(j.GetId(), p.GetLease())
	prog := proto.CloneOf(p.GetProgress())
	if prog == nil {
		prog = &v1.JobProgress{}
	}
	if prog.UpdatedAt == nil {
		prog.UpdatedAt = now()
	}
	if j.GetState() == v1.JobState_JOB_STATE_ASSIGNED {
		_, err := h.node.apply(ss.ctx, &v1.Command{Cmd: &v1.Command_UpdateJobState{UpdateJobState: &v1.UpdateJobState{
			JobId: j.GetId(), State: v1.JobState_JOB_STATE_RUNNING, Lease: p.GetLease(), Progress: prog, UpdatedAt: now(),
		}}})
		if err != nil {
			if errors.Is(err, catalog.ErrStaleLease) {
				ss.send(staleMsg(seq, j, p.GetLease()))
			} else {
				h.log.Warn("could not record a job as running", "job", j.GetId(), "err", err)
			}
			return
		}
	}
	h.setProgress(j.GetId(), prog)
}

// handleResult records a job's outcome under its current lease and Acks
// it; a result under any other lease is refused and recorded nowhere.
func (h *agentHub) handleResult(ss *session, seq uint64, rep *v1.JobResultReport) {
	j, err := h.node.catalog().Read().Job(rep.GetJobId())
	if err != nil {
		ss.send(errorMsg(seq, codes.NotFound, err.Error(), "", ""))
		return
	}
	ack := &v1.ControllerMessage{Msg: &v1.ControllerMessage_Ack{Ack: &v1.Ack{Seq: seq}}}
	if catalog.SameLease(rep.GetLease(), j.GetLease()) && catalog.Terminal(j.GetState()) {
		if sameOutcome(j, rep) {
			// Recorded before: the first Ack was lost, or the result went
			// to a leader that died before it answered (and the entry
			// committed). The agent re-sends it on its next session.
			ss.send(ack)
			return
		}
		// Only a result under this lease ends a job with its lease kept, so
		// a different one is an agent bug; the record stands.
		h.log.Warn("refused a second, different result for an ended attempt", "job", j.GetId(), "agent", ss.name,
			"lease", catalog.LeaseString(rep.GetLease()), "state", catalog.StateName(j.GetState()), "ok", rep.GetOk(), "backup", rep.GetBackupId())
		ss.send(errorMsg(seq, codes.FailedPrecondition, fmt.Sprintf("job %s already ended %s under lease %s with another result (backup %q); this one (ok=%v, backup %q) is not recorded",
			j.GetId(), catalog.StateName(j.GetState()), catalog.LeaseString(j.GetLease()), j.GetResult().GetBackupId(), rep.GetOk(), rep.GetBackupId()), "", ""))
		return
	}
	if !catalog.SameLease(rep.GetLease(), j.GetLease()) || !catalog.Active(j.GetState()) {
		if catalog.SameLease(rep.GetLease(), j.GetStoppingLease()) {
			// A result is sent once the attempt ended, its statements
			// killed: the instance is free.
			h.attemptStopped(ss.ctx, j, "result")
		}
		h.log.Warn("refused a result under a stale lease", "job", j.GetId(), "agent", ss.name,
			"lease", catalog.LeaseString(rep.GetLease()), "current", catalog.LeaseString(j.GetLease()))
		ss.send(staleMsg(seq, j, rep.GetLease()))
		return
	}
	u, err := resultUpdate(j, rep, ss.name)
	if err != nil {
		ss.send(errorMsg(seq, codeOf(err), err.Error(), "", ""))
		return
	}
	// What a successful expire or copy job did to backups is recorded
	// before the job's success: if the leader fails between the two, the
	// job's lease expires and the rerun (which finds the work done) reports
	// again; the record is never claimed by a job that did not succeed.
	if rep.GetOk() {
		if cmd := jobOutcome(j, now()); cmd != nil {
			if _, err := h.node.apply(ss.ctx, cmd); err != nil {
				ss.send(errorMsg(seq, codeOf(err), err.Error(), "", ""))
				return
			}
		}
	}
	// The last progress, kept only in memory until now, goes into the
	// record with the outcome.
	h.mu.Lock()
	u.Progress = h.progress[j.GetId()]
	h.mu.Unlock()
	resp, err := h.node.apply(ss.ctx, &v1.Command{Cmd: &v1.Command_UpdateJobState{UpdateJobState: u}})
	if err != nil {
		if errors.Is(err, catalog.ErrStaleLease) {
			ss.send(staleMsg(seq, j, rep.GetLease()))
		} else {
			ss.send(errorMsg(seq, codeOf(err), err.Error(), "", ""))
		}
		return
	}
	// A stream job's result sends it back to pending, and the assigner
	// may already have armed its next lease: drop only this one's timer.
	h.dropLeaseOf(j.GetId(), rep.GetLease())
	h.setProgress(j.GetId(), nil)
	ss.send(ack)
	if nj, _ := resp.Value.(*v1.Job); nj != nil {
		h.log.Info("job ended", "job", nj.GetId(), "state", catalog.StateName(nj.GetState()), "agent", ss.name,
			"backup", nj.GetResult().GetBackupId(), "reason", nj.GetReason())
	}
	h.kickAssigner()
}

// sameOutcome reports whether rep is the result that ended j: success
// with the same backup for a SUCCEEDED job, failure for a FAILED one.
func sameOutcome(j *v1.Job, rep *v1.JobResultReport) bool {
	switch j.GetState() {
	case v1.JobState_JOB_STATE_SUCCEEDED:
		return rep.GetOk() && rep.GetBackupId() == j.GetResult().GetBackupId()
	case v1.JobState_JOB_STATE_FAILED:
		return !rep.GetOk()
	}
	return false
}

// jobOutcome is the command that records what a successful expire, copy
// or reconcile job did, or nil for other kinds. An expire job succeeds only
// when every manifest it was given is gone from the repository; a copy job
// only after it verified the copy.
func jobOutcome(j *v1.Job, t *timestamppb.Timestamp) *v1.Command {
	switch {
	case j.GetExpire() != nil:
		ids := make([]string, 0, len(j.GetExpire().GetBackups()))
		for _, b := range j.GetExpire().GetBackups() {
			ids = append(ids, b.GetBackupId())
		}
		fe := &v1.FinishExpiry{JobId: j.GetId(), DeletedBackupIds: ids, DeletedAt: t}
		if j.GetExpire().GetCopies() {
			fe.CopyRepositoryUri = j.GetExpire().GetRepositoryUri()
		}
		return &v1.Command{Cmd: &v1.Command_FinishExpiry{FinishExpiry: fe}}
	case j.GetReconcile() != nil:
		return &v1.Command{Cmd: &v1.Command_FinishReconcile{FinishReconcile: &v1.FinishReconcile{
			JobId: j.GetId(), SweptJobIds: j.GetReconcile().GetJobIds(), SweptAt: t}}}
	case j.GetCopy() != nil:
		cp := j.GetCopy()
		return &v1.Command{Cmd: &v1.Command_RecordBackupCopy{RecordBackupCopy: &v1.RecordBackupCopy{BackupId: cp.GetBackupId(),
			Copy: &v1.BackupCopy{RepositoryUri: cp.GetDestinationRepositoryUri(), CopiedAt: t, JobId: j.GetId()}}}}
	}
	return nil
}

// resultUpdate builds the UpdateJobState for a result: SUCCEEDED with the
// Backup record (from the manifest summary) or FAILED with the agent's
// error.
func resultUpdate(j *v1.Job, rep *v1.JobResultReport, agent string) (*v1.UpdateJobState, error) {
	t := now()
	u := &v1.UpdateJobState{
		JobId: j.GetId(), Lease: rep.GetLease(), UpdatedAt: t,
		Result: &v1.JobResult{BackupId: rep.GetBackupId(), Error: rep.GetError(), ManifestKey: rep.GetManifestKey()},
	}
	if !rep.GetOk() {
		u.State = v1.JobState_JOB_STATE_FAILED
		msg := rep.GetError()
		if msg == "" {
			msg = "no reason given"
		}
		u.Reason = fmt.Sprintf("attempt %d failed on agent %s: %s", j.GetAttempt(), agent, msg)
		return u, nil
	}
	u.State = v1.JobState_JOB_STATE_SUCCEEDED
	p := j.GetBackup()
	if p == nil {
		return u, nil
	}
	if rep.GetBackupId() != p.GetBackupId() {
		return nil, invalid("job %s attempt %d writes backup %q, not %q", j.GetId(), j.GetAttempt(), p.GetBackupId(), rep.GetBackupId())
	}
	if rep.GetManifestKey() == "" {
		return nil, invalid("job %s: a successful backup result needs the manifest key", j.GetId())
	}
	m := rep.GetManifest()
	if m != nil && (!catalog.SameLease(m.GetFence(), rep.GetLease()) || m.GetBackupId() != p.GetBackupId()) {
		return nil, invalid("job %s: manifest of backup %q is fenced by lease %s, not the report's %s", j.GetId(), m.GetBackupId(),
			catalog.LeaseString(m.GetFence()), catalog.LeaseString(rep.GetLease()))
	}
	b := &v1.Backup{
		Id: p.GetBackupId(), Instance: j.GetInstance(), Engine: p.GetEngine(), Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE,
		ManifestKey: rep.GetManifestKey(), RepositoryUri: rep.GetRepositoryUri(), StartedAt: j.GetAssignedAt(), FinishedAt: t,
		JobId: j.GetId(), Fence: j.GetLease(), Labels: p.GetLabels(),
		Policy: j.GetPolicy(), ScheduledFor: j.GetScheduledFor(),
	}
	if b.RepositoryUri == "" {
		b.RepositoryUri = p.GetRepositoryUri()
	}
	if m != nil {
		if fb := m.GetEngineMetadata()[selection.MetaFallback]; fb != "" {
			// The job's record of why its backup is not by the engine
			// it was given.
			u.Reason = fb
		}
		b.Engine = m.GetEngine()
		b.StartedAt, b.FinishedAt = m.GetStartedAt(), m.GetFinishedAt()
		b.SizeBytes, b.StoredBytes = m.GetLogicalBytes(), m.GetStoredBytes()
		b.Consistency = m.GetConsistency()
		b.ParentBackupId = m.GetParentBackupId()
		if len(m.GetLabels()) > 0 {
			b.Labels = maps.Clone(p.GetLabels())
			if b.Labels == nil {
				b.Labels = map[string]string{}
			}
			maps.Copy(b.Labels, m.GetLabels())
		}
	}
	if b.Engine == "" || b.Engine == "auto" {
		b.Engine = "unknown"
	}
	u.Backup = b
	return u, nil
}

// stoppedUnlisted records as stopped the attempts an agent was stopping
// (Job.stopping_lease) that its Heartbeat or Register (how) no longer
// lists: the agent lists an attempt until the controller took its result,
// so one missing from the list has ended there.
func (h *agentHub) stoppedUnlisted(ss *session, running []*v1.RunningJob, how string) {
	stopping := h.node.catalog().Read().StoppingJobsOf(ss.name)
	if len(stopping) == 0 {
		return
	}
	listed := map[string]*v1.LeaseToken{}
	for _, rj := range running {
		listed[rj.GetJobId()] = rj.GetLease()
	}
	for _, j := range stopping {
		if !catalog.SameLease(listed[j.GetId()], j.GetStoppingLease()) {
			h.attemptStopped(ss.ctx, j, how)
		}
	}
}

// attemptStopped writes that j's stopping attempt is over (how: "result",
// "heartbeat", "register", "timeout") and wakes the assigner: the
// instance may have a job waiting for it.
func (h *agentHub) attemptStopped(ctx context.Context, j *v1.Job, how string) {
	_, err := h.node.apply(ctx, &v1.Command{Cmd: &v1.Command_AttemptStopped{AttemptStopped: &v1.AttemptStopped{
		JobId: j.GetId(), Lease: j.GetStoppingLease(), Reason: how, StoppedAt: now(),
	}}})
	if err != nil {
		h.log.Warn("could not record that a stopping attempt ended; the instance stays busy until it is seen again or its time passes",
			"job", j.GetId(), "lease", catalog.LeaseString(j.GetStoppingLease()), "err", err)
		return
	}
	h.log.Info("stopping attempt ended; its instance is free", "job", j.GetId(), "instance", j.GetInstance(),
		"lease", catalog.LeaseString(j.GetStoppingLease()), "seen_by", how)
	h.kickAssigner()
}

// instanceBusy returns the job whose cancelled or expired attempt may still
// be stopping on instance in (nil when none). One whose stopping_until
// passed is recorded as stopped on the way: its agent has stopped it by
// itself.
func (h *agentHub) instanceBusy(ctx context.Context, r *catalog.Read, in *v1.Instance) *v1.Job {
	var busy *v1.Job
	for _, j := range r.StoppingJobsOf(in.GetAgent()) {
		if j.GetInstance() != in.GetName() {
			continue
		}
		if !time.Now().Before(j.GetStoppingUntil().AsTime()) {
			h.attemptStopped(ctx, j, "timeout")
			continue
		}
		busy = j
	}
	return busy
}
