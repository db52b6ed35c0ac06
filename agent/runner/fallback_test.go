package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/selection"
	"github.com/tidemark-backup/tidemark/internal/archive"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// fakeEngine writes one stream and then fails with fail (nil: succeeds).
type fakeEngine struct {
	name string
	fail error
	runs int
}

func (e *fakeEngine) Name() string { return e.name }

func (e *fakeEngine) Backup(_ context.Context, p engines.BackupParams) (*engines.BackupResult, error) {
	e.runs++
	w, err := p.Sink.Stream("data-"+e.name, nil)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(w, "rows of "+e.name); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if e.fail != nil {
		return nil, e.fail
	}
	return &engines.BackupResult{Files: 1}, nil
}

func (e *fakeEngine) Restore(context.Context, engines.RestoreParams) (*engines.RestoreResult, error) {
	return nil, errors.New("not used")
}

// TestFallback: a capability failure retries once with the next usable
// engine and the manifest says why; any other failure, or no fallback
// list, keeps the engine and fails.
func TestFallback(t *testing.T) {
	full := fmt.Errorf("%w: the Btrfs filesystem of /data has no room for a snapshot", engines.ErrCapability)
	job := func(fallback ...string) *v1.Job {
		return &v1.Job{Id: "job-1", Kind: v1.JobKind_JOB_KIND_BACKUP, Instance: "db1", Params: &v1.Job_Backup{Backup: &v1.BackupParams{
			Engine: "snapshot", BackupId: "job-1-a1", EngineReason: "snapshot: datadir on a btrfs subvolume /data", FallbackEngines: fallback,
		}}}
	}
	run := func(t *testing.T, snapFail error, fallback ...string) (*Result, *fakeEngine, *fakeEngine, *archive.Repo, error) {
		repo := newRepo(t)
		snap, next := &fakeEngine{name: "snapshot", fail: snapFail}, &fakeEngine{name: "mariabackup"}
		res, err := Run(context.Background(), Params{
			Job: job(fallback...), Engines: engines.NewRegistry(snap, next),
			OpenRepo: func(context.Context, string) (*archive.Repo, func(), error) { return repo, func() {}, nil },
		})
		return res, snap, next, repo, err
	}

	t.Run("capability failure falls back", func(t *testing.T) {
		res, snap, next, repo, err := run(t, full, "mariabackup", "logical")
		if err != nil {
			t.Fatal(err)
		}
		if snap.runs != 1 || next.runs != 1 {
			t.Fatalf("runs: snapshot %d, mariabackup %d", snap.runs, next.runs)
		}
		m, err := repo.LoadManifest(context.Background(), res.BackupID)
		if err != nil {
			t.Fatal(err)
		}
		md := m.GetEngineMetadata()
		if m.GetEngine() != "mariabackup" || res.BackupID != "job-1-a1" ||
			!strings.Contains(md[selection.MetaFallback], "snapshot failed for a capability reason, fell back to mariabackup: ") || !strings.Contains(md[selection.MetaFallback], "the instance cannot run this engine: the Btrfs filesystem of /data has no room") ||
			md[selection.MetaReason] != "snapshot: datadir on a btrfs subvolume /data" {
			t.Fatalf("manifest engine %q metadata %v", m.GetEngine(), md)
		}
		var names []string
		for _, s := range m.GetStreams() {
			names = append(names, s.GetName())
		}
		if strings.Join(names, ",") != "data-mariabackup" {
			t.Fatalf("streams %v: the failed engine's stream must not be in the backup", names)
		}
		if !strings.Contains(strings.Join(res.Warnings, "\n"), "fell back to mariabackup") {
			t.Fatalf("warnings %q", res.Warnings)
		}
	})
	t.Run("other failure keeps the engine", func(t *testing.T) {
		_, snap, next, _, err := run(t, errors.New("server has gone away"), "mariabackup")
		if err == nil || !strings.Contains(err.Error(), "server has gone away") || snap.runs != 1 || next.runs != 0 {
			t.Fatalf("err %v runs %d %d", err, snap.runs, next.runs)
		}
	})
	t.Run("no fallback list", func(t *testing.T) {
		_, _, next, _, err := run(t, full)
		if !errors.Is(err, engines.ErrCapability) || next.runs != 0 {
			t.Fatalf("err %v runs %d", err, next.runs)
		}
	})
}
