package logical

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestResume interrupts a restore at several points (after the schema, in
// the middle of the data, before the views and routines) and goes on with
// Resume: the target ends equal to the source, the pieces loaded before
// the interruption are not loaded again, the record is gone, and a fresh
// restore onto the half-restored target is refused pointing at resume.
func TestResume(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "resume-src")
	loadTypes(t, src)
	testenv.LoadSample(t, src.DB(t), "shop", 6000)
	a, _ := backupMem(t, smallPieces, engines.BackupParams{DSN: src.DSN, History: true})
	var total int64
	for _, tm := range readMeta(t, a).Tables {
		total += tm.Rows
	}

	for _, c := range []struct {
		name  string
		phase string // cancel at the first progress report of this phase
		after int    // ... or after this many "data" reports
	}{
		{"after the schema", "data", 0},
		{"mid-data", "data", 5},
		{"before the post objects", "post", 0},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			dst := startMariaDB(t, "resume-dst")
			ctx, cancel := context.WithCancel(context.Background())
			var reports atomic.Int32
			_, err := smallPieces.Restore(ctx, engines.RestoreParams{DSN: dst.DSN, Source: a, Parallel: 2, Progress: func(p engines.Progress) {
				if p.Phase == c.phase && int(reports.Add(1)) > c.after {
					cancel()
				}
			}})
			cancel()
			if err == nil {
				t.Fatalf("the restore was not interrupted")
			}
			_, err = smallPieces.Restore(context.Background(), engines.RestoreParams{DSN: dst.DSN, Source: a})
			if !errors.Is(err, ErrTargetNotEmpty) || !strings.Contains(err.Error(), "go on with it with resume") {
				t.Fatalf("a fresh restore over the interrupted one: %v", err)
			}
			res, err := smallPieces.Restore(context.Background(), engines.RestoreParams{DSN: dst.DSN, Source: a, Resume: true})
			if err != nil {
				t.Fatalf("resume: %v", err)
			}
			if c.name != "after the schema" && res.Rows >= total {
				t.Errorf("the resumed restore loaded %d rows of %d: it started over", res.Rows, total)
			}
			for _, db := range []string{"rt", "rt2", "shop"} {
				testenv.Compare(t, src.DB(t), dst.DB(t), db)
			}
			compareSchema(t, src.DB(t), dst.DB(t), []string{"rt", "rt2"}, nil)
			if got := queryStrings(t, dst.DB(t), "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '"+stateDB+"'"); len(got) != 0 {
				t.Errorf("the restore's record is left: %v", got)
			}
			if _, err := smallPieces.Restore(context.Background(), engines.RestoreParams{DSN: dst.DSN, Source: a, Resume: true}); !errors.Is(err, engines.ErrNothingToResume) {
				t.Errorf("resume of a finished restore: %v", err)
			}
		})
	}
}

// readMeta reads a backup's meta document.
func readMeta(t *testing.T, a *memArchive) metaDoc {
	t.Helper()
	rc, err := a.OpenStream(context.Background(), streamMeta)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	var m metaDoc
	if err := readJSON(rc, streamMeta, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
