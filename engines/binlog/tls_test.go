package binlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestStreamTLS streams from a server over TLS with a client certificate:
// the replication connection is the user the server admits only with one
// (so it is encrypted), and the archive is the server's binlog. A wrong CA
// stops the streamer at once with what to fix, instead of retrying as if
// the server were down.
func TestStreamTLS(t *testing.T) {
	m, f := testenv.StartMariaDBTLS(t)
	db := m.DB(t)
	m.Exec(t, "CREATE DATABASE test", "CREATE TABLE test.t (id INT PRIMARY KEY)", "INSERT INTO test.t VALUES (1)")
	dsn := fmt.Sprintf("x509_user@tcp(127.0.0.1:%d)/?ssl-ca=%s&ssl-cert=%s&ssl-key=%s", m.Port, f.CA, f.ClientCert, f.ClientKey)
	repo, _ := fileRepo(t)
	stop := runStream(t, StreamParams{DSNs: []string{dsn}, Repo: repo, Instance: "db", Flush: 100 * time.Millisecond, Heartbeat: 250 * time.Millisecond})
	m.Exec(t, "INSERT INTO test.t VALUES (2)", "INSERT INTO test.t VALUES (3)")
	waitCaughtUp(t, repo, "db", db)
	var dumpUser string
	if err := db.QueryRow("SELECT USER FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'").Scan(&dumpUser); err != nil {
		t.Fatalf("the binlog dump thread: %v", err)
	}
	if dumpUser != "x509_user" {
		t.Fatalf("the dump thread runs as %q, want x509_user (admitted only over TLS with a client certificate)", dumpUser)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	archived, _ := archivedBinlog(t, repo, "db")
	compareBinlog(t, serverBinlog(t, m), archived)

	bad := fmt.Sprintf("x509_user@tcp(127.0.0.1:%d)/?ssl-ca=%s&ssl-cert=%s&ssl-key=%s", m.Port, f.OtherCA, f.ClientCert, f.ClientKey)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(20*time.Second))
	defer cancel()
	err := Stream(ctx, StreamParams{DSNs: []string{bad}, Repo: repo, Instance: "db2", Flush: 100 * time.Millisecond})
	if err == nil || ctx.Err() != nil || !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "ssl-ca") {
		t.Fatalf("a wrong CA: %v (ctx %v), want ErrServer naming ssl-ca, at once", err, ctx.Err())
	}
}
