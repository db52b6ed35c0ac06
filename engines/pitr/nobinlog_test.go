package pitr

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/engines/binlog/apply"
	"github.com/tidemark-backup/tidemark/engines/logical"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestNoBinlog: a point-in-time restore with NoBinlog leaves the target's
// binlog where it was, base load and roll-forward alike. On a target that
// binlogs what it replicates (log_slave_updates) the roll-forward goes
// through mariadb-binlog --disable-log-bin, saying so, and the replication
// method, if demanded, is refused; elsewhere the replication applier runs.
func TestNoBinlog(t *testing.T) {
	ctx := context.Background()
	src := testenv.StartMariaDB(t, strict)
	db := src.DB(t)
	st, err := file.Open(filepath.Join(t.TempDir(), "repo"), file.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := archive.Init(ctx, st, archive.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(repo.Close)
	sctx, stopStream := context.WithCancel(ctx)
	streamDone := make(chan error, 1)
	go func() {
		streamDone <- binlog.Stream(sctx, binlog.StreamParams{DSNs: []string{src.DSN}, Repo: repo, Instance: instance, Flush: 100 * time.Millisecond})
	}()
	t.Cleanup(func() {
		stopStream()
		if err := <-streamDone; err != nil {
			t.Errorf("stream: %v", err)
		}
	})
	src.Exec(t, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY, v INT)")
	for i := 1; i <= 50; i++ {
		src.Exec(t, fmt.Sprintf("INSERT INTO app.t VALUES (%d, %d)", i, i))
	}
	backup(t, repo, src.DSN)
	src.Exec(t, "UPDATE app.t SET v = v * 2 WHERE id <= 25", "DELETE FROM app.t WHERE id > 45")
	p := record(t, db, "after the backup")
	waitArchived(t, repo, db)

	run := func(name, method string, extra ...string) (*testenv.MariaDB, *Result, error) {
		dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: name, ExtraArgs: append([]string{"--gtid-strict-mode=1"}, extra...)})
		res, err := Restore(ctx, Params{
			Repo: repo, Instance: instance, DSN: dst.DSN, Target: Target{GTID: p.gtid}, NoBinlog: true, Method: method,
			Engine: func(string) (engines.Engine, error) { return logical.New(), nil },
		})
		return dst, res, err
	}
	binlogPos := func(m *testenv.MariaDB) string {
		var s string
		if err := m.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, c := range []struct {
		name, method string
		args         []string
		want         string // the apply method used
	}{
		{"nobin-plain", "", nil, apply.MethodReplication},
		{"nobin-lsu", "", []string{"--log-slave-updates=1"}, apply.MethodSQL},
	} {
		dst, res, err := run(c.name, c.method, c.args...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		sameSums(t, c.name, testenv.Checksums(t, dst.DB(t), "app"), p.sums)
		if got := binlogPos(dst); got != "" {
			t.Errorf("%s: the restore reached the target's binlog (at %q)", c.name, got)
		}
		if res.Applied.Method != c.want {
			t.Errorf("%s: applied by %q, want %q", c.name, res.Applied.Method, c.want)
		}
		if c.want == apply.MethodSQL && !strings.Contains(strings.Join(res.Applied.Warnings, "\n"), "--disable-log-bin") {
			t.Errorf("%s: no warning about the slower method: %q", c.name, res.Applied.Warnings)
		}
	}
	if _, _, err := run("nobin-forced", apply.MethodReplication, "--log-slave-updates=1"); err == nil || !strings.Contains(err.Error(), "log_slave_updates=ON") {
		t.Errorf("--no-binlog with the replication method on a log_slave_updates target: %v", err)
	}
}
