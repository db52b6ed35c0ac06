package logical

import (
	"context"
	"errors"
	"testing"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestArchiveRoundTrip goes through a real file:// repository: streams are
// chunked, compressed and verified, the manifest carries the lock time and
// the consistency point, and a failed backup leaves no manifest.
func TestArchiveRoundTrip(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "arch-src")
	dst := startMariaDB(t, "arch-dst")
	testenv.LoadSample(t, src.DB(t), "shop", 20000)
	ctx := context.Background()
	store, err := file.Open(t.TempDir()+"/repo", file.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := archive.Init(ctx, store, archive.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	e := &Engine{PieceRows: 5000}
	var res *engines.BackupResult
	m, err := repo.WithBackup(ctx, archive.BackupOptions{Engine: Name, Instance: "src"}, func(ctx context.Context, b *archive.Backup) error {
		var err error
		res, err = e.Backup(ctx, engines.BackupParams{DSN: src.DSN, Sink: engines.ArchiveSink(b), IncludeUsers: true})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if m.GetLockDuration().AsDuration() <= 0 || m.GetConsistency().GetGtidSet() == "" || m.GetServer().GetFlavor() != "mariadb" {
		t.Errorf("manifest lacks lock time, consistency or server: %v %v %v", m.GetLockDuration(), m.GetConsistency(), m.GetServer())
	}
	t.Logf("backup %s: %d tables, %d rows, %d streams, %d bytes (%d stored), lock %v", m.GetBackupId(), res.Tables, res.Rows,
		len(m.GetStreams()), m.GetLogicalBytes(), m.GetStoredBytes(), m.GetLockDuration().AsDuration())

	loaded, err := repo.LoadManifest(ctx, m.GetBackupId())
	if err != nil {
		t.Fatal(err)
	}
	rres, err := e.Restore(ctx, engines.RestoreParams{DSN: dst.DSN, Source: engines.ArchiveSource(repo, loaded), IncludeUsers: true})
	if err != nil {
		t.Fatal(err)
	}
	if rres.Rows != res.Rows {
		t.Errorf("restored %d rows of %d", rres.Rows, res.Rows)
	}
	testenv.Compare(t, src.DB(t), dst.DB(t), "shop")
	var users int
	if err := dst.DB(t).QueryRow("SELECT COUNT(*) FROM mysql.user WHERE User = 'tidemark'").Scan(&users); err != nil || users != 1 {
		t.Errorf("user tidemark not restored: %d, %v", users, err)
	}

	// A backup that fails leaves no manifest.
	before, _ := repo.BackupIDs(ctx)
	_, err = repo.WithBackup(ctx, archive.BackupOptions{Engine: Name}, func(ctx context.Context, b *archive.Backup) error {
		_, err := e.Backup(ctx, engines.BackupParams{DSN: "tidemark:wrong@tcp(" + src.Host + ":1)/", Sink: engines.ArchiveSink(b)})
		return err
	})
	if !errors.Is(err, mysqlx.ErrUnreachable) {
		t.Errorf("backup of an unreachable server: %v", err)
	}
	if after, _ := repo.BackupIDs(ctx); len(after) != len(before) {
		t.Errorf("a failed backup left a manifest: %v → %v", before, after)
	}
}
