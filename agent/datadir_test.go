package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/engines/physical/physicaltest"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestDatadirRestoreJob: a restore job with a target datadir writes a
// physical backup (mariabackup's, of the agent's running instance) into a
// new directory on the agent's host and prepares it; a server started on
// it equals the source at the backup. The same job into the now non-empty
// directory fails saying so, and a physical backup without a datadir is
// refused naming --to-datadir. The instance's server is not touched.
func TestDatadirRestoreJob(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t)
	testenv.LoadSample(t, m.DB(t), "shop", 500)
	want := testenv.Checksums(t, m.DB(t), "shop")
	repoURI := newRepo(t)
	man := physicaltest.Mariabackup(t, openRepo(t, repoURI), m, "db-d")
	m.Exec(t, "DROP DATABASE shop") // after the backup

	fc := startFake(t)
	cfg := testConfig(t, "db-d", fc.addr)
	cfg.MySQL = m.DSN
	cfg.Repo = repoURI
	runAgent(t, cfg)
	s := fc.next(t, 10*time.Second)

	dir := filepath.Join(t.TempDir(), "datadir")
	job := func(id, datadir string) *v1.Job {
		return &v1.Job{Id: id, Kind: v1.JobKind_JOB_KIND_RESTORE, Instance: "db-d", Attempt: 1,
			Params: &v1.Job_Restore{Restore: &v1.RestoreParams{BackupId: man.BackupId, TargetInstance: "db-d", TargetDatadir: datadir}}}
	}
	s.assign(job("r-dd", dir), lease("r-dd", 1, 2))
	msg := s.result(t, "r-dd")
	if res := msg.GetJobResult(); !res.GetOk() || res.GetBackupId() != man.BackupId {
		t.Fatalf("result %v", res)
	}
	s.ack(msg.GetSeq())
	if physical.Unfinished(dir) {
		t.Fatal("marker left after a successful job")
	}

	s.assign(job("r-again", dir), lease("r-again", 1, 3))
	msg = s.result(t, "r-again")
	if res := msg.GetJobResult(); res.GetOk() || !strings.Contains(res.GetError(), "not empty") {
		t.Fatalf("restore into the non-empty dir: %v", res)
	}
	s.ack(msg.GetSeq())

	s.assign(job("r-nodir", ""), lease("r-nodir", 1, 4))
	msg = s.result(t, "r-nodir")
	if res := msg.GetJobResult(); res.GetOk() || !strings.Contains(res.GetError(), "--to-datadir") {
		t.Fatalf("physical backup without a datadir: %v", res)
	}
	s.ack(msg.GetSeq())

	var n int
	if err := m.DB(t).QueryRow("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = 'shop'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("the instance's server was touched (shop: %d, %v)", n, err)
	}
	got := testenv.StartMariaDB(t, testenv.MariaDBOptions{DataDir: dir, Name: "restored"})
	sums := testenv.Checksums(t, got.DB(t), "shop")
	if len(sums) != len(want) {
		t.Fatalf("restored tables %v, want %v", sums, want)
	}
	for k, w := range want {
		if sums[k] != w {
			t.Errorf("table %s = %+v, want %+v", k, sums[k], w)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, physical.InProgressMarker)); !os.IsNotExist(err) {
		t.Errorf("marker: %v", err)
	}
}
