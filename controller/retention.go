package controller

import (
	"context"
	"fmt"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/fsm"
	"github.com/tidemark-backup/tidemark/controller/retention"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Retention on the controller: the leader plans from the catalog with
// controller/retention, marks what expires and submits the expire job in
// one Raft entry (MarkBackupsExpired). The job runs on the agent of the
// backups' instance, not on the controller: deleting a manifest safely
// means reading its fence, and the binlog index is encrypted like the
// rest, and only agents hold repository keys (a controller's --repo is a
// storage relay; it never opens the archive). When the job succeeds, a
// FinishExpiry entry makes the backups DELETED; their chunks are freed
// later by `repo gc`, under its grace period, never by the expiry.

func (c *controlService) PinBackup(ctx context.Context, req *v1.PinBackupRequest) (*v1.PinBackupResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.PinBackup)
	}
	return keyed(ctx, s, req, replayed("backup", func(v *v1.Backup) *v1.PinBackupResponse {
		return &v1.PinBackupResponse{Backup: v, Replayed: true}
	}), func(ctx context.Context) (*v1.PinBackupResponse, error) {
		if req.GetBackupId() == "" {
			return nil, invalid("backup_id is required")
		}
		resp, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_PinBackup{PinBackup: &v1.PinBackup{
			BackupId: req.GetBackupId(), Pin: &v1.BackupPin{Reason: req.GetReason(), By: who(ctx), At: timestamppb.New(s.clock().Now())},
		}}})
		if err != nil {
			return nil, err
		}
		return &v1.PinBackupResponse{Backup: resp.Value.(*v1.Backup)}, nil
	})
}

func (c *controlService) UnpinBackup(ctx context.Context, req *v1.UnpinBackupRequest) (*v1.UnpinBackupResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.UnpinBackup)
	}
	return keyed(ctx, s, req, replayed("backup", func(v *v1.Backup) *v1.UnpinBackupResponse {
		return &v1.UnpinBackupResponse{Backup: v, Replayed: true}
	}), func(ctx context.Context) (*v1.UnpinBackupResponse, error) {
		if req.GetBackupId() == "" {
			return nil, invalid("backup_id is required")
		}
		resp, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_UnpinBackup{UnpinBackup: &v1.UnpinBackup{BackupId: req.GetBackupId()}}})
		if err != nil {
			return nil, err
		}
		return &v1.UnpinBackupResponse{Backup: resp.Value.(*v1.Backup)}, nil
	})
}

func (c *controlService) PlanRetention(ctx context.Context, req *v1.PlanRetentionRequest) (*v1.PlanRetentionResponse, error) {
	fwd, info, err := c.readPrep(ctx, req.GetStale())
	if fwd {
		return forwardRead(ctx, c.s, req, v1.ControlServiceClient.PlanRetention)
	}
	if err != nil {
		return nil, err
	}
	t := c.s.clock().Now()
	var plans []*v1.RetentionInstancePlan
	if req.GetPolicy() != "" {
		if req.GetRules() != nil {
			return nil, invalid("give a policy or rules, not both: with a policy its retention (and that of every policy selecting the same instances) is planned")
		}
		plans, _, err = planPolicies(c.s.fsm.Store().Read(), nil, req.GetPolicy(), req.GetInstance(), req.GetCopyRepositoryUri(), false, t)
	} else {
		plans, _, err = planRetention(c.s.fsm.Store().Read(), req.GetInstance(), req.GetRules(), t, req.GetCopyRepositoryUri())
	}
	if err != nil {
		return nil, err
	}
	return &v1.PlanRetentionResponse{Plans: plans, Now: timestamppb.New(t), Read: info}, nil
}

// instancePlan is one instance's plan with what the RPC answer leaves out.
type instancePlan struct {
	instance string
	res      *retention.Result
	copyRepo string // the plan is of the copies in this repository
}

// planRetention plans every instance with backups (or the one named). With
// copyRepo it plans the copies in that repository instead: each copy
// stands for its backup (same id, time and pin), complete, marked when the
// copy is marked.
func planRetention(r *catalog.Read, instance string, rules *v1.RetentionRules, t time.Time, copyRepo string) ([]*v1.RetentionInstancePlan, []instancePlan, error) {
	if err := retention.Validate(rules); err != nil {
		return nil, nil, invalid("%v", err)
	}
	byInstance := map[string][]*v1.Backup{}
	if instance != "" {
		if _, err := r.Instance(instance); err != nil {
			return nil, nil, err
		}
		byInstance[instance] = nil
	}
	for _, b := range r.Backups(instance) {
		if copyRepo != "" {
			if b = copyAsBackup(b, copyRepo); b == nil {
				continue
			}
		}
		byInstance[b.GetInstance()] = append(byInstance[b.GetInstance()], b)
	}
	names := make([]string, 0, len(byInstance))
	for n := range byInstance {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []*v1.RetentionInstancePlan
	var raw []instancePlan
	for _, n := range names {
		res, err := retention.Plan(retention.Params{Backups: byInstance[n], Rules: rules, Now: t})
		if err != nil {
			return nil, nil, invalid("instance %s: %v", n, err)
		}
		out = append(out, planMessage(n, res))
		raw = append(raw, instancePlan{instance: n, res: res, copyRepo: copyRepo})
	}
	return out, raw, nil
}

// planMessage is one instance's plan as the RPCs answer it.
func planMessage(instance string, res *retention.Result) *v1.RetentionInstancePlan {
	p := &v1.RetentionInstancePlan{Instance: instance, BinlogReason: res.BinlogReason}
	if res.PITRBase != nil {
		p.PitrBaseBackupId = res.PITRBase.GetId()
	}
	if !res.BinlogBefore.IsZero() {
		p.BinlogBefore = timestamppb.New(res.BinlogBefore)
	}
	for _, v := range res.Verdicts {
		p.Backups = append(p.Backups, &v1.RetentionVerdict{
			BackupId: v.Backup.GetId(), Keep: v.Keep, Reasons: v.Reasons, Time: timestamppb.New(v.Time), Status: v.Backup.GetStatus(),
		})
	}
	return p
}

// copyAsBackup is backup b's copy in repo as retention sees it, or nil
// when b has none there.
func copyAsBackup(b *v1.Backup, repo string) *v1.Backup {
	for _, cp := range b.GetCopies() {
		if cp.GetRepositoryUri() != repo {
			continue
		}
		c := proto.CloneOf(b)
		c.Status, c.RepositoryUri, c.Copies = v1.BackupStatus_BACKUP_STATUS_COMPLETE, repo, nil
		c.ExpiredAt, c.ExpireReason, c.ExpireJobId = cp.GetExpiredAt(), cp.GetExpireReason(), cp.GetExpireJobId()
		return c
	}
	return nil
}

func (c *controlService) ApplyRetention(ctx context.Context, req *v1.ApplyRetentionRequest) (*v1.ApplyRetentionResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.ApplyRetention)
	}
	if req.GetPolicy() != "" {
		if req.GetRules() != nil || req.GetCopyRepositoryUri() != "" {
			return nil, invalid("give a policy, or rules (and copies): with a policy its retention and its copies' retention are applied")
		}
		t := s.clock().Now()
		plans, _, err := planPolicies(s.fsm.Store().Read(), nil, req.GetPolicy(), req.GetInstance(), "", true, t)
		if err != nil {
			return nil, err
		}
		jobs, err := s.applyPolicyRetention(ctx, req.GetPolicy(), req.GetInstance())
		if len(jobs) > 0 {
			s.agents.kickAssigner()
		}
		return &v1.ApplyRetentionResponse{Plans: plans, Now: timestamppb.New(t), JobIds: jobs}, err
	}
	t := s.clock().Now()
	r := s.fsm.Store().Read()
	plans, raw, err := planRetention(r, req.GetInstance(), req.GetRules(), t, req.GetCopyRepositoryUri())
	if err != nil {
		return nil, err
	}
	out := &v1.ApplyRetentionResponse{Plans: plans, Now: timestamppb.New(t)}
	for _, ip := range raw {
		for _, cmd := range expireCommands(r, ip, t, s.cfg.MaxAttempts) {
			resp, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_MarkBackupsExpired{MarkBackupsExpired: cmd}})
			if err != nil {
				return out, fmt.Errorf("instance %s: marking %d backups expired: %w", ip.instance, len(cmd.GetBackupIds()), err)
			}
			j := resp.Value.(*v1.Job)
			out.JobIds = append(out.JobIds, j.GetId())
			s.log.Info("retention marked backups expired", "instance", ip.instance, "job", j.GetId(), "backups", cmd.GetBackupIds())
		}
	}
	if len(out.JobIds) > 0 {
		s.agents.kickAssigner()
	}
	return out, nil
}

// expireCommands builds, for one instance's plan, one MarkBackupsExpired
// per repository its newly expired backups are in; the first also prunes
// the instance's own binlog stream (in the stream's repository) up to the
// plan's cutoff. Backups already marked are left to the job that marked
// them, unless it failed or was cancelled: then a new job takes them. A
// stream of a `cluster` group is named after the instance it was started
// for; it is pruned with that instance's retention only.
func expireCommands(r *catalog.Read, ip instancePlan, t time.Time, maxAttempts uint32) []*v1.MarkBackupsExpired {
	byRepo := map[string]*v1.MarkBackupsExpired{}
	var repos []string
	for _, v := range ip.res.Expired() {
		b := v.Backup
		why := v.Reasons[0]
		if b.GetExpiredAt() != nil {
			if !fsm.ExpiryFailed(r, b.GetExpireJobId()) {
				continue // its job is running, or succeeded
			}
			why = b.GetExpireReason() // handed to a new job
		}
		repo := b.GetRepositoryUri()
		cmd := byRepo[repo]
		if cmd == nil {
			id := "expire-" + newJobID(t)
			cmd = &v1.MarkBackupsExpired{ExpiredAt: timestamppb.New(t), CopyRepositoryUri: ip.copyRepo, Job: &v1.Job{
				Id: id, Kind: v1.JobKind_JOB_KIND_EXPIRE, Instance: ip.instance, State: v1.JobState_JOB_STATE_PENDING,
				CreatedAt: timestamppb.New(t), UpdatedAt: timestamppb.New(t), MaxAttempts: maxAttempts,
				Params: &v1.Job_Expire{Expire: &v1.ExpireParams{RepositoryUri: repo, Copies: ip.copyRepo != ""}},
			}}
			byRepo[repo] = cmd
			repos = append(repos, repo)
		}
		cmd.BackupIds = append(cmd.BackupIds, b.GetId())
		cmd.Reasons = append(cmd.Reasons, why)
		ep := cmd.GetJob().GetExpire()
		ep.Backups = append(ep.Backups, &v1.ExpireTarget{BackupId: b.GetId(), Fence: proto.CloneOf(b.GetFence())})
	}
	out := make([]*v1.MarkBackupsExpired, 0, len(repos))
	for _, repo := range repos {
		out = append(out, byRepo[repo])
	}
	// The instance's own binlog stream is pruned by the first of its
	// expire jobs, in the stream's repository.
	if st, err := r.BinlogStream(ip.instance); err == nil && len(out) > 0 && !ip.res.BinlogBefore.IsZero() {
		ep := out[0].GetJob().GetExpire()
		ep.BinlogInstance, ep.BinlogBefore, ep.BinlogRepositoryUri = ip.instance, timestamppb.New(ip.res.BinlogBefore), st.GetRepositoryUri()
		if ip.copyRepo != "" {
			// The binlog copied with the backups (repo copy
			// --with-binlog), pruned by the copies' own plan.
			ep.BinlogRepositoryUri = ip.copyRepo
		}
	}
	return out
}

func (c *controlService) SubmitCopy(ctx context.Context, req *v1.SubmitCopyRequest) (*v1.SubmitCopyResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.SubmitCopy)
	}
	return keyed(ctx, s, req, replayed("job", func(v *v1.Job) *v1.SubmitCopyResponse {
		return &v1.SubmitCopyResponse{Job: v, Replayed: true}
	}), func(ctx context.Context) (*v1.SubmitCopyResponse, error) {
		dest := req.GetDestinationRepositoryUri()
		if req.GetBackupId() == "" || dest == "" {
			return nil, invalid("backup_id and destination_repository_uri are required")
		}
		if err := checkRepo(dest); err != nil {
			return nil, err
		}
		b, err := s.fsm.Store().Read().Backup(req.GetBackupId())
		if err != nil {
			return nil, err
		}
		src := b.GetRepositoryUri()
		if src == "" {
			src = s.cfg.Repo
		}
		if src == dest {
			return nil, invalid("backup %s is in %s already: a copy goes to another repository", b.GetId(), dest)
		}
		t := time.Now()
		job := &v1.Job{
			Id: "copy-" + newJobID(t), Kind: v1.JobKind_JOB_KIND_COPY, Instance: b.GetInstance(), State: v1.JobState_JOB_STATE_PENDING,
			CreatedAt: timestampOf(t), UpdatedAt: timestampOf(t), MaxAttempts: s.cfg.MaxAttempts,
			Params: &v1.Job_Copy{Copy: &v1.CopyParams{BackupId: b.GetId(), SourceRepositoryUri: src, DestinationRepositoryUri: dest, WithBinlog: req.GetWithBinlog()}},
		}
		resp, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: job}}})
		if err != nil {
			return nil, err
		}
		s.agents.kickAssigner()
		s.log.Info("copy submitted", "job", job.GetId(), "backup", b.GetId(), "to", dest)
		return &v1.SubmitCopyResponse{Job: resp.Value.(*v1.Job)}, nil
	})
}

func (c *controlService) ExpireBackup(ctx context.Context, req *v1.ExpireBackupRequest) (*v1.ExpireBackupResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.ExpireBackup)
	}
	return keyed(ctx, s, req, replayed("job", func(v *v1.Job) *v1.ExpireBackupResponse {
		return &v1.ExpireBackupResponse{Job: v, Replayed: true}
	}), func(ctx context.Context) (*v1.ExpireBackupResponse, error) {
		b, err := s.fsm.Store().Read().Backup(req.GetBackupId())
		if err != nil {
			return nil, err
		}
		t := s.clock().Now()
		why := "expire: by " + who(ctx)
		if req.GetReason() != "" {
			why += " (" + req.GetReason() + ")"
		}
		cmd := &v1.MarkBackupsExpired{BackupIds: []string{b.GetId()}, Reasons: []string{why}, ExpiredAt: timestamppb.New(t), Job: &v1.Job{
			Id: "expire-" + newJobID(t), Kind: v1.JobKind_JOB_KIND_EXPIRE, Instance: b.GetInstance(), State: v1.JobState_JOB_STATE_PENDING,
			CreatedAt: timestamppb.New(t), UpdatedAt: timestamppb.New(t), MaxAttempts: s.cfg.MaxAttempts,
			Params: &v1.Job_Expire{Expire: &v1.ExpireParams{RepositoryUri: b.GetRepositoryUri(),
				Backups: []*v1.ExpireTarget{{BackupId: b.GetId(), Fence: proto.CloneOf(b.GetFence())}}}},
		}}
		resp, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_MarkBackupsExpired{MarkBackupsExpired: cmd}})
		if err != nil {
			return nil, err
		}
		s.agents.kickAssigner()
		s.log.Info("backup expired by hand", "backup", b.GetId(), "job", cmd.GetJob().GetId(), "reason", why)
		return &v1.ExpireBackupResponse{Job: resp.Value.(*v1.Job)}, nil
	})
}
