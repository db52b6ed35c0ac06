package agent

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestRelayJobs: an agent whose repository is relay:// sends a job that
// names the controller's --repo through the relay and reports that URI as
// where the backup lives; a job naming another repository goes there
// directly. The controller claims a --repo path the agent could not write
// to itself, so a direct write would fail instead of passing by accident.
func TestRelayJobs(t *testing.T) {
	t.Parallel()
	m, scratch := testenv.StartMariaDB(t), testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "scratch"})
	testenv.LoadSample(t, m.DB(t), "shop", 200)

	served := newRepo(t) // what the relay really writes to
	st, err := location.Open(context.Background(), served, location.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	const claimed = "file:///nonexistent/controller-repo" // the controller's --repo, as it tells agents
	fc := startFake(t, func(f *fakeController) {
		v1.RegisterRelayServiceServer(f.srv, controller.NewRelayServer(st))
		f.answer = func(reg *v1.Register) *v1.ControllerMessage {
			return &v1.ControllerMessage{Msg: &v1.ControllerMessage_Registered{Registered: &v1.Registered{
				AgentId: "agent-" + reg.GetName(), HeartbeatInterval: durationpb.New(f.heartbeat),
				LeaseDuration: durationpb.New(3 * f.heartbeat), ControllerNode: f.addr, RelayRepositoryUri: claimed}}}
		}
	})
	cfg := testConfig(t, "db-1", fc.addr)
	cfg.MySQL = m.DSN
	cfg.Instances = map[string]string{"db-1/scratch": scratch.DSN}
	cfg.Repo = "relay://" + fc.addr
	runAgent(t, cfg)
	s := fc.next(t, 10*time.Second)
	if c := s.reg.GetInstances()[0].GetCapabilities(); !c.GetStorageReachable() {
		t.Fatalf("relay repository not reachable: %s", c.GetStorageError())
	}

	run := func(job *v1.Job) *v1.JobResultReport {
		t.Helper()
		s.assign(job, lease(job.GetId(), 2, 10))
		msg := s.result(t, job.GetId())
		s.ack(msg.GetSeq())
		return msg.GetJobResult()
	}
	for _, named := range []string{claimed, ""} {
		id := "relayed" + map[string]string{claimed: "-named", "": "-default"}[named]
		job := backupJob("job-"+id, "db-1", id)
		job.GetBackup().RepositoryUri = named
		res := run(job)
		if !res.GetOk() || res.GetRepositoryUri() != claimed {
			t.Fatalf("job naming %q: result %v, want ok in %s", named, res, claimed)
		}
		if _, err := openRepo(t, served).LoadManifest(context.Background(), id); err != nil {
			t.Fatalf("job naming %q: manifest not in the relayed repository: %v", named, err)
		}
	}

	// A restore of the relayed backup reads it back through the relay.
	res := run(&v1.Job{Id: "job-restore", Kind: v1.JobKind_JOB_KIND_RESTORE, Instance: "db-1/scratch",
		Params: &v1.Job_Restore{Restore: &v1.RestoreParams{BackupId: "relayed-named", TargetInstance: "db-1/scratch", RepositoryUri: claimed}}})
	if !res.GetOk() {
		t.Fatalf("restore through the relay: %v", res)
	}
	testenv.Compare(t, m.DB(t), scratch.DB(t), "shop")

	// Another repository, named by the job, is written directly.
	direct := newRepo(t)
	job := backupJob("job-direct", "db-1", "direct")
	job.GetBackup().RepositoryUri = direct
	if res := run(job); !res.GetOk() || res.GetRepositoryUri() != direct {
		t.Fatalf("direct job: %v", res)
	}
	if _, err := openRepo(t, direct).LoadManifest(context.Background(), "direct"); err != nil {
		t.Fatal(err)
	}
}
