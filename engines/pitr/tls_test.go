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

// TestPointInTimeOverTLS restores onto a server reached over TLS: the base
// loads through the TLS DSN and the roll-forward's replication connection
// is TLS too (auto, because the DSN uses TLS), with the ephemeral
// certificate verified by the target; the data equals the source's at
// the point. A serve certificate that cannot be loaded is refused before
// anything is written.
func TestPointInTimeOverTLS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "pitrtls-src", ExtraArgs: []string{"--gtid-strict-mode=1"}})
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
	for i := 1; i <= 20; i++ {
		src.Exec(t, fmt.Sprintf("INSERT INTO app.t VALUES (%d, %d)", i, i))
	}
	backup(t, repo, src.DSN)
	src.Exec(t, "UPDATE app.t SET v = v * 2 WHERE id <= 10", "ALTER TABLE app.t ADD COLUMN w INT DEFAULT 3", "DELETE FROM app.t WHERE id > 15")
	p := record(t, db, "after the backup")
	src.Exec(t, "DROP TABLE app.t")
	waitArchived(t, repo, db)

	dst, tf := testenv.StartMariaDBTLS(t, testenv.MariaDBOptions{Name: "pitrtls-dst", ExtraArgs: []string{"--gtid-strict-mode=1"}})
	dsn := fmt.Sprintf("tls_user@tcp(127.0.0.1:%d)/?ssl-mode=verify-ca&ssl-ca=%s", dst.Port, tf.CA)
	params := Params{
		Repo: repo, Instance: instance, DSN: dsn, Target: Target{GTID: p.gtid},
		Engine: func(string) (engines.Engine, error) { return logical.New(), nil },
	}

	bad := params
	bad.ServeTLS = apply.SourceTLS{CertFile: filepath.Join(t.TempDir(), "missing.pem"), KeyFile: filepath.Join(t.TempDir(), "missing-key.pem")}
	if _, err := Restore(ctx, bad); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("a serve certificate that does not exist: %v", err)
	}
	if sums := testenv.Checksums(t, dst.DB(t), "app"); len(sums) != 0 {
		t.Fatalf("the refused restore wrote %v", sums)
	}

	res, err := Restore(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	sameSums(t, "over TLS", testenv.Checksums(t, dst.DB(t), "app"), p.sums)
	a := res.Applied
	if a.Method != apply.MethodReplication || a.TLS == nil || a.TLS.Sessions < 1 || !a.TLS.Verified || !a.TLS.Ephemeral {
		t.Errorf("applied by %q with TLS %+v; want the replication method over TLS, the ephemeral certificate verified by the target", a.Method, a.TLS)
	}
	t.Logf("base %v, roll-forward %v (%d transactions) over %s", res.BaseRestore, res.RollForward, a.Transactions, a.TLS)
}
