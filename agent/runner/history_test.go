package runner

import (
	"context"
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/engines/logical"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestBackupJobHistory: a backup job's history (tidemark backup --instance
// --history, a policy's history: true) reaches the engine: the manifest
// says so and a restore job brings every row version back; without it the
// job warns naming the table and --history, and the manifest does not
// claim history.
func TestBackupJobHistory(t *testing.T) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "runner-hist"})
	m.Exec(t, "CREATE DATABASE h", "USE h", "CREATE TABLE h.v (id INT PRIMARY KEY, n INT) WITH SYSTEM VERSIONING",
		"INSERT INTO h.v SELECT seq, 0 FROM seq_1_to_20", "UPDATE h.v SET n = 1 WHERE id <= 5")
	repo := newRepo(t)
	open := func(context.Context, string) (*archive.Repo, func(), error) { return repo, func() {}, nil }
	ctx := context.Background()
	backup := func(id string, history bool) *Result {
		t.Helper()
		res, err := Run(ctx, Params{DSN: m.DSN, OpenRepo: open, Lease: lease(id, 1, 1), Job: &v1.Job{Id: id, Kind: v1.JobKind_JOB_KIND_BACKUP,
			Instance: "src", Attempt: 1, Params: &v1.Job_Backup{Backup: &v1.BackupParams{BackupId: id + "-b", Engine: "logical", History: history}}}})
		if err != nil {
			t.Fatalf("backup job %s: %v", id, err)
		}
		return res
	}

	cur := backup("jcur", false)
	if w := strings.Join(cur.Warnings, "\n"); !strings.Contains(w, "h.v; back up with --history") || cur.Manifest.GetEngineMetadata()[logical.MetaHistory] != "" {
		t.Errorf("backup job without history: warnings %q, manifest metadata %v", cur.Warnings, cur.Manifest.GetEngineMetadata())
	}
	hist := backup("jhist", true)
	if w := strings.Join(hist.Warnings, "\n"); strings.Contains(w, "history") || hist.Manifest.GetEngineMetadata()[logical.MetaHistory] != "true" || hist.Rows != 25 {
		t.Errorf("backup job with history: %d rows (want 25 row versions), warnings %q, manifest metadata %v", hist.Rows, hist.Warnings, hist.Manifest.GetEngineMetadata())
	}
	if _, err := Run(ctx, Params{DSN: m.DSN, OpenRepo: open, Lease: lease("jr", 1, 2), Job: &v1.Job{Id: "jr", Kind: v1.JobKind_JOB_KIND_RESTORE,
		Instance: "src", Attempt: 1, Params: &v1.Job_Restore{Restore: &v1.RestoreParams{BackupId: hist.BackupID, RenameDatabases: map[string]string{"h": "h2"}}}}}); err != nil {
		t.Fatalf("restore job: %v", err)
	}
	db := m.DB(t)
	versions := func(schema string) string {
		t.Helper()
		rows, err := db.Query("SELECT CONCAT(id, ':', n, '@', row_start, '-', row_end) FROM " + schema + ".v FOR SYSTEM_TIME ALL ORDER BY id, row_start")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = rows.Close() }()
		var out []string
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return strings.Join(out, "\n")
	}
	want, got := versions("h"), versions("h2")
	if got != want || strings.Count(want, "@") != 25 {
		t.Errorf("restored history:\n%s\nsource:\n%s", got, want)
	}
}
