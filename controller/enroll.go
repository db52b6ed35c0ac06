package controller

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Join tokens' defaults and bounds.
const (
	defaultTokenTTL = time.Hour
	maxTokenTTL     = 30 * 24 * time.Hour
	maxTokenUses    = 1000
)

// callerKeyMD carries the original caller of a call a follower forwarded;
// the leader believes it only from another controller.
const callerKeyMD = "tidemark-caller"

// who names the caller for records (tokens, audit): the forwarding
// follower's caller when a controller forwarded the call, else the peer.
func who(ctx context.Context) string {
	id := callerOf(ctx)
	if id.Kind == tlsx.KindController {
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			if v := md.Get(callerKeyMD); len(v) == 1 && v[0] != "" {
				return v[0]
			}
		}
	}
	if id == (tlsx.Identity{}) {
		return "anonymous (no certificate)"
	}
	return id.String()
}

func (c *controlService) CreateJoinToken(ctx context.Context, req *v1.CreateJoinTokenRequest) (*v1.CreateJoinTokenResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.CreateJoinToken)
	}
	if s.ca == nil {
		return nil, catalog.Errorf(ErrNotController, "%v", ErrNoCA)
	}
	role := req.GetRole()
	userRole, uerr := tlsx.ParseRole(role)
	if role != string(tlsx.KindAgent) && role != string(tlsx.KindController) && uerr != nil {
		return nil, invalid("--role %q: use agent or controller (a join token), or viewer, operator or admin (a CLI user's token)", role)
	}
	if uerr == nil {
		return s.createAccessToken(ctx, req, userRole)
	}
	ttl := defaultTokenTTL
	if req.GetTtl() != nil {
		ttl = req.GetTtl().AsDuration()
	}
	if ttl <= 0 || ttl > maxTokenTTL {
		return nil, invalid("--ttl %s: between 1s and %s", ttl, maxTokenTTL)
	}
	uses := req.GetUses()
	if uses == 0 {
		uses = 1
	}
	if uses > maxTokenUses {
		return nil, invalid("--uses %d: at most %d", uses, maxTokenUses)
	}
	tok := tlsx.NewJoinToken(s.ca.Cert)
	t := time.Now()
	rec := &v1.JoinToken{Id: tok.ID, SecretHash: tok.SecretHash(), Role: role, CreatedAt: timestamppb.New(t),
		ExpiresAt: timestamppb.New(t.Add(ttl)), UsesLeft: uses, CreatedBy: who(ctx)}
	if _, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_CreateJoinToken{CreateJoinToken: &v1.CreateJoinToken{Token: rec}}}); err != nil {
		return nil, err
	}
	s.log.Info("join token created", "token", tok.ID, "role", role, "uses", uses, "expires", rec.GetExpiresAt().AsTime(), "by", rec.GetCreatedBy())
	return &v1.CreateJoinTokenResponse{Token: tok.String(), ExpiresAt: rec.GetExpiresAt()}, nil
}

// createAccessToken makes a CLI user's bearer token.
func (s *Server) createAccessToken(ctx context.Context, req *v1.CreateJoinTokenRequest, role tlsx.Role) (*v1.CreateJoinTokenResponse, error) {
	id := tlsx.Identity{Kind: tlsx.KindUser, Name: req.GetUser(), Role: role}
	if err := id.Validate(); err != nil {
		return nil, invalid("a token for a CLI user needs --user NAME: %v", err)
	}
	if req.GetUses() > 1 {
		return nil, invalid("--uses is for join tokens; a user's token serves until it expires")
	}
	ttl := defaultTokenTTL
	if req.GetTtl() != nil {
		ttl = req.GetTtl().AsDuration()
	}
	if ttl <= 0 || ttl > maxTokenTTL {
		return nil, invalid("--ttl %s: between 1s and %s", ttl, maxTokenTTL)
	}
	tok := tlsx.NewAccessToken(s.ca.Cert)
	t := time.Now()
	rec := &v1.AccessToken{Id: tok.ID, SecretHash: tok.SecretHash(), User: id.Name, Role: string(role), CreatedAt: timestamppb.New(t),
		ExpiresAt: timestamppb.New(t.Add(ttl)), CreatedBy: who(ctx)}
	if _, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_CreateAccessToken{CreateAccessToken: &v1.CreateAccessToken{Token: rec}}}); err != nil {
		return nil, err
	}
	s.log.Info("access token created", "token", tok.ID, "user", id.Name, "role", role, "expires", rec.GetExpiresAt().AsTime(), "by", rec.GetCreatedBy())
	return &v1.CreateJoinTokenResponse{Token: tok.String(), ExpiresAt: rec.GetExpiresAt()}, nil
}

// bearerIdentity checks a call's bearer token (authorization metadata):
// the identity it names, or why it is refused. ok is false when the call
// carries none.
func (s *Server) bearerIdentity(ctx context.Context) (id tlsx.Identity, ok bool, err error) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get("authorization")
	if len(v) == 0 {
		return tlsx.Identity{}, false, nil
	}
	id, err = s.bearerFromHeader(v[0])
	return id, true, err
}

// bearerFromHeader checks an authorization header's access token (gRPC
// metadata, or HTTP on --metrics-addr) and returns its user.
func (s *Server) bearerFromHeader(header string) (tlsx.Identity, error) {
	raw, found := strings.CutPrefix(header, "Bearer ")
	if !found {
		return tlsx.Identity{}, errors.New("the authorization header is not a bearer token")
	}
	tok, err := tlsx.ParseAccessToken(raw)
	if err != nil {
		return tlsx.Identity{}, err
	}
	rec, err := s.fsm.Store().Read().AccessToken(tok.ID)
	if err != nil || subtle.ConstantTimeCompare(rec.GetSecretHash(), tok.SecretHash()) != 1 {
		return tlsx.Identity{}, fmt.Errorf("access token %s is not valid here (unknown, or not this cluster's)", tok.ID)
	}
	if exp := rec.GetExpiresAt().AsTime(); !time.Now().Before(exp) {
		return tlsx.Identity{}, fmt.Errorf("access token %s of user %s expired at %s: ask an admin for a new one (tidemark token create --role %s --user %s)",
			tok.ID, rec.GetUser(), exp.UTC().Format(time.RFC3339), rec.GetRole(), rec.GetUser())
	}
	return tlsx.Identity{Kind: tlsx.KindUser, Name: rec.GetUser(), Role: tlsx.Role(rec.GetRole())}, nil
}

func (c *controlService) Join(ctx context.Context, req *v1.JoinRequest) (*v1.JoinResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.Join)
	}
	if s.ca == nil {
		return nil, catalog.Errorf(ErrNotController, "%v", ErrNoCA)
	}
	tok, err := tlsx.ParseJoinToken(req.GetToken())
	if err != nil {
		return nil, invalid("%v", err)
	}
	id := tlsx.Identity{Kind: tlsx.Kind(req.GetRole()), Name: req.GetName()}
	if err := id.Validate(); err != nil || (id.Kind != tlsx.KindAgent && id.Kind != tlsx.KindController) {
		return nil, invalid("join as %q named %q: want role agent or controller and a name", req.GetRole(), req.GetName())
	}
	if id.Kind == tlsx.KindAgent && len(req.GetCsr()) == 0 {
		return nil, invalid("an agent joins with a certificate signing request")
	}
	resp, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_ConsumeJoinToken{ConsumeJoinToken: &v1.ConsumeJoinToken{
		Id: tok.ID, SecretHash: tok.SecretHash(), Role: req.GetRole(), Now: now(), Name: req.GetName(),
	}}})
	if err != nil {
		return nil, err
	}
	if t, _ := resp.Value.(*v1.JoinToken); t.GetSecretHash() == nil {
		return nil, invalid("join token %s expired at %s", tok.ID, t.GetExpiresAt().AsTime().UTC().Format(time.RFC3339))
	}
	out := &v1.JoinResponse{CaPem: s.ca.CertPEM()}
	if id.Kind == tlsx.KindAgent {
		if out.CertPem, err = s.ca.SignCSR(req.GetCsr(), id, s.cfg.TLS.AgentCertValidity); err != nil {
			return nil, invalid("%v", err)
		}
	} else {
		ca := s.fsm.Store().Read().ClusterCA()
		if ca == nil {
			return nil, catalog.Errorf(ErrNoLeader, "the cluster CA is not in the catalog yet; retry")
		}
		out.CaPem, out.SealedCaKey = ca.GetCertPem(), ca.GetSealedKey()
	}
	s.log.Info("joined with a token", "token", tok.ID, "as", id.String())
	return out, nil
}

func (c *controlService) RevokeAgent(ctx context.Context, req *v1.RevokeAgentRequest) (*v1.RevokeAgentResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.RevokeAgent)
	}
	if req.GetName() == "" {
		return nil, invalid("the agent's name is required")
	}
	if _, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_RevokeAgent{RevokeAgent: &v1.RevokeAgent{Revocation: &v1.Revocation{
		Name: req.GetName(), RevokedAt: now(), RevokedBy: who(ctx),
	}}}}); err != nil {
		return nil, err
	}
	was := s.agents.cut(req.GetName(), fmt.Sprintf("agent %s was revoked", req.GetName()))
	s.log.Info("agent revoked", "agent", req.GetName(), "was_connected", was, "by", who(ctx))
	return &v1.RevokeAgentResponse{WasConnected: was}, nil
}

// revoked reports whether id may no longer connect (an agent revoked and
// not joined again since).
func (s *Server) revoked(id tlsx.Identity) bool {
	return id.Kind == tlsx.KindAgent && s.fsm.Store().Read().Revocation(id.Name) != nil
}

// publishCA records the cluster CA this node made at bootstrap in the
// catalog, once: the catalog is where joining controllers get it from.
func (s *Server) publishCA(ctx context.Context) {
	if s.ca == nil || s.fsm.Store().Read().ClusterCA() != nil {
		return
	}
	sealed, err := os.ReadFile(filepath.Join(s.cfg.DataDir, tlsDir, caSealedFile))
	if err != nil {
		s.log.Warn("cannot publish the cluster CA", "err", err)
		return
	}
	if _, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_SetClusterCa{SetClusterCa: &v1.SetClusterCA{Ca: &v1.ClusterCA{
		CertPem: s.ca.CertPEM(), SealedKey: sealed,
	}}}}); err != nil {
		s.log.Warn("cannot publish the cluster CA", "err", err)
	}
}

func (c *controlService) RenewCertificate(ctx context.Context, req *v1.RenewCertificateRequest) (*v1.RenewCertificateResponse, error) {
	s := c.s
	id := callerOf(ctx)
	if id.Kind != tlsx.KindAgent {
		return nil, invalid("only agents renew their certificates here")
	}
	if s.ca == nil {
		return nil, catalog.Errorf(ErrNotController, "%v", ErrNoCA)
	}
	cert, err := s.ca.SignCSR(req.GetCsr(), id, s.cfg.TLS.AgentCertValidity)
	if err != nil {
		return nil, invalid("%v", err)
	}
	s.log.Info("agent certificate renewed", "agent", id.Name)
	return &v1.RenewCertificateResponse{CertPem: cert}, nil
}
