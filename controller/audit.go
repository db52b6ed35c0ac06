package controller

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// audited says what the audit trail records of a mutating RPC: the
// target it names and its notable flags. RPCs without an entry are not
// audited (reads, agents' own traffic).
var audited = map[string]func(req any) (target string, flags map[string]string){
	v1.ControlService_ApplyPolicies_FullMethodName: func(r any) (string, map[string]string) {
		req := r.(*v1.ApplyPoliciesRequest)
		if req.GetDryRun() {
			return req.GetFileName(), map[string]string{"dry_run": "true"}
		}
		return req.GetFileName(), nil
	},
	v1.ControlService_DeletePolicy_FullMethodName: func(r any) (string, map[string]string) {
		return r.(*v1.DeletePolicyRequest).GetName(), nil
	},
	v1.ControlService_SubmitBackup_FullMethodName: func(r any) (string, map[string]string) {
		q := r.(*v1.SubmitBackupRequest)
		return q.GetInstance(), map[string]string{"engine": q.GetEngine()}
	},
	v1.ControlService_SubmitRestore_FullMethodName: func(r any) (string, map[string]string) {
		p := r.(*v1.SubmitRestoreRequest).GetParams()
		f := map[string]string{"backup_id": p.GetBackupId(), "drop_existing": strconv.FormatBool(p.GetDropExisting())}
		if p.GetNoBinlog() {
			f["no_binlog"] = "true" // replicas of the target will not receive it
		}
		if p.GetSourceInstance() != "" {
			f["source_instance"] = p.GetSourceInstance()
		}
		if p.GetStopAt() != nil {
			f["point_in_time"] = "true"
		}
		if m := p.GetServeTls(); m != v1.ServeTLS_SERVE_TLS_UNSPECIFIED {
			f["serve_tls"] = strings.ToLower(strings.TrimPrefix(m.String(), "SERVE_TLS_"))
		}
		return p.GetTargetInstance(), f
	},
	v1.ControlService_CancelJob_FullMethodName: func(r any) (string, map[string]string) {
		return r.(*v1.CancelJobRequest).GetId(), nil
	},
	v1.ControlService_StartBinlogStream_FullMethodName: func(r any) (string, map[string]string) {
		return r.(*v1.StartBinlogStreamRequest).GetInstance(), nil
	},
	v1.ControlService_StopBinlogStream_FullMethodName: func(r any) (string, map[string]string) {
		return r.(*v1.StopBinlogStreamRequest).GetInstance(), nil
	},
	v1.ControlService_AddMember_FullMethodName: func(r any) (string, map[string]string) {
		return r.(*v1.AddMemberRequest).GetId(), nil
	},
	v1.ControlService_RemoveMember_FullMethodName: func(r any) (string, map[string]string) {
		return r.(*v1.RemoveMemberRequest).GetId(), nil
	},
	v1.ControlService_TransferLeadership_FullMethodName: func(r any) (string, map[string]string) {
		return r.(*v1.TransferLeadershipRequest).GetTargetId(), nil
	},
	v1.ControlService_CreateJoinToken_FullMethodName: func(r any) (string, map[string]string) {
		q := r.(*v1.CreateJoinTokenRequest)
		f := map[string]string{"role": q.GetRole(), "uses": strconv.Itoa(int(q.GetUses())), "ttl": q.GetTtl().AsDuration().String()}
		if q.GetUser() != "" {
			f["user"] = q.GetUser()
		}
		return "", f
	},
	v1.ControlService_Join_FullMethodName: func(r any) (string, map[string]string) {
		q := r.(*v1.JoinRequest)
		return q.GetName(), map[string]string{"role": q.GetRole()}
	},
	v1.ControlService_RevokeAgent_FullMethodName: func(r any) (string, map[string]string) {
		return r.(*v1.RevokeAgentRequest).GetName(), nil
	},
	v1.ClusterService_TakeSnapshot_FullMethodName: func(any) (string, map[string]string) { return "", nil },
	v1.ControlService_PinBackup_FullMethodName: func(r any) (string, map[string]string) {
		q := r.(*v1.PinBackupRequest)
		return q.GetBackupId(), map[string]string{"reason": q.GetReason()}
	},
	v1.ControlService_UnpinBackup_FullMethodName: func(r any) (string, map[string]string) {
		return r.(*v1.UnpinBackupRequest).GetBackupId(), nil
	},
	v1.ControlService_ExpireBackup_FullMethodName: func(r any) (string, map[string]string) {
		q := r.(*v1.ExpireBackupRequest)
		return q.GetBackupId(), map[string]string{"reason": q.GetReason()}
	},
	v1.ControlService_SubmitCopy_FullMethodName: func(r any) (string, map[string]string) {
		q := r.(*v1.SubmitCopyRequest)
		return q.GetBackupId(), map[string]string{"to": q.GetDestinationRepositoryUri(), "with_binlog": strconv.FormatBool(q.GetWithBinlog())}
	},
	v1.ControlService_ApplyRetention_FullMethodName: func(r any) (string, map[string]string) {
		q := r.(*v1.ApplyRetentionRequest)
		ru := q.GetRules()
		return q.GetInstance(), map[string]string{"rules": fmt.Sprintf("last=%d hourly=%d daily=%d weekly=%d monthly=%d yearly=%d pitr_window=%s",
			ru.GetKeepLast(), ru.GetKeepHourly(), ru.GetKeepDaily(), ru.GetKeepWeekly(), ru.GetKeepMonthly(), ru.GetKeepYearly(), ru.GetPitrWindow().AsDuration())}
	},
}

// auditFirst are the RPCs whose intent is recorded before they run: if it
// cannot be recorded, they do not run (a restore overwrites data; a member
// removal or a revocation changes who is trusted).
var auditFirst = map[string]bool{
	v1.ControlService_SubmitRestore_FullMethodName: true,
	v1.ControlService_RemoveMember_FullMethodName:  true,
	v1.ControlService_RevokeAgent_FullMethodName:   true,
	// Recorded while this node still leads: afterwards it cannot write.
	v1.ControlService_TransferLeadership_FullMethodName: true,
}

// audit runs a mutating call h with its audit records: on the leader only
// (a follower forwards the call, and the leader records it with the
// original caller). The outcome is recorded after the call, whatever
// happened to the caller's context.
func (s *Server) audit(ctx context.Context, method string, req any, h func(context.Context) (any, error)) (any, error) {
	describe, ok := audited[method]
	if !ok || !s.isLeader() {
		return h(ctx)
	}
	target, flags := describe(req)
	// Ids sort by time to the nanosecond, so the trail lists a call's
	// "started" before its outcome.
	rec := func(outcome string) error {
		t := time.Now()
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ApplyTimeout)
		defer cancel()
		_, err := s.apply(actx, &v1.Command{Cmd: &v1.Command_RecordAudit{RecordAudit: &v1.RecordAudit{Record: &v1.AuditRecord{
			Id: t.UTC().Format("20060102T150405.000000000Z") + "-" + randomHex(4), At: timestamppb.New(t), Who: who(ctx), Rpc: method, Target: target, Flags: flags, Outcome: outcome,
		}}}})
		return err
	}
	if auditFirst[method] {
		if err := rec("started"); err != nil {
			return nil, catalog.Errorf(ErrNoLeader, "not done: the audit record could not be written (%v)", err)
		}
	}
	resp, err := h(ctx)
	outcome := "ok"
	if err != nil {
		outcome = "error: " + status.Convert(toStatus(err)).Message()
	}
	if !s.isLeader() {
		// The call moved leadership away (TransferLeadership): the
		// "started" record is the trail's entry.
		s.log.Info("audit outcome not recorded: this node no longer leads", "rpc", method, "target", target, "who", who(ctx), "outcome", outcome)
		return resp, err
	}
	if aerr := rec(outcome); aerr != nil {
		s.log.Error("audit record not written", "rpc", method, "target", target, "who", who(ctx), "outcome", outcome, "err", aerr)
	}
	return resp, err
}

func (c *controlService) ListAudit(ctx context.Context, req *v1.ListAuditRequest) (*v1.ListAuditResponse, error) {
	fwd, info, err := c.readPrep(ctx, req.GetStale())
	if fwd {
		return forwardRead(ctx, c.s, req, v1.ControlServiceClient.ListAudit)
	}
	if err != nil {
		return nil, err
	}
	var out []*v1.AuditRecord
	for _, r := range c.s.fsm.Store().Read().Audit() {
		if req.GetSince() == nil || !r.GetAt().AsTime().Before(req.GetSince().AsTime()) {
			out = append(out, r)
		}
	}
	if len(out) > maxAuditList {
		return nil, invalid("%d audit records since %s: more than %d; give a later --since", len(out), req.GetSince().AsTime().UTC().Format(time.RFC3339), maxAuditList)
	}
	return &v1.ListAuditResponse{Records: out, Read: info}, nil
}

// maxAuditList bounds one ListAudit answer (gRPC's default message limit
// is 4 MiB; a record is about 200 bytes).
const maxAuditList = 10000
