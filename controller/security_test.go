package controller_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// ownCA makes a node bootstrap its own cluster CA, sealed with a key file
// in dir.
func ownCA(keyFile string) func(*controller.Config) {
	return func(c *controller.Config) { c.TLS.CAKeyFile = keyFile }
}

// joinAgent enrols an agent with a join token as the agent does (a CSR;
// the key stays here) and returns its credential.
func joinAgent(t *testing.T, addr, token, name string) (credentials.TransportCredentials, error) {
	t.Helper()
	tok, err := tlsx.ParseJoinToken(token)
	if err != nil {
		return nil, err
	}
	keyPEM, csr, err := tlsx.NewCSR(testenv.Agent(name))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Join(context.Background(), []string{addr}, client.Options{TLS: tlsx.PinnedClientConfig(tok.Pin)},
		&v1.JoinRequest{Token: token, Name: name, Role: "agent", Csr: csr})
	if err != nil {
		return nil, err
	}
	src, err := tlsx.FromPEM(resp.GetCaPem(), resp.GetCertPem(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if src.Identity() != testenv.Agent(name) {
		t.Fatalf("joined as %v", src.Identity())
	}
	return credentials.NewTLS(src.ClientConfig()), nil
}

// TestJoinTokens: a token gets an agent its certificate once; a reused,
// expired or wrong-role token and a token of another cluster are refused;
// a revoked agent is cut off and cannot come back until it joins again.
func TestJoinTokens(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "ca.key")
	srv, c := startInProcess(t, ownCA(keyFile))
	ctx := context.Background()
	token := func(role string, ttl time.Duration, uses uint32) string {
		t.Helper()
		r, err := c.Control.CreateJoinToken(ctx, &v1.CreateJoinTokenRequest{Role: role, Ttl: durationpb.New(ttl), Uses: uses})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetToken()
	}

	once := token("agent", time.Hour, 1)
	creds, err := joinAgent(t, srv.Addr(), once, "db1")
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := tryAgentWith(t, srv.Addr(), "db1", creds, nil, nil)
	if err != nil {
		t.Fatalf("the joined agent cannot register: %v", err)
	}
	// Its certificate does not let it pose as another agent.
	if _, _, err := tryAgentWith(t, srv.Addr(), "db2", creds, nil, nil); err == nil || !strings.Contains(err.Error(), `the certificate names agent db1, but it registered as agent "db2"`) {
		t.Fatalf("agent db1 registered as db2: %v", err)
	}

	// It renews its certificate over the current one, for its own name.
	ac, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ac.Close() }()
	_, csr, _ := tlsx.NewCSR(testenv.Agent("someone-else"))
	rn, err := v1.NewControlServiceClient(ac).RenewCertificate(ctx, &v1.RenewCertificateRequest{Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	if blk, _ := pem.Decode(rn.GetCertPem()); blk == nil {
		t.Fatal("no certificate")
	} else if cert, err := x509.ParseCertificate(blk.Bytes); err != nil {
		t.Fatal(err)
	} else if id, err := tlsx.IdentityOf(cert); err != nil || id != testenv.Agent("db1") {
		t.Fatalf("renewed certificate names %v (%v), want the caller's own name", id, err)
	}
	_, err = c.Control.RenewCertificate(ctx, &v1.RenewCertificateRequest{Csr: csr})
	wantCode(t, err, codes.PermissionDenied, "not a CLI call")

	if _, err := joinAgent(t, srv.Addr(), once, "db9"); err == nil || !strings.Contains(err.Error(), "is not valid: it was used up") {
		t.Fatalf("reused one-time token: %v", err)
	}
	short := token("agent", time.Second, 5)
	time.Sleep(1100 * time.Millisecond)
	if _, err := joinAgent(t, srv.Addr(), short, "db9"); err == nil || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("expired token: %v", err)
	}
	ctlTok := token("controller", time.Hour, 1)
	if _, err := joinAgent(t, srv.Addr(), ctlTok, "db9"); err == nil || !strings.Contains(err.Error(), "is for a controller, not a agent") {
		t.Fatalf("wrong-role token: %v", err)
	}
	// A token whose pin is another CA's: the joining host refuses the
	// controller before sending the secret.
	other := testenv.NewTestCA(t)
	forged, _ := tlsx.ParseJoinToken(token("agent", time.Hour, 1))
	forged.Pin = tlsx.CAPin(other.CA.Cert)
	if _, err := joinAgent(t, srv.Addr(), forged.String(), "db9"); err == nil || !strings.Contains(err.Error(), "does not match the join token's pin") {
		t.Fatalf("token of another cluster: %v", err)
	}
	if _, err := c.Control.CreateJoinToken(ctx, &v1.CreateJoinTokenRequest{Role: "root"}); err == nil || !strings.Contains(err.Error(), `--role "root": use agent or controller`) {
		t.Fatalf("token for role root: %v", err)
	}

	// Revocation cuts the stream, and the agent is refused from then on.
	r, err := c.Control.RevokeAgent(ctx, &v1.RevokeAgentRequest{Name: "db1"})
	if err != nil || !r.GetWasConnected() {
		t.Fatalf("revoke: %v %v", r, err)
	}
	if err := a.streamEnded(5 * time.Second); err == nil {
		t.Fatal("the revoked agent's stream stays open")
	}
	_, _, err = tryAgentWith(t, srv.Addr(), "db1", creds, nil, nil)
	wantCode(t, err, codes.PermissionDenied, "agent db1 is revoked")
	// Joining again (a new token) lifts the revocation.
	creds, err = joinAgent(t, srv.Addr(), token("agent", time.Hour, 1), "db1")
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := tryAgentWith(t, srv.Addr(), "db1", creds, nil, nil)
	if err != nil {
		t.Fatalf("re-joined agent: %v", err)
	}
	b.close()
}

// TestControllerJoinToken: a second node joins a cluster with its own CA
// with a controller token and the cluster's key file; a wrong key file is
// refused at start.
func TestControllerJoinToken(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "ca.key")
	first, c := startInProcess(t, ownCA(keyFile))
	r, err := c.Control.CreateJoinToken(context.Background(), &v1.CreateJoinTokenRequest{Role: "controller", Uses: 2})
	if err != nil {
		t.Fatal(err)
	}
	wrongKey := filepath.Join(t.TempDir(), "wrong.key")
	if err := os.WriteFile(wrongKey, []byte(strings.Repeat("x", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := controller.DefaultConfig()
	cfg.NodeID, cfg.DataDir, cfg.Join = "n2", t.TempDir(), []string{first.Addr()}
	cfg.GRPCAddr, cfg.RaftAddr = testenv.FreeAddr(t), testenv.FreeAddr(t)
	cfg.TLS.CAKeyFile, cfg.TLS.JoinToken = wrongKey, r.GetToken()
	if _, err := controller.Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "does not open the cluster's CA key") {
		t.Fatalf("wrong key file: %v", err)
	}
	cfg.DataDir, cfg.TLS.CAKeyFile = t.TempDir(), keyFile
	cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	second, err := controller.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(second.Shutdown)
	testenv.WaitFor(t, "two members", 10*time.Second, func() error {
		st, err := c.Control.ClusterStatus(context.Background(), &v1.ClusterStatusRequest{})
		if err != nil {
			return err
		}
		if len(st.GetMembers()) != 2 {
			return fmt.Errorf("members %v", st.GetMembers())
		}
		for _, m := range st.GetMembers() {
			if m.GetState() == v1.MemberState_MEMBER_STATE_UNREACHABLE {
				return fmt.Errorf("member %s unreachable", m.GetId())
			}
		}
		return nil
	})
}

// TestRoles: each role against each class of RPC, and callers without a
// certificate or with one of another CA.
func TestRoles(t *testing.T) {
	srv, admin := startInProcess(t, nil)
	ctx := context.Background()
	dial := func(id tlsx.Identity) *client.Conn {
		t.Helper()
		cc, err := client.DialAny(ctx, []string{srv.Addr()}, client.Options{TLS: testCA(t).Source(t, id).ClientConfig()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return cc
	}
	viewer, operator := dial(testenv.User("vera", tlsx.RoleViewer)), dial(testenv.User("otto", tlsx.RoleOperator))
	a, err := connectAgent(t, []string{srv.Addr()}, "db1")
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	if _, err := admin.Control.ListJobs(ctx, &v1.ListJobsRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := viewer.Control.ListAgents(ctx, &v1.ListAgentsRequest{}); err != nil {
		t.Fatalf("viewer lists: %v", err)
	}
	_, err = viewer.Control.SubmitBackup(ctx, &v1.SubmitBackupRequest{Instance: "db1", Engine: "logical"})
	wantCode(t, err, codes.PermissionDenied, "user vera (viewer) may not call /tidemark.v1.ControlService/SubmitBackup: it needs the operator role")
	if _, err := operator.Control.SubmitBackup(ctx, &v1.SubmitBackupRequest{Instance: "db1", Engine: "logical"}); err != nil {
		t.Fatalf("operator backs up: %v", err)
	}
	restore := &v1.SubmitRestoreRequest{Params: &v1.RestoreParams{BackupId: "nope", TargetInstance: "db1", DropExisting: true}}
	_, err = operator.Control.SubmitRestore(ctx, restore)
	wantCode(t, err, codes.PermissionDenied, "a restore with --drop-existing needs the admin role")
	// The admin passes the check (and the restore fails on its own merits).
	_, err = admin.Control.SubmitRestore(ctx, restore)
	wantCode(t, err, codes.NotFound, "nope")
	// An instance labelled protected=true takes restores from admins only.
	p, _, err := tryAgent(t, srv.Addr(), "prod1", map[string]string{controller.ProtectedLabel: "true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	testenv.WaitFor(t, "instance prod1 in the catalog", 5*time.Second, func() error {
		_, err := admin.Control.ListInstances(ctx, &v1.ListInstancesRequest{})
		return err
	})
	_, err = operator.Control.SubmitRestore(ctx, &v1.SubmitRestoreRequest{Params: &v1.RestoreParams{BackupId: "nope", TargetInstance: "prod1"}})
	wantCode(t, err, codes.PermissionDenied, "a restore into instance prod1 (labelled protected=true) needs the admin role")
	_, err = operator.Control.SubmitRestore(ctx, &v1.SubmitRestoreRequest{Params: &v1.RestoreParams{BackupId: "nope", TargetInstance: "db1"}})
	wantCode(t, err, codes.NotFound, "nope")
	_, err = operator.Control.CreateJoinToken(ctx, &v1.CreateJoinTokenRequest{Role: "agent"})
	wantCode(t, err, codes.PermissionDenied, "it needs the admin role")
	_, err = operator.Control.RemoveMember(ctx, &v1.RemoveMemberRequest{Id: "n9"})
	wantCode(t, err, codes.PermissionDenied, "it needs the admin role")

	// An agent's certificate is not a CLI credential.
	ac, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(agentCreds(t, "db1")))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ac.Close() }()
	_, err = v1.NewControlServiceClient(ac).ListJobs(ctx, &v1.ListJobsRequest{})
	wantCode(t, err, codes.PermissionDenied, "agent db1 may not call /tidemark.v1.ControlService/ListJobs")

	// No certificate: refused, saying what to give.
	anon, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: testCA(t).CA.Pool(), ServerName: tlsx.ControllerServerName,
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = anon.Close() }()
	_, err = v1.NewControlServiceClient(anon).ListJobs(ctx, &v1.ListJobsRequest{})
	wantCode(t, err, codes.Unauthenticated, "controller n1 requires a client certificate of the cluster CA")

	// A certificate of another CA: the handshake fails.
	strangerCfg := testenv.NewTestCA(t).Source(t, testenv.Admin()).ClientConfig()
	strangerCfg.RootCAs = testCA(t).CA.Pool() // it trusts the server; the server does not trust it
	_, err = client.DialAny(ctx, []string{srv.Addr()}, client.Options{TLS: strangerCfg})
	// (The client sees the server's alert, or only the connection
	// closed, depending on timing.)
	if err == nil {
		t.Fatal("a certificate of another CA was accepted")
	}
	t.Logf("certificate of another CA: %v", err)
}

// TestAudit: a restore is recorded before it runs and with its outcome,
// with who asked and what; a denied call never reaches the trail.
func TestAudit(t *testing.T) {
	srv, admin := startInProcess(t, nil)
	ctx := context.Background()
	vc, err := client.DialAny(ctx, []string{srv.Addr()}, client.Options{TLS: testCA(t).Source(t, testenv.User("vera", tlsx.RoleViewer)).ClientConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = vc.Close() }()
	if _, err := vc.Control.SubmitRestore(ctx, &v1.SubmitRestoreRequest{Params: &v1.RestoreParams{BackupId: "b0", TargetInstance: "db1"}}); err == nil {
		t.Fatal("a viewer restored")
	}
	_, err = admin.Control.SubmitRestore(ctx, &v1.SubmitRestoreRequest{Params: &v1.RestoreParams{BackupId: "b1", TargetInstance: "db1", DropExisting: true}})
	wantCode(t, err, codes.NotFound, "b1")
	r, err := admin.Control.ListAudit(ctx, &v1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range r.GetRecords() {
		got = append(got, fmt.Sprintf("%s %s %s backup_id=%s drop_existing=%s: %s", a.GetWho(), strings.TrimPrefix(a.GetRpc(), "/tidemark.v1."), a.GetTarget(),
			a.GetFlags()["backup_id"], a.GetFlags()["drop_existing"], a.GetOutcome()))
	}
	if len(got) != 2 || got[0] != "user admin (admin) ControlService/SubmitRestore db1 backup_id=b1 drop_existing=true: started" ||
		!strings.HasPrefix(got[1], "user admin (admin) ControlService/SubmitRestore db1 backup_id=b1 drop_existing=true: error: ") {
		t.Fatalf("audit trail:\n%s", strings.Join(got, "\n"))
	}
	_, err = vc.Control.ListAudit(ctx, &v1.ListAuditRequest{})
	wantCode(t, err, codes.PermissionDenied, "it needs the admin role")
}

// TestAccessTokens: a CLI user's bearer token carries its role and its
// expiry; a bad or expired one is refused, saying why.
func TestAccessTokens(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "ca.key")
	srv, admin := startInProcess(t, ownCA(keyFile))
	ctx := context.Background()
	mk := func(role, user string, ttl time.Duration) string {
		t.Helper()
		r, err := admin.Control.CreateJoinToken(ctx, &v1.CreateJoinTokenRequest{Role: role, User: user, Ttl: durationpb.New(ttl)})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetToken()
	}
	dial := func(raw string) *client.Conn {
		t.Helper()
		tok, err := tlsx.ParseAccessToken(raw)
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.DialAny(ctx, []string{srv.Addr()}, client.Options{TLS: tlsx.PinnedClientConfig(tok.Pin), Bearer: raw})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	otto := dial(mk("operator", "otto", time.Hour))
	if _, err := otto.Control.ListJobs(ctx, &v1.ListJobsRequest{}); err != nil {
		t.Fatalf("operator token lists: %v", err)
	}
	_, err := otto.Control.CreateJoinToken(ctx, &v1.CreateJoinTokenRequest{Role: "agent"})
	wantCode(t, err, codes.PermissionDenied, "user otto (operator) may not call /tidemark.v1.ControlService/CreateJoinToken: it needs the admin role")

	short := mk("viewer", "vera", time.Second)
	vera := dial(short)
	time.Sleep(1100 * time.Millisecond)
	_, err = vera.Control.ListJobs(ctx, &v1.ListJobsRequest{})
	wantCode(t, err, codes.Unauthenticated, "of user vera expired at")

	tok, _ := tlsx.ParseAccessToken(short)
	tok.Secret = strings.Repeat("0", len(tok.Secret))
	_, err = client.DialAny(ctx, []string{srv.Addr()}, client.Options{TLS: tlsx.PinnedClientConfig(tok.Pin), Bearer: tok.String()})
	if err == nil || !strings.Contains(err.Error(), "is not valid here") {
		t.Fatalf("token with a wrong secret: %v", err)
	}

	if _, err := admin.Control.CreateJoinToken(ctx, &v1.CreateJoinTokenRequest{Role: "operator"}); err == nil || !strings.Contains(err.Error(), "needs --user NAME") {
		t.Fatalf("user token without a user: %v", err)
	}
	// The trail names the token's user.
	if _, err := otto.Control.CancelJob(ctx, &v1.CancelJobRequest{Id: "j-none"}); err == nil {
		t.Fatal("cancelled a job that is not there")
	}
	r, err := admin.Control.ListAudit(ctx, &v1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	last := r.GetRecords()[len(r.GetRecords())-1]
	if last.GetWho() != "user otto (operator)" || last.GetTarget() != "j-none" {
		t.Fatalf("last audit record %v", last)
	}
}

// TestAddMemberOwnName: a controller certificate adds only the node it
// names.
func TestAddMemberOwnName(t *testing.T) {
	srv, _ := startInProcess(t, nil)
	cc, err := client.DialAny(context.Background(), []string{srv.Addr()}, client.Options{TLS: testCA(t).Source(t, testenv.Controller("n7")).ClientConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cc.Close() }()
	_, err = cc.Control.AddMember(context.Background(), &v1.AddMemberRequest{Id: "n8", Address: "127.0.0.1:1", RaftAddress: "127.0.0.1:2"})
	wantCode(t, err, codes.PermissionDenied, `controller n7 may not add node "n8"`)
}

// TestJoinUnlikeRepository: a node whose --repo holds another repository
// than the cluster's is refused at join, naming both; one with the same
// repository joins.
func TestJoinUnlikeRepository(t *testing.T) {
	ctx := context.Background()
	repo := func() (string, string) {
		dir := t.TempDir()
		st, err := file.Open(dir, file.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = st.Close() }()
		r, err := archive.Init(ctx, st, archive.InitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		id, err := archive.RepositoryID(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		return "file://" + dir, id
	}
	clusterRepo, clusterID := repo()
	otherRepo, otherID := repo()
	keyFile := filepath.Join(t.TempDir(), "ca.key")
	first, c := startInProcess(t, func(cfg *controller.Config) { ownCA(keyFile)(cfg); cfg.Repo = clusterRepo })
	tok, err := c.Control.CreateJoinToken(ctx, &v1.CreateJoinTokenRequest{Role: "controller", Uses: 2})
	if err != nil {
		t.Fatal(err)
	}
	cfg := controller.DefaultConfig()
	cfg.NodeID, cfg.DataDir, cfg.Join, cfg.Repo = "n2", t.TempDir(), []string{first.Addr()}, otherRepo
	cfg.GRPCAddr, cfg.RaftAddr = testenv.FreeAddr(t), testenv.FreeAddr(t)
	cfg.TLS.CAKeyFile, cfg.TLS.JoinToken = keyFile, tok.GetToken()
	cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	if srv, err := controller.Start(ctx, cfg); err == nil {
		srv.Shutdown()
		t.Fatal("a node with another repository joined")
	} else if !strings.Contains(err.Error(), "holds repository "+otherID) || !strings.Contains(err.Error(), "this cluster's holds "+clusterID) {
		t.Fatalf("join with another repository: %v", err)
	}
	cfg.DataDir, cfg.Repo = t.TempDir(), clusterRepo
	cfg.GRPCAddr, cfg.RaftAddr = testenv.FreeAddr(t), testenv.FreeAddr(t)
	second, err := controller.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("join with the cluster's repository: %v", err)
	}
	second.Shutdown()
}
