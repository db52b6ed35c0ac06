package cli

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/crypto"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestSecretsStayOut runs the repository, key and backup commands with a
// known passphrase, key file, S3 secret key and database password, and
// greps every byte they print (JSON output, errors, warnings, an agent's
// slog output) and a running agent's argv for each of them.
func TestSecretsStayOut(t *testing.T) {
	if os.Getenv("TIDEMARK_SECRETS_AGENT_CHILD") != "" {
		t.Skip("the agent child runs in TestSecretsAgentChild")
	}
	dir := t.TempDir()
	mc := testenv.StartMinIO(t)
	db := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "cli-secrets"})
	dbPass := "Db-" + hex.EncodeToString(crypto.Random(8))
	db.Exec(t, "CREATE DATABASE leakcheck", "CREATE TABLE leakcheck.t (id INT PRIMARY KEY, v TEXT)",
		"INSERT INTO leakcheck.t VALUES (1, 'a'), (2, 'b')",
		fmt.Sprintf("CREATE USER 'leak'@'%%' IDENTIFIED BY '%s'", dbPass), "GRANT ALL ON *.* TO 'leak'@'%'")
	passphrase := "Pass-" + hex.EncodeToString(crypto.Random(8))
	keyBytes := crypto.Random(32)
	files := map[string][]byte{"pass": []byte(passphrase + "\n"), "key": keyBytes, "dbpass": []byte(dbPass + "\n"), "wrong": []byte("not it")}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f := func(name string) string { return filepath.Join(dir, name) }
	secrets := map[string]string{
		"passphrase": passphrase, "s3 secret key": mc.SecretKey, "db password": dbPass,
		"key file": string(keyBytes), "key file (hex)": hex.EncodeToString(keyBytes),
		"key file (base64)": base64.StdEncoding.EncodeToString(keyBytes),
	}
	check := func(what, out string) {
		t.Helper()
		for name, v := range secrets {
			if strings.Contains(out, v) {
				t.Errorf("%s shows the %s: %s", what, name, out)
			}
		}
	}

	t.Setenv("AWS_ACCESS_KEY_ID", mc.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", mc.SecretKey)
	t.Setenv("TIDEMARK_REPO", fmt.Sprintf("s3://%s/secrets?endpoint=%s&tls=false", mc.Bucket, mc.Endpoint))
	t.Setenv("TIDEMARK_KEY_FILE", "")
	t.Setenv("TIDEMARK_PASSPHRASE_FILE", f("pass"))
	t.Setenv("TIDEMARK_MYSQL_PASSWORD", "")
	t.Setenv("TIDEMARK_MYSQL_PASSWORD_FILE", f("dbpass"))
	dsn := fmt.Sprintf("leak@tcp(127.0.0.1:%d)/", db.Port)

	for _, c := range []struct {
		args []string
		fail bool
	}{
		{[]string{"repo", "init", "--encrypt", "-o", "json"}, false},
		{[]string{"repo", "key", "add", "--new-key-file", f("key"), "-o", "json"}, false},
		{[]string{"repo", "key", "rotate", "-o", "json"}, false},
		{[]string{"repo", "key", "list", "-o", "json"}, false},
		{[]string{"backup", "--mysql", dsn, "-o", "json"}, false},
		{[]string{"backups", "-o", "json"}, false},
		{[]string{"repo", "stats", "-o", "json"}, false},
		{[]string{"repo", "verify", "--read-data", "-o", "json"}, false},
		{[]string{"repo", "gc", "--dry-run", "-o", "json"}, false},
		{[]string{"repo", "stats", "--passphrase-file", f("wrong")}, true},
		{[]string{"repo", "key", "add", "--new-passphrase-file", f("pass"), "--passphrase-file", f("wrong")}, true},
		// A password on the command line: refused, and not repeated.
		{[]string{"backup", "--mysql", fmt.Sprintf("leak:%s@tcp(127.0.0.1:1)/", dbPass), "-o", "json"}, true},
		{[]string{"backup", "--mysql", fmt.Sprintf("leak:%s@tcp(127.0.0.1", dbPass)}, true},
	} {
		code, out, errs := run(t, c.args...)
		if (code != 0) != c.fail {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", c.args, code, out, errs)
		}
		check(fmt.Sprintf("%v stdout", c.args), out)
		check(fmt.Sprintf("%v stderr", c.args), errs)
		if strings.Contains(c.args[2], "leak:") && strings.HasSuffix(c.args[2], "/") && !strings.Contains(errs, "process list") {
			t.Errorf("%v: the password on the command line is not refused: %q", c.args, errs)
		}
	}

	// A started agent: its argv (world-readable in /proc) and its logs.
	logPath := f("agent.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// The agent's command line is in the child's argv, as it would be in
	// the process list.
	cmd := exec.Command(os.Args[0], "-test.run=^TestSecretsAgentChild$", "--", "agent", "--controller", "127.0.0.1:1",
		"--name", "leaky", "--insecure", "--mysql", dsn, "--log-level", "debug", "--log-format", "json")
	cmd.Env = append(os.Environ(), "TIDEMARK_SECRETS_AGENT_CHILD=1")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var argv []byte
	deadline := time.Now().Add(testenv.Wait(20 * time.Second))
	for {
		argv, _ = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid))
		logs, _ := os.ReadFile(logPath)
		if bytes.Contains(logs, []byte(`"level"`)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(testenv.Wait(time.Second)) // a few more log lines: connection attempts
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	logs, _ := os.ReadFile(logPath)
	if !bytes.Contains(logs, []byte(`"level"`)) || !bytes.Contains(argv, []byte("--mysql")) {
		t.Fatalf("the agent logged nothing, or its argv %q is not the agent's: %s", argv, logs)
	}
	check("agent argv", string(argv))
	check("agent log", string(logs))
}

// TestSecretsAgentChild is the agent process of TestSecretsStayOut.
func TestSecretsAgentChild(t *testing.T) {
	if os.Getenv("TIDEMARK_SECRETS_AGENT_CHILD") == "" || len(flag.Args()) == 0 {
		t.Skip("only as TestSecretsStayOut's child")
	}
	os.Exit(Main(flag.Args(), strings.NewReader(""), os.Stdout, os.Stderr))
}
