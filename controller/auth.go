package controller

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// ProtectedLabel marks an instance that only an admin may restore into
// (instance label protected=true).
const ProtectedLabel = "protected"

// access says who may call one RPC. Controllers may call every RPC of
// ControlService and ClusterService (a follower forwards its callers'
// writes; the follower checked the caller's role first).
type access struct {
	// user is the least role a CLI credential needs; "" refuses users.
	user tlsx.Role
	// agent lets agents call it.
	agent bool
	// controller lets other controller nodes call it.
	controller bool
	// anonymous lets a caller without a certificate call it (Join).
	anonymous bool
	// escalate, when set, may raise the role a user needs for this
	// request (restores with --drop-existing or into a protected
	// instance need admin). It returns why, or "" when the request needs
	// no more than user.
	escalate func(s *Server, req any) (tlsx.Role, string)
}

func healthAccess() access {
	return access{user: tlsx.RoleViewer, agent: true, controller: true, anonymous: true}
}
func viewer() access   { return access{user: tlsx.RoleViewer, controller: true} }
func operator() access { return access{user: tlsx.RoleOperator, controller: true} }
func admin() access    { return access{user: tlsx.RoleAdmin, controller: true} }

// accessTable is the one place that says who may call what. Every RPC of
// every service the controller serves has an entry (TestAccessTable fails
// otherwise); a method with none is refused.
var accessTable = map[string]access{
	v1.ControlService_ListAgents_FullMethodName:         viewer(),
	v1.ControlService_ListInstances_FullMethodName:      viewer(),
	v1.ControlService_ListBackups_FullMethodName:        viewer(),
	v1.ControlService_GetBackup_FullMethodName:          viewer(),
	v1.ControlService_ListJobs_FullMethodName:           viewer(),
	v1.ControlService_GetJob_FullMethodName:             viewer(),
	v1.ControlService_WatchJob_FullMethodName:           viewer(),
	v1.ControlService_GetBinlogStatus_FullMethodName:    viewer(),
	v1.ControlService_ClusterStatus_FullMethodName:      viewer(),
	v1.ControlService_ExplainEngines_FullMethodName:     viewer(),
	v1.ControlService_SubmitBackup_FullMethodName:       operator(),
	v1.ControlService_SubmitRestore_FullMethodName:      {user: tlsx.RoleOperator, controller: true, escalate: restoreNeeds},
	v1.ControlService_CancelJob_FullMethodName:          operator(),
	v1.ControlService_StartBinlogStream_FullMethodName:  operator(),
	v1.ControlService_StopBinlogStream_FullMethodName:   operator(),
	v1.ControlService_AddMember_FullMethodName:          admin(),
	v1.ControlService_RemoveMember_FullMethodName:       admin(),
	v1.ControlService_TransferLeadership_FullMethodName: admin(),
	v1.ControlService_CreateJoinToken_FullMethodName:    admin(),
	v1.ControlService_RevokeAgent_FullMethodName:        admin(),
	v1.ControlService_ListAudit_FullMethodName:          admin(),
	v1.ControlService_PlanRetention_FullMethodName:      viewer(),
	v1.ControlService_SubmitCopy_FullMethodName:         operator(),
	// Pins and expiry decide what is deleted: admin, like deletes.
	v1.ControlService_PinBackup_FullMethodName:       admin(),
	v1.ControlService_UnpinBackup_FullMethodName:     admin(),
	v1.ControlService_ApplyRetention_FullMethodName:  admin(),
	v1.ControlService_ExpireBackup_FullMethodName:    admin(),
	v1.ControlService_ListPolicies_FullMethodName:    viewer(),
	v1.ControlService_GetPolicy_FullMethodName:       viewer(),
	v1.ControlService_GetSchedule_FullMethodName:     viewer(),
	v1.ControlService_GetPolicyStatus_FullMethodName: viewer(),
	// Policies decide what is backed up and kept, fleet-wide: admin.
	v1.ControlService_ApplyPolicies_FullMethodName: admin(),
	v1.ControlService_DeletePolicy_FullMethodName:  admin(),
	// An agent renews its own certificate (the name is its certificate's).
	v1.ControlService_RenewCertificate_FullMethodName: {agent: true},
	// A joining host has no certificate yet; the token is its credential.
	v1.ControlService_Join_FullMethodName: {anonymous: true, controller: true},

	v1.ClusterService_NodeStatus_FullMethodName:   {user: tlsx.RoleViewer, agent: true, controller: true},
	v1.ClusterService_TakeSnapshot_FullMethodName: admin(),

	v1.AgentService_Connect_FullMethodName: {agent: true},

	// grpc.health.v1 answers everyone, a caller without a certificate
	// included: a probe (kubelet, grpc_health_probe, a load balancer)
	// holds no credential of the cluster. On a TLS node it still needs the
	// cluster CA to verify the server (grpc_health_probe -tls
	// -tls-ca-cert CA -tls-server-name controller.tidemark.internal);
	// Kubernetes' built-in grpc probe speaks no TLS, so use /readyz of
	// --metrics-addr there. It tells only SERVING or NOT_SERVING.
	healthpb.Health_Check_FullMethodName: healthAccess(),
	healthpb.Health_Watch_FullMethodName: healthAccess(),
	healthpb.Health_List_FullMethodName:  healthAccess(),

	// The relay serves the controller's repository to agents only.
	v1.RelayService_Put_FullMethodName:    {agent: true},
	v1.RelayService_Get_FullMethodName:    {agent: true},
	v1.RelayService_Stat_FullMethodName:   {agent: true},
	v1.RelayService_List_FullMethodName:   {agent: true},
	v1.RelayService_Delete_FullMethodName: {agent: true},
}

// restoreNeeds raises a restore to admin when it drops existing data or
// targets a protected instance.
func restoreNeeds(s *Server, req any) (tlsx.Role, string) {
	p := req.(*v1.SubmitRestoreRequest).GetParams()
	if p.GetDropExisting() {
		return tlsx.RoleAdmin, "a restore with --drop-existing"
	}
	if in, err := s.fsm.Store().Read().Instance(p.GetTargetInstance()); err == nil && in.GetLabels()[ProtectedLabel] == "true" {
		return tlsx.RoleAdmin, fmt.Sprintf("a restore into instance %s (labelled %s=true)", p.GetTargetInstance(), ProtectedLabel)
	}
	return "", ""
}

// callerKey carries the caller's verified identity in a handler's context.
type callerKey struct{}

// callerOf is the identity the interceptors verified; the zero Identity
// on a plaintext (--insecure) node.
func callerOf(ctx context.Context) tlsx.Identity {
	id, _ := ctx.Value(callerKey{}).(tlsx.Identity)
	return id
}

// authorize checks the caller of method against the access table and
// returns the context handlers run with. req is nil for streams (their
// checks are per method only).
func (s *Server) authorize(ctx context.Context, method string, req any) (context.Context, error) {
	a, ok := accessTable[method]
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "%s has no entry in the access table: refused", method)
	}
	if s.tls == nil {
		return ctx, nil // plaintext on loopback: no identities
	}
	id, err := tlsx.PeerIdentity(ctx)
	if errors.Is(err, tlsx.ErrNoPeerCert) {
		// No certificate: a CLI user's bearer token, if any.
		bid, has, berr := s.bearerIdentity(ctx)
		switch {
		case has && berr != nil:
			return nil, status.Errorf(codes.Unauthenticated, "controller %s: %v", s.id.NodeID, berr)
		case has:
			id, err = bid, nil
		}
	}
	if errors.Is(err, tlsx.ErrNoPeerCert) && a.anonymous {
		return ctx, nil
	}
	if errors.Is(err, tlsx.ErrNoPeerCert) {
		return nil, status.Errorf(codes.Unauthenticated,
			"controller %s requires a client certificate of the cluster CA (CLI: --credentials DIR or --tls-ca/--tls-cert/--tls-key)", s.id.NodeID)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "controller %s: %v", s.id.NodeID, err)
	}
	if s.revoked(id) {
		return nil, status.Errorf(codes.PermissionDenied, "%s is revoked", id)
	}
	deny := func(format string, args ...any) (context.Context, error) {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not call %s: %s", id, method, fmt.Sprintf(format, args...))
	}
	switch id.Kind {
	case tlsx.KindController:
		if !a.controller {
			return deny("not a controller-to-controller call")
		}
	case tlsx.KindAgent:
		if !a.agent {
			return deny("agents may not")
		}
	case tlsx.KindUser:
		if a.user == "" {
			return deny("not a CLI call")
		}
		if !id.Role.Allows(a.user) {
			return deny("it needs the %s role", a.user)
		}
		if a.escalate != nil && req != nil {
			if need, why := a.escalate(s, req); need != "" && !id.Role.Allows(need) {
				return deny("%s needs the %s role", why, need)
			}
		}
	}
	return context.WithValue(ctx, callerKey{}, id), nil
}

// unaryInterceptor checks access and turns errors into gRPC statuses, for
// every unary RPC.
func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := s.authorize(ctx, info.FullMethod, req)
	if err != nil {
		return nil, err
	}
	resp, err := s.audit(ctx, info.FullMethod, req, func(ctx context.Context) (any, error) { return h(ctx, req) })
	return resp, toStatus(err)
}

// streamInterceptor is unaryInterceptor for streams.
func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := s.authorize(ss.Context(), info.FullMethod, nil)
	if err != nil {
		return err
	}
	return toStatus(h(srv, &ctxStream{ServerStream: ss, ctx: ctx}))
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *ctxStream) Context() context.Context { return c.ctx }
