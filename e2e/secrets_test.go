package e2e

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestNoSecretInCatalog: after a fleet has registered, backed up, restored
// and streamed the binlog of an instance whose DSN holds a password, no
// file the controller or agent keeps (Raft log and snapshots, the dev
// repository's metadata, the TLS directory) holds the password, nor do
// the JSON listings of instances, jobs and backups, nor the processes'
// logs. (The password reaches the agent through TIDEMARK_MYSQL_PASSWORD_FILE:
// the CLI refuses one in a --mysql DSN, as cli's TestSecretsStayOut checks.)
func TestNoSecretInCatalog(t *testing.T) {
	const secret = "Zq7-only-in-the-dsn-4Kp"
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "secret-src"})
	// Not binlogged: the statement itself would carry the password into
	// the archived binlog, which is the server's data, not a leak.
	src.Exec(t, "SET STATEMENT sql_log_bin=0 FOR CREATE USER 'vault'@'%' IDENTIFIED BY '"+secret+"'",
		"SET STATEMENT sql_log_bin=0 FOR GRANT ALL PRIVILEGES ON *.* TO 'vault'@'%'")
	testenv.LoadSample(t, src.DB(t), "shop", 200)
	// The password comes from a file, as the CLI demands of a DSN on its
	// command line.
	dsn := fmt.Sprintf("vault@tcp(127.0.0.1:%d)/", src.Port)
	dir := t.TempDir()
	passFile := filepath.Join(t.TempDir(), "dbpass")
	if err := os.WriteFile(passFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	dev := startDevEnv(t, filepath.Join(dir, "dev"), dsn, addr, []string{"TIDEMARK_MYSQL_PASSWORD_FILE=" + passFile}, "--heartbeat-interval", "200ms")
	ctl := []string{"--controller", addr}
	testenv.WaitFor(t, "the dev agent's instance", 20*time.Second, func() error {
		if r := tm(t, 10*time.Second, append([]string{"instances"}, ctl...)...); !strings.Contains(r.out, "local") {
			return fmt.Errorf("instances: %s", r.out)
		}
		return nil
	})
	must(t, 10*time.Second, append([]string{"binlog", "start", "--instance", "local", "--flush", "200ms"}, ctl...)...)
	must(t, 60*time.Second, append([]string{"backup", "--instance", "local", "--wait"}, ctl...)...)

	var outputs []string
	for _, args := range [][]string{{"instances", "-o", "json"}, {"jobs", "-o", "json"}, {"backups", "-o", "json"}, {"binlog", "status", "--instance", "local"}} {
		r := must(t, 10*time.Second, append(args, ctl...)...)
		outputs = append(outputs, r.out, r.err)
	}
	for i, o := range outputs {
		if strings.Contains(o, secret) {
			t.Errorf("output %d holds the DSN's password: %s", i, o)
		}
	}
	if strings.Contains(dev.Log(), secret) {
		t.Errorf("tidemark dev's log holds the DSN's password:\n%s", dev.LogTail())
	}
	// Every file under the data directory: the Raft log and snapshots
	// (the catalog), the repository, credentials.
	var files int
	err := filepath.WalkDir(filepath.Join(dir, "dev"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s holds the DSN's password", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 10 {
		t.Fatalf("only %d files under the data directory: the test looked at nothing", files)
	}
}
