package binlog

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/secret"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/storage/s3"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestStreamObjectLock streams into a repository with Object Lock on a real
// MinIO bucket: closed segments and their index entries are kept under
// retention (a delete is refused), the pieces they were compacted from are
// still deleted, and the archive equals the server's binlog.
func TestStreamObjectLock(t *testing.T) {
	m := testenv.StartMariaDB(t)
	db := m.DB(t)
	m.Exec(t, "CREATE DATABASE test")
	mc := testenv.StartMinIO(t)
	mc.NewLockedBucket(t, "locked")
	st, err := location.Open(context.Background(), "s3://locked/repo?endpoint="+mc.Endpoint+"&tls=false", location.Options{
		S3: s3.Config{Credentials: &s3.Credentials{AccessKeyID: mc.AccessKey, SecretAccessKey: secret.NewString(mc.SecretKey)}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	repo, err := archive.Init(context.Background(), st, archive.InitOptions{ObjectLock: &archive.ObjectLock{Days: 1, Mode: storage.RetentionGovernance}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(repo.Close)

	p := StreamParams{DSNs: []string{m.DSN}, Repo: repo, Instance: "db", Flush: 100 * time.Millisecond, SegmentSize: 8 << 10, Logger: testLogger(t)}
	w := startWriter(t, db, "test.t")
	stop := runStream(t, p)
	time.Sleep(testenv.Wait(1500 * time.Millisecond))
	w.Stop()
	waitCaughtUp(t, repo, "db", db)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	archived, a := archivedBinlog(t, repo, "db")
	compareBinlog(t, serverBinlog(t, m), archived)
	closed := 0
	for _, s := range a.segs {
		if !s.indexed {
			continue
		}
		closed++
		if len(s.pieces) > 0 {
			t.Errorf("segment %s: %d pieces left after compaction", s.meta.Name, len(s.pieces))
		}
		for _, name := range []string{segmentName("db", s.meta.Name), indexName("db", s.meta.Name)} {
			mode, until := mc.Retention(t, "locked", "repo/objects/"+name)
			if mode != "GOVERNANCE" || until.Before(time.Now().Add(23*time.Hour)) {
				t.Fatalf("%s: retention %q until %v, want governance for a day", name, mode, until)
			}
			if err := repo.DeleteObject(context.Background(), name); !errors.Is(err, storage.ErrRetained) {
				t.Fatalf("delete of %s: %v, want it refused under retention", name, err)
			}
		}
	}
	if closed == 0 {
		t.Fatal("no segment was closed: nothing was checked")
	}
	t.Logf("%d closed segments under retention", closed)
}
