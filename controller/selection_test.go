package controller_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// btrfsCaps is what a real agent reports for MariaDB 10.11 on a Btrfs
// subvolume with Debian's mariadb-backup installed.
func btrfsCaps(fs v1.Filesystem) *v1.Capabilities {
	return &v1.Capabilities{
		Flavor: "mariadb", Version: "10.11.19", BinlogEnabled: true, BinlogFormat: "ROW", GtidMode: "ON",
		Datadir: "/srv/db/data", Filesystem: fs, SnapshotFreeBytes: 41 << 30, DataBytes: 12 << 30, StorageReachable: true,
		SelectionProbed: true, BackupTool: "mariabackup", BackupToolVersion: "10.11.19",
	}
}

// TestEngineSelection: explain through the controller, engine auto and a
// forced engine on submit, and drift recorded when a reconnecting agent
// reports a datadir moved off Btrfs.
func TestEngineSelection(t *testing.T) {
	srv, c := startInProcess(t, nil)
	ctx := context.Background()
	a, _, err := tryAgentCaps(t, srv.Addr(), "db1", agentCreds(t, "db1"), nil, nil, btrfsCaps(v1.Filesystem_FILESYSTEM_BTRFS))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("explain", func(t *testing.T) {
		r, err := c.Control.ExplainEngines(ctx, &v1.ExplainEnginesRequest{Instance: "db1"})
		if err != nil {
			t.Fatal(err)
		}
		d := r.GetDecision()
		if d.GetChosen() != "snapshot" || len(d.GetVerdicts()) != 4 ||
			d.GetVerdicts()[0].GetReason() != "snapshot: datadir on a btrfs subvolume /srv/db/data, 41 GiB free for a 12 GiB instance" ||
			d.GetVerdicts()[1].GetEngine() != "mariabackup" || !d.GetVerdicts()[1].GetOk() ||
			d.GetVerdicts()[3].GetReason() != "clone: server is MariaDB 10.11, clone needs MySQL ≥ 8.0.17" {
			t.Fatalf("decision %v", d)
		}
		r, err = c.Control.ExplainEngines(ctx, &v1.ExplainEnginesRequest{Instance: "db1", Portable: true})
		if err != nil || r.GetDecision().GetChosen() != "logical" || r.GetDecision().GetVerdicts()[1].GetOk() {
			t.Fatalf("portable: %v %v", r, err)
		}
		_, err = c.Control.ExplainEngines(ctx, &v1.ExplainEnginesRequest{Instance: "db1", Engines: []string{"snapshot", "xtra"}})
		wantCode(t, err, codes.InvalidArgument, `unknown engine "xtra": use auto or one of snapshot, clone, mariabackup, logical`)
		_, err = c.Control.ExplainEngines(ctx, &v1.ExplainEnginesRequest{Instance: "nope"})
		wantCode(t, err, codes.NotFound, `instance "nope" not found`)
	})

	t.Run("recorded at registration", func(t *testing.T) {
		in := instance(t, c.Control, "db1")
		if in.GetEngineDecision().GetChosen() != "snapshot" || in.GetEngineDecision().GetDecidedAt() == nil || len(in.GetEngineChanges()) != 0 {
			t.Fatalf("instance %v", in)
		}
	})

	t.Run("bad engines are refused and nothing starts", func(t *testing.T) {
		_, err := c.Control.SubmitBackup(ctx, &v1.SubmitBackupRequest{Instance: "db1", Engine: "clone"})
		wantCode(t, err, codes.FailedPrecondition, "instance db1 cannot run engine clone: clone: server is MariaDB 10.11, clone needs MySQL ≥ 8.0.17")
		_, err = c.Control.SubmitBackup(ctx, &v1.SubmitBackupRequest{Instance: "db1", Engine: "xtrabackupp"})
		wantCode(t, err, codes.InvalidArgument, `unknown engine "xtrabackupp": use auto or one of snapshot, clone, mariabackup, logical`)
		js, err := c.Control.ListJobs(ctx, &v1.ListJobsRequest{Instance: "db1"})
		if err != nil || len(js.GetJobs()) != 0 {
			t.Fatalf("jobs %v %v", js, err)
		}
	})

	t.Run("auto records engine and why", func(t *testing.T) {
		r, err := c.Control.SubmitBackup(ctx, &v1.SubmitBackupRequest{Instance: "db1", Engine: "auto"})
		if err != nil {
			t.Fatal(err)
		}
		bp := r.GetJob().GetBackup()
		if bp.GetEngine() != "snapshot" || !strings.Contains(bp.GetEngineReason(), "btrfs subvolume /srv/db/data") ||
			strings.Join(bp.GetFallbackEngines(), ",") != "mariabackup,logical" {
			t.Fatalf("backup params %v", bp)
		}
		asg := a.assignment(testenv.Wait(5 * time.Second))
		if asg.GetJob().GetBackup().GetEngine() != "snapshot" || len(asg.GetJob().GetBackup().GetFallbackEngines()) != 2 {
			t.Fatalf("assigned %v", asg.GetJob())
		}
		if _, err := c.Control.CancelJob(ctx, &v1.CancelJobRequest{Id: r.GetJob().GetId()}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("drift", func(t *testing.T) {
		a.close()
		var b *fakeAgent
		testenv.WaitFor(t, "the agent to reconnect with its datadir on ext4", 10*time.Second, func() error {
			var err error
			b, _, err = tryAgentCaps(t, srv.Addr(), "db1", agentCreds(t, "db1"), nil, nil, btrfsCaps(v1.Filesystem_FILESYSTEM_EXT4))
			return err
		})
		defer b.close()
		in := instance(t, c.Control, "db1")
		chs := in.GetEngineChanges()
		if in.GetEngineDecision().GetChosen() != "mariabackup" || len(chs) != 1 || chs[0].GetOldEngine() != "snapshot" || chs[0].GetNewEngine() != "mariabackup" ||
			chs[0].GetOldReason() != "snapshot: datadir /srv/db/data is on ext4, not on Btrfs, LVM or ZFS" || chs[0].GetAt() == nil {
			t.Fatalf("instance %v", in)
		}
		// The next auto backup runs the new choice.
		testenv.WaitFor(t, "the cancelled job to end", 10*time.Second, func() error {
			r, err := c.Control.SubmitBackup(ctx, &v1.SubmitBackupRequest{Instance: "db1"})
			if err != nil {
				return err
			}
			if e := r.GetJob().GetBackup().GetEngine(); e != "mariabackup" {
				t.Fatalf("engine %q after the move", e)
			}
			return nil
		})
		// A reconnect with nothing changed records nothing new.
		b.close()
		testenv.WaitFor(t, "the agent to reconnect unchanged", 10*time.Second, func() error {
			var err error
			b, _, err = tryAgentCaps(t, srv.Addr(), "db1", agentCreds(t, "db1"), nil, nil, btrfsCaps(v1.Filesystem_FILESYSTEM_EXT4))
			return err
		})
		if n := len(instance(t, c.Control, "db1").GetEngineChanges()); n != 1 {
			t.Fatalf("%d changes after an unchanged reconnect", n)
		}

		// A periodic re-probe reports on the live stream: the datadir is
		// on an LVM volume now.
		lvm := btrfsCaps(v1.Filesystem_FILESYSTEM_LVM)
		b.send(&v1.AgentMessage{Msg: &v1.AgentMessage_Register{Register: &v1.Register{
			Name: "db1", Capabilities: lvm, Instances: []*v1.Instance{{Name: "db1", Capabilities: lvm}},
		}}})
		testenv.WaitFor(t, "the re-probe's change to be recorded", 10*time.Second, func() error {
			in := instance(t, c.Control, "db1")
			if chs := in.GetEngineChanges(); len(chs) != 2 || chs[1].GetNewEngine() != "snapshot" ||
				!strings.Contains(chs[1].GetNewReason(), "an LVM logical volume /srv/db/data") || in.GetCapabilities().GetFilesystem() != v1.Filesystem_FILESYSTEM_LVM {
				return fmt.Errorf("instance %v", in)
			}
			return nil
		})
		// Another agent's name on this stream is refused.
		seq := b.send(&v1.AgentMessage{Msg: &v1.AgentMessage_Register{Register: &v1.Register{Name: "db2"}}})
		if e := b.answer(seq).GetError(); !strings.Contains(e.GetMessage(), `session of agent "db1" cannot report for agent "db2"`) {
			t.Fatalf("answer %v", e)
		}
	})
}

func instance(t *testing.T, c v1.ControlServiceClient, name string) *v1.Instance {
	t.Helper()
	r, err := c.ListInstances(context.Background(), &v1.ListInstancesRequest{Consistent: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range r.GetInstances() {
		if in.GetName() == name {
			return in
		}
	}
	t.Fatal(errors.New("instance " + name + " not listed"))
	return nil
}
