package cli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/agent"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestWiringDatadirPITR: the agent's point-in-time restorer sends a job
// with a datadir to the datadir restore (which refuses a logical base,
// naming --to-mysql, before writing) and filters to a refusal.
func TestWiringDatadirPITR(t *testing.T) {
	ctx := context.Background()
	st, err := file.Open(filepath.Join(t.TempDir(), "repo"), file.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := archive.Init(ctx, st, archive.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	m, err := repo.WithBackup(ctx, archive.BackupOptions{Instance: "db", Engine: "logical"}, func(ctx context.Context, b *archive.Backup) error {
		b.SetConsistency(&v1.ConsistencyPoint{GtidSet: "0-1-5", BinlogFile: "binlog.000001", BinlogPosition: 400, Time: timestamppb.Now()})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	restorer := EngineWiring().PITRRestorer
	dir := filepath.Join(t.TempDir(), "datadir")
	_, err = restorer(ctx, agent.PITRParams{Repo: repo, BackupID: m.BackupId, SourceInstance: "db", StopGTID: "0-1-9", Datadir: dir})
	if err == nil || !strings.Contains(err.Error(), "--to-mysql") {
		t.Fatalf("a logical base into a datadir: %v, want --to-mysql named", err)
	}
	_, err = restorer(ctx, agent.PITRParams{Repo: repo, BackupID: m.BackupId, SourceInstance: "db", StopGTID: "0-1-9", Datadir: dir, Tables: []string{"a.b"}})
	if err == nil || !strings.Contains(err.Error(), "brings back the whole instance") {
		t.Fatalf("filters: %v", err)
	}
}
