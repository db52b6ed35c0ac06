package e2e

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestRestoreResumeAfterKill kills `tidemark restore` (SIGKILL) at two
// points, as recorded on the target (once the schema is in; once a table's
// data is in), and goes on with `restore --resume`: the target ends equal
// to the source and the restore's record is gone.
func TestRestoreResumeAfterKill(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "resume-src"})
	rows := 120000
	if testing.Short() {
		rows = 40000
	}
	testenv.LoadSample(t, src.DB(t), "shop", rows)
	repo := "file://" + filepath.Join(t.TempDir(), "repo")
	must(t, 30*time.Second, "repo", "init", "--repo", repo)
	id := lastLine(must(t, 120*time.Second, "backup", "--mysql", src.DSN, "--repo", repo).out)

	for _, kill := range []struct {
		name  string
		steps int // kill once the record holds this many steps
	}{{"schema in", 2}, {"a table in", 4}} {
		t.Run(strings.ReplaceAll(kill.name, " ", "_"), func(t *testing.T) {
			dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "resume-dst"})
			db := dst.DB(t)
			p := startProc(t, "restore", "restore", id, "--repo", repo, "--to-mysql", dst.DSN, "--parallel", "1")
			steps := func() int {
				var n int
				if err := db.QueryRow("SELECT COUNT(*) FROM _tidemark_restore.steps").Scan(&n); err != nil {
					return 0
				}
				return n
			}
			deadline := time.Now().Add(testenv.Wait(60 * time.Second))
			for steps() < kill.steps {
				if p.Exited() {
					t.Fatalf("the restore ended before it could be killed at %q:\n%s", kill.name, p.LogTail())
				}
				if time.Now().After(deadline) {
					t.Fatalf("the restore's record never reached %d steps:\n%s", kill.steps, p.LogTail())
				}
				time.Sleep(2 * time.Millisecond)
			}
			p.Signal(syscall.SIGKILL)
			<-p.Done()
			if r := tm(t, 30*time.Second, "restore", id, "--repo", repo, "--to-mysql", dst.DSN); r.code == 0 || !strings.Contains(r.err, "resume") {
				t.Fatalf("a fresh restore over the killed one: exit %d, %s", r.code, r.err)
			}
			must(t, 120*time.Second, "restore", id, "--repo", repo, "--to-mysql", dst.DSN, "--resume")
			testenv.Compare(t, src.DB(t), db, "shop")
			if n := countSchemas(t, db, "_tidemark_restore"); n != 0 {
				t.Errorf("the restore's record is left")
			}
		})
	}
}

func countSchemas(t *testing.T, db *sql.DB, name string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(fmt.Sprintf("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '%s'", name)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
