package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/engines/selection"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// controlService is ControlService on every node. Writes run on the leader
// (a follower forwards the whole call, so the leader stamps times and ids);
// reads are consistent (reads.go: through the leader, after it confirmed
// its leadership and applied what was committed) unless the request is
// stale, which reads the local catalog.
//
// A stale ListAgents, ListInstances or GetBinlogStatus, and every WatchJob,
// are still forwarded to the leader when it can be reached, because only
// it knows which agents are connected, when they last spoke, the streams'
// watermarks and the jobs' progress; a follower that cannot reach it
// answers from its catalog (connected false, last_seen the registration
// time, progress as last written).
type controlService struct {
	v1.UnimplementedControlServiceServer
	s *Server
}

type rpc[Req, Resp any] func(v1.ControlServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error)

// forward sends a call to the leader.
func forward[Req, Resp any](ctx context.Context, s *Server, req Req, call rpc[Req, Resp]) (Resp, error) {
	var zero Resp
	c, fctx, err := s.toLeader(ctx)
	if err != nil {
		return zero, err
	}
	resp, err := call(c, fctx, req)
	if err != nil {
		st := status.Convert(err)
		if st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded {
			id, _ := s.leader()
			return zero, status.Errorf(st.Code(), "node %s forwarded the call to the leader %s: %s", s.id.NodeID, id, st.Message())
		}
		return zero, err
	}
	return resp, nil
}

const (
	defaultPageSize = 1000
	maxPageSize     = 10000
)

// page cuts one page out of a full, ordered list. The token is the offset
// of the next page: simple, and good enough for lists that change slowly.
func page[T any](items []T, size uint32, token string) ([]T, string, error) {
	off := 0
	if token != "" {
		n, err := strconv.Atoi(token)
		if err != nil || n < 0 {
			return nil, "", status.Errorf(codes.InvalidArgument, "bad page_token %q", token)
		}
		off = n
	}
	if size == 0 {
		size = defaultPageSize
	}
	size = min(size, maxPageSize)
	if off >= len(items) {
		return nil, "", nil
	}
	end := min(off+int(size), len(items))
	next := ""
	if end < len(items) {
		next = strconv.Itoa(end)
	}
	return items[off:end], next, nil
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func (c *controlService) ListAgents(ctx context.Context, req *v1.ListAgentsRequest) (*v1.ListAgentsResponse, error) {
	s := c.s
	if req.GetStale() && !s.isLeader() && !wasForwarded(ctx) {
		// Bounded: a leader that does not answer quickly is no better than
		// the local catalog.
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := forward(fctx, s, req, v1.ControlServiceClient.ListAgents)
		cancel()
		if err == nil {
			return resp, nil
		}
		s.log.Debug("ListAgents answered locally: leader unreachable", "err", err)
	}
	fwd, info, err := c.readPrep(ctx, req.GetStale())
	if fwd {
		return forwardRead(ctx, s, req, v1.ControlServiceClient.ListAgents)
	}
	if err != nil {
		return nil, err
	}
	var out []*v1.Agent
	leading := s.agents.isLeading()
	for _, a := range s.fsm.Store().Read().Agents() {
		if !hasLabels(a.GetLabels(), req.GetLabels()) {
			continue
		}
		if leading {
			connected, seen := s.agents.agentState(a.GetName())
			a = proto.CloneOf(a)
			a.Connected = connected
			if !seen.IsZero() {
				a.LastSeen = timestampOf(seen)
			}
		}
		out = append(out, a)
	}
	p, next, err := page(out, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &v1.ListAgentsResponse{Agents: p, NextPageToken: next, Read: info}, nil
}

func (c *controlService) ListInstances(ctx context.Context, req *v1.ListInstancesRequest) (*v1.ListInstancesResponse, error) {
	if req.GetStale() && !c.s.isLeader() && !wasForwarded(ctx) {
		// The binlog streams' latest watermarks (the RPO) are in the
		// leader's memory; a follower that cannot reach it answers with the
		// committed ones.
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := forward(fctx, c.s, req, v1.ControlServiceClient.ListInstances)
		cancel()
		if err == nil {
			return resp, nil
		}
	}
	fwd, info, err := c.readPrep(ctx, req.GetStale())
	if fwd {
		return forwardRead(ctx, c.s, req, v1.ControlServiceClient.ListInstances)
	}
	if err != nil {
		return nil, err
	}
	r := c.s.fsm.Store().Read()
	all := r.Instances()
	if req.GetAgent() != "" {
		all = r.InstancesOf(req.GetAgent())
	}
	var out []*v1.Instance
	for _, in := range all {
		if hasLabels(in.GetLabels(), req.GetLabels()) {
			out = append(out, in)
		}
	}
	p, next, err := page(out, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &v1.ListInstancesResponse{Instances: c.s.fillStreams(r, p), NextPageToken: next, Read: info}, nil
}

func (c *controlService) ListBackups(ctx context.Context, req *v1.ListBackupsRequest) (*v1.ListBackupsResponse, error) {
	fwd, info, err := c.readPrep(ctx, req.GetStale())
	if fwd {
		return forwardRead(ctx, c.s, req, v1.ControlServiceClient.ListBackups)
	}
	if err != nil {
		return nil, err
	}
	// Keyset pages over the catalog's ordered indexes (history.go).
	after, err := decodeCursor(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	p, cur := c.s.fsm.Store().Read().BackupsPage(catalog.BackupFilter{Instance: req.GetInstance(), Status: req.GetStatus()}, after, pageSize(req.GetPageSize()))
	next := encodeCursor(cur)
	return &v1.ListBackupsResponse{Backups: p, NextPageToken: next, Read: info}, nil
}

func (c *controlService) GetBackup(ctx context.Context, req *v1.GetBackupRequest) (*v1.GetBackupResponse, error) {
	fwd, info, err := c.readPrep(ctx, req.GetStale())
	if fwd {
		return forwardRead(ctx, c.s, req, v1.ControlServiceClient.GetBackup)
	}
	if err != nil {
		return nil, err
	}
	b, err := c.s.fsm.Store().Read().Backup(req.GetId())
	if err != nil {
		return nil, err
	}
	return &v1.GetBackupResponse{Backup: b, Read: info}, nil
}

func (c *controlService) ListJobs(ctx context.Context, req *v1.ListJobsRequest) (*v1.ListJobsResponse, error) {
	fwd, info, err := c.readPrep(ctx, req.GetStale())
	if fwd {
		return forwardRead(ctx, c.s, req, v1.ControlServiceClient.ListJobs)
	}
	if err != nil {
		return nil, err
	}
	// Keyset pages over the catalog's ordered indexes (history.go).
	after, err := decodeCursor(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	p, cur := c.s.fsm.Store().Read().JobsPage(catalog.JobFilter{Instance: req.GetInstance(), States: req.GetStates(), Kind: req.GetKind()},
		after, pageSize(req.GetPageSize()))
	next := encodeCursor(cur)
	if c.s.agents.isLeading() {
		for i, j := range p {
			p[i], _ = c.s.agents.overlay(j)
		}
	}
	return &v1.ListJobsResponse{Jobs: p, NextPageToken: next, Read: info}, nil
}

func (c *controlService) GetJob(ctx context.Context, req *v1.GetJobRequest) (*v1.GetJobResponse, error) {
	fwd, info, err := c.readPrep(ctx, req.GetStale())
	if fwd {
		return forwardRead(ctx, c.s, req, v1.ControlServiceClient.GetJob)
	}
	if err != nil {
		return nil, err
	}
	j, err := c.s.fsm.Store().Read().Job(req.GetId())
	if err != nil {
		return nil, err
	}
	if c.s.agents.isLeading() {
		j, _ = c.s.agents.overlay(j)
	}
	return &v1.GetJobResponse{Job: j, Read: info}, nil
}

// WatchJob streams a job until it ends: from the leader (which has the
// progress) when it can be reached, else from the local catalog.
func (c *controlService) WatchJob(req *v1.WatchJobRequest, stream v1.ControlService_WatchJobServer) error {
	s := c.s
	ctx := stream.Context()
	if !s.isLeader() && !wasForwarded(ctx) {
		sent, err := c.proxyWatch(ctx, req, stream)
		if err == nil || sent || ctx.Err() != nil {
			return err
		}
		s.log.Debug("WatchJob served locally: leader unreachable", "err", err)
	}
	// A watch the leader serves ends when it stops leading: the client
	// watches again through the new leader, which has the progress (and
	// a deposed leader cut off from the others would never see the end).
	leading := s.isLeader()
	var last *v1.Job
	for {
		if leading && !s.isLeader() {
			return status.Errorf(codes.Unavailable, "node %s stopped leading while serving the watch of job %s; watch again through the new leader", s.id.NodeID, req.GetId())
		}
		w := catalog.NewWatch()
		j, err := s.fsm.Store().Read().JobWatch(req.GetId(), w)
		if err != nil {
			return err
		}
		if s.agents.isLeading() {
			var progressed <-chan struct{}
			j, progressed = s.agents.overlay(j)
			w.Add(progressed)
		}
		if last == nil || !proto.Equal(j, last) {
			if err := stream.Send(&v1.WatchJobResponse{Job: j}); err != nil {
				return err
			}
			last = j
		}
		if catalog.Terminal(j.GetState()) {
			return nil
		}
		// A bounded wait also notices a snapshot restore (which replaces
		// the store without firing its watches) and leadership changes.
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		_ = w.Wait(wctx)
		cancel()
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

func (c *controlService) proxyWatch(ctx context.Context, req *v1.WatchJobRequest, stream v1.ControlService_WatchJobServer) (sent bool, err error) {
	cl, fctx, err := c.s.toLeader(ctx)
	if err != nil {
		return false, err
	}
	// A leader that is stopped (not killed) keeps the stream open and
	// silent: end the proxy once another node leads, so that the client
	// watches again through it.
	proxied, _ := c.s.leader()
	fctx, cancel := context.WithCancel(fctx)
	defer cancel()
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-fctx.Done():
				return
			case <-t.C:
			}
			if id, _ := c.s.leader(); id != proxied {
				cancel()
				return
			}
		}
	}()
	up, err := cl.WatchJob(fctx, req)
	if err != nil {
		return false, err
	}
	for {
		m, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return sent, nil
		}
		if err != nil {
			if st := status.Convert(err); st.Code() == codes.NotFound {
				return sent, err
			}
			if ctx.Err() == nil && fctx.Err() != nil {
				now, _ := c.s.leader()
				return true, status.Errorf(codes.Unavailable, "node %s proxied the watch of job %s to the leader %s, but now sees %q as leader; watch again", c.s.id.NodeID, req.GetId(), proxied, now)
			}
			if sent {
				return true, status.Errorf(codes.Unavailable, "watch of job %s through the leader ended: %s; watch again", req.GetId(), status.Convert(err).Message())
			}
			return false, err
		}
		if err := stream.Send(m); err != nil {
			return true, err
		}
		sent = true
	}
}

// checkRepo refuses a repository URI the catalog may not hold.
func checkRepo(uri string) error {
	if uri == "" {
		return nil
	}
	if _, err := location.Parse(uri); err != nil {
		return invalid("repository_uri: %v", err)
	}
	if location.Redact(uri) != uri {
		return invalid("repository_uri %s carries credentials; give them to the agents through their environment", location.Redact(uri))
	}
	return nil
}

func (c *controlService) SubmitBackup(ctx context.Context, req *v1.SubmitBackupRequest) (*v1.SubmitBackupResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.SubmitBackup)
	}
	return keyed(ctx, s, req, replayed("job", func(v *v1.Job) *v1.SubmitBackupResponse {
		return &v1.SubmitBackupResponse{Job: v, Replayed: true}
	}), func(ctx context.Context) (*v1.SubmitBackupResponse, error) {
		if req.GetInstance() == "" {
			return nil, invalid("instance is required")
		}
		if err := checkRepo(req.GetRepositoryUri()); err != nil {
			return nil, err
		}
		repo := req.GetRepositoryUri()
		if repo == "" {
			repo = s.cfg.Repo
		}
		var sel resolvedEngine
		if in, err := s.fsm.Store().Read().Instance(req.GetInstance()); err == nil {
			if sel, err = resolveEngine(in, req.GetEngine(), s.cfg.LogicalBelow); err != nil {
				return nil, err
			}
		} else if req.GetEngine() != "auto" && req.GetEngine() != "" {
			// An unknown instance is refused when the job is applied; an
			// unknown engine is named first.
			if err := selection.CheckNames([]string{req.GetEngine()}); err != nil {
				return nil, invalid("engine: %v", err)
			}
			sel.engine = req.GetEngine()
		}
		engine := sel.engine
		t := time.Now()
		job := &v1.Job{
			Id: newJobID(t), Kind: v1.JobKind_JOB_KIND_BACKUP, Instance: req.GetInstance(), State: v1.JobState_JOB_STATE_PENDING,
			CreatedAt: timestampOf(t), UpdatedAt: timestampOf(t), MaxAttempts: s.cfg.MaxAttempts,
			Params: &v1.Job_Backup{Backup: &v1.BackupParams{
				Engine: engine, RepositoryUri: repo, Labels: maps.Clone(req.GetLabels()), Parallelism: req.GetParallelism(),
				EngineReason: sel.reason, FallbackEngines: sel.fallbacks, History: req.GetHistory(),
			}},
		}
		resp, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: job}}})
		if err != nil {
			return nil, err
		}
		s.agents.kickAssigner()
		s.log.Info("backup submitted", "job", job.GetId(), "instance", job.GetInstance(), "engine", engine, "why", sel.reason)
		return &v1.SubmitBackupResponse{Job: resp.Value.(*v1.Job)}, nil
	})
}

func (c *controlService) ExplainEngines(ctx context.Context, req *v1.ExplainEnginesRequest) (*v1.ExplainEnginesResponse, error) {
	fwd, info, err := c.readPrep(ctx, req.GetStale())
	if fwd {
		return forwardRead(ctx, c.s, req, v1.ControlServiceClient.ExplainEngines)
	}
	if err != nil {
		return nil, err
	}
	resp, err := explainEngines(c.s.fsm.Store().Read(), req, c.s.cfg.LogicalBelow)
	if err != nil {
		return nil, err
	}
	resp.Read = info
	return resp, nil
}

func (c *controlService) SubmitRestore(ctx context.Context, req *v1.SubmitRestoreRequest) (*v1.SubmitRestoreResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.SubmitRestore)
	}
	return keyed(ctx, s, req, replayed("job", func(v *v1.Job) *v1.SubmitRestoreResponse {
		return &v1.SubmitRestoreResponse{Job: v, Replayed: true}
	}), func(ctx context.Context) (*v1.SubmitRestoreResponse, error) {
		p := req.GetParams()
		if p.GetTargetInstance() == "" {
			return nil, invalid("params.target_instance is required")
		}
		if p.GetBackupId() == "" && p.GetStopAt() == nil {
			return nil, invalid("params.backup_id is required (or a point-in-time target with params.source_instance)")
		}
		if err := checkRepo(p.GetRepositoryUri()); err != nil {
			return nil, err
		}
		if err := checkServeTLS(p); err != nil {
			return nil, err
		}
		r := s.fsm.Store().Read()
		if p.GetStopAt() != nil {
			var err error
			if p, err = pitrParams(r, p); err != nil {
				return nil, err
			}
		}
		// Only a complete backup the catalog knows is restored, from where it
		// was written: the target's agent may use another repository.
		b, err := completeBackup(r, p.GetBackupId())
		if err != nil {
			return nil, err
		}
		if err := checkDatadir(b, p); err != nil {
			return nil, toStatus(err)
		}
		p = proto.CloneOf(p)
		if p.RepositoryUri == "" {
			p.RepositoryUri = b.GetRepositoryUri()
		}
		t := time.Now()
		job := &v1.Job{
			Id: newJobID(t), Kind: v1.JobKind_JOB_KIND_RESTORE, Instance: p.GetTargetInstance(), State: v1.JobState_JOB_STATE_PENDING,
			CreatedAt: timestampOf(t), UpdatedAt: timestampOf(t), MaxAttempts: s.cfg.MaxAttempts,
			Params: &v1.Job_Restore{Restore: p},
		}
		resp, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: job}}})
		if err != nil {
			return nil, err
		}
		s.agents.kickAssigner()
		return &v1.SubmitRestoreResponse{Job: resp.Value.(*v1.Job)}, nil
	})
}

func (c *controlService) CancelJob(ctx context.Context, req *v1.CancelJobRequest) (*v1.CancelJobResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.CancelJob)
	}
	return keyed(ctx, s, req, replayed("job", func(v *v1.Job) *v1.CancelJobResponse {
		return &v1.CancelJobResponse{Job: v, Replayed: true}
	}), func(ctx context.Context) (*v1.CancelJobResponse, error) {
		j, err := s.cancelJob(ctx, req.GetId(), req.GetReason())
		if err != nil {
			return nil, err
		}
		return &v1.CancelJobResponse{Job: j}, nil
	})
}

// cancelJob cancels a job on the leader and tells its agent to stop the
// attempt.
func (s *Server) cancelJob(ctx context.Context, id, reason string) (*v1.Job, error) {
	old, err := s.fsm.Store().Read().Job(id)
	if err != nil {
		return nil, err
	}
	if done := finishedJob(old); done != "" {
		return nil, catalog.Errorf(catalog.ErrConflict, "%s; nothing to cancel", done)
	}
	if reason == "" {
		reason = "cancelled"
	}
	resp, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_UpdateJobState{UpdateJobState: &v1.UpdateJobState{
		JobId: old.GetId(), State: v1.JobState_JOB_STATE_CANCELLED, Reason: reason, UpdatedAt: now(),
	}}})
	if err != nil {
		return nil, err
	}
	h := s.agents
	h.dropLease(old.GetId())
	h.setProgress(old.GetId(), nil)
	if old.GetLease() != nil {
		if ss := h.session(old.GetAgent()); ss != nil {
			ss.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_CancelJob{CancelJob: &v1.JobCancellation{
				JobId: old.GetId(), Lease: old.GetLease(), Reason: reason,
			}}})
		}
	}
	h.kickAssigner()
	return resp.Value.(*v1.Job), nil
}

func (c *controlService) AddMember(ctx context.Context, req *v1.AddMemberRequest) (*v1.AddMemberResponse, error) {
	s := c.s
	// A node adds itself: its certificate names the member it asks for
	// (an admin may add any; a forwarded call was checked where it came
	// in).
	if id := callerOf(ctx); id.Kind == tlsx.KindController && !wasForwarded(ctx) && id.Name != req.GetId() {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not add node %q: a node joins as the id its certificate names", id, req.GetId())
	}
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.AddMember)
	}
	if err := s.addMember(ctx, req); err != nil {
		return nil, err
	}
	return &v1.AddMemberResponse{Members: s.members(ctx)}, nil
}

func (c *controlService) RemoveMember(ctx context.Context, req *v1.RemoveMemberRequest) (*v1.RemoveMemberResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.RemoveMember)
	}
	if req.GetId() == "" {
		return nil, invalid("id is required")
	}
	if err := s.removeMember(ctx, req.GetId()); err != nil {
		return nil, err
	}
	return &v1.RemoveMemberResponse{Members: s.members(ctx)}, nil
}

func (c *controlService) ClusterStatus(ctx context.Context, _ *v1.ClusterStatusRequest) (*v1.ClusterStatusResponse, error) {
	s := c.s
	local := s.nodeStatus()
	return &v1.ClusterStatusResponse{
		Members: s.members(ctx), LeaderId: local.GetLeaderId(), Term: local.GetTerm(),
		CommitIndex: local.GetCommitIndex(), AppliedIndex: local.GetAppliedIndex(), NodeId: s.id.NodeID,
	}, nil
}

// finishedJob says how a job in a final state ended ("job X already
// succeeded at T"), or "" for a job still pending or running.
func finishedJob(j *v1.Job) string {
	var how string
	switch j.GetState() {
	case v1.JobState_JOB_STATE_SUCCEEDED:
		how = "succeeded"
	case v1.JobState_JOB_STATE_FAILED:
		how = "failed"
	case v1.JobState_JOB_STATE_CANCELLED:
		how = "cancelled"
	default:
		return ""
	}
	msg := fmt.Sprintf("job %s already %s at %s", j.GetId(), how, j.GetUpdatedAt().AsTime().UTC().Format(time.RFC3339))
	if r := j.GetReason(); r != "" && j.GetState() != v1.JobState_JOB_STATE_SUCCEEDED {
		msg += " (" + r + ")"
	}
	return msg
}
