package controller_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Timings for loopback: elections in well under a second, leases that
// expire within a test's patience.
const (
	testHeartbeat = 100 * time.Millisecond
	testLease     = 600 * time.Millisecond
)

// startInProcess runs a single bootstrapped controller node in the test
// process (so the race detector sees the server) and returns it with a
// client connection once it leads.
func startInProcess(t *testing.T, mut func(*controller.Config)) (*controller.Server, *client.Conn) {
	t.Helper()
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "controller.log"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := controller.DefaultConfig()
	cfg.NodeID, cfg.DataDir, cfg.Bootstrap = "n1", filepath.Join(dir, "data"), true
	cfg.GRPCAddr, cfg.RaftAddr = testenv.FreeAddr(t), testenv.FreeAddr(t)
	cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	cfg.Raft.CommitTimeout = 5 * time.Millisecond
	cfg.HeartbeatInterval, cfg.LeaseDuration = testHeartbeat, testLease
	cfg.ApplyTimeout = 3 * time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.RaftLogOutput, cfg.RaftLogLevel = logf, "warn"
	if mut != nil {
		mut(&cfg)
	}
	if cfg.TLS == (controller.DefaultConfig().TLS) {
		cfg.TLS.Files = testCA(t).Files(t, testenv.Controller(cfg.NodeID))
	}
	srv, err := controller.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		_ = logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("controller log:\n%s", b)
		}
	})
	opts := adminOpts(t)
	if cfg.TLS.CAKeyFile != "" {
		opts = bootstrapAdmin(t, cfg.DataDir)
	}
	c, err := client.DialAny(context.Background(), []string{srv.Addr()}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	testenv.WaitFor(t, "the node to know a leader", 10*time.Second, func() error {
		st, err := c.Cluster.NodeStatus(context.Background(), &v1.NodeStatusRequest{})
		if err != nil {
			return err
		}
		if (cfg.Bootstrap && st.GetState() != v1.MemberState_MEMBER_STATE_LEADER) || st.GetLeaderId() == "" {
			return status.Errorf(codes.Unavailable, "state %s, leader %q", st.GetState(), st.GetLeaderId())
		}
		if cfg.Bootstrap {
			// A consistent read answers once the leader has taken over
			// (barrier, agent hub): before, agents are refused.
			_, err := c.Control.ListAgents(context.Background(), &v1.ListAgentsRequest{})
			return err
		}
		return nil
	})
	return srv, c
}

// testCA issues every credential of the package's tests: controllers
// started in-process and as processes, fake agents and the CLI.
var (
	testCAOnce sync.Once
	testCAv    *testenv.TestCA
)

func testCA(t testing.TB) *testenv.TestCA {
	testCAOnce.Do(func() { testCAv = testenv.NewTestCA(t) })
	return testCAv
}

// adminOpts dials as an admin CLI user.
func adminOpts(t testing.TB) client.Options {
	return client.Options{TLS: testCA(t).Source(t, testenv.Admin()).ClientConfig()}
}

// bootstrapAdmin dials with the admin credential a bootstrap that made
// the cluster CA wrote into dataDir.
func bootstrapAdmin(t testing.TB, dataDir string) client.Options {
	t.Helper()
	dir := controller.AdminCredentials(dataDir)
	src, err := tlsx.FromFiles(tlsx.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem")})
	if err != nil {
		t.Fatal(err)
	}
	return client.Options{TLS: src.ClientConfig()}
}

// agentCreds is the transport of a fake agent named name.
func agentCreds(t testing.TB, name string) credentials.TransportCredentials {
	return credentials.NewTLS(testCA(t).Source(t, testenv.Agent(name)).ClientConfig())
}

// wantCode checks a gRPC error's code and that its message contains msg.
func wantCode(t testing.TB, err error, code codes.Code, msg string) {
	t.Helper()
	st := status.Convert(err)
	if err == nil || st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Fatalf("got %v, want %s containing %q", err, code, msg)
	}
}

func getJob(t testing.TB, c *client.Conn, id string) *v1.Job {
	t.Helper()
	r, err := c.Control.GetJob(context.Background(), &v1.GetJobRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetJob()
}

func waitJobState(t testing.TB, c *client.Conn, id string, state v1.JobState, d time.Duration) *v1.Job {
	t.Helper()
	var j *v1.Job
	testenv.WaitFor(t, "job "+id+" to be "+state.String(), d, func() error {
		r, err := c.Control.GetJob(context.Background(), &v1.GetJobRequest{Id: id})
		if err != nil {
			return err
		}
		j = r.GetJob()
		if j.GetState() != state {
			return status.Errorf(codes.FailedPrecondition, "job is %s (%s)", j.GetState(), j.GetReason())
		}
		return nil
	})
	return j
}

func submitBackup(t testing.TB, c *client.Conn, instance string) *v1.Job {
	t.Helper()
	r, err := c.Control.SubmitBackup(context.Background(), &v1.SubmitBackupRequest{Instance: instance, Engine: "logical"})
	if err != nil {
		t.Fatalf("SubmitBackup(%s): %v", instance, err)
	}
	return r.GetJob()
}

// startInProcessCluster starts three in-process nodes (n1 bootstraps, n2
// and n3 join it), each adjusted by adjust (which may be nil), and returns
// them in that order with an admin client of n1.
func startInProcessCluster(t *testing.T, adjust func(*controller.Config)) ([]*controller.Server, *client.Conn) {
	t.Helper()
	first, c := startInProcess(t, adjust)
	servers := []*controller.Server{first}
	for _, id := range []string{"n2", "n3"} {
		srv, _ := startInProcess(t, func(cfg *controller.Config) {
			if adjust != nil {
				adjust(cfg)
			}
			cfg.NodeID, cfg.Bootstrap, cfg.Join = id, false, []string{first.Addr()}
		})
		servers = append(servers, srv)
	}
	return servers, c
}
