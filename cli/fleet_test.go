package cli

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestFleetCommandsBadInput checks the fleet commands' mistakes that need
// no controller (the e2e package runs them against real ones).
func TestFleetCommandsBadInput(t *testing.T) {
	t.Setenv("TIDEMARK_CONTROLLER", "")
	t.Setenv("TIDEMARK_REPO", "")
	closed := fmt.Sprintf("127.0.0.1:%d", freeClosedPort(t))
	// Without a credential nothing is dialled.
	t.Setenv("TIDEMARK_CREDENTIALS", "")
	t.Setenv("TIDEMARK_TOKEN_FILE", "")
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // no saved login
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"jobs", "--controller", closed}, "no credentials to reach the controller: give --credentials DIR"},
		{[]string{"jobs", "--controller", "10.1.2.3:7400", "--insecure"}, "--insecure (plaintext) is only allowed on loopback addresses, and --controller 10.1.2.3:7400 is not loopback"},
		{[]string{"jobs", "--controller", closed, "--credentials", t.TempDir()}, "(ca.pem, cert.pem, key.pem): reading --tls-ca: open "},
		{[]string{"jobs", "--controller", closed, "--credentials", t.TempDir(), "--insecure"}, "choose one"},
		{[]string{"login"}, "--token-file FILE is required"},
		{[]string{"login", "--token-file", "/nonexistent/token"}, "--token-file: open /nonexistent/token"},
		{[]string{"token", "create", "--role", "operator", "--controller", closed}, "--role operator makes a CLI user's access token: give --user NAME"},
		{[]string{"token", "create", "--role", "root", "--controller", closed}, `--role "root": use agent or controller`},
		{[]string{"audit", "--since", "yesterday", "--controller", closed}, `--since "yesterday": a duration`},
	} {
		code, _, errs := run(t, tc.args...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("tidemark %s: exit %d, stderr %q, want %q", strings.Join(tc.args, " "), code, errs, tc.want)
		}
	}
	admin := testenv.NewTestCA(t).Files(t, testenv.Admin())
	t.Setenv("TIDEMARK_CREDENTIALS", filepath.Dir(admin.CA))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"agents"}, "no controller address"},
		{[]string{"jobs", "--controller", closed}, "no Tidemark controller answers"},
		{[]string{"instances", "--controller", closed, "-o", "yaml"}, "yaml"},
		{[]string{"job", "watch", "j1", "--controller", closed}, "no Tidemark controller answers"},
		{[]string{"backup", "--controller", closed}, "--instance NAME is required"},
		{[]string{"backup", "--controller", closed, "--instance", "db", "--engine", "clonee"}, `--engine: unknown engine "clonee": use auto or one of snapshot, clone, mariabackup, logical`},
		{[]string{"backup", "--controller", closed, "--instance", "db", "--mysql", "root@tcp(127.0.0.1:1)/"}, "--mysql is for a standalone backup"},
		{[]string{"backup", "--controller", closed, "--instance", "db", "--wait"}, "no Tidemark controller answers"},
		{[]string{"backups", "--controller", closed}, "no Tidemark controller answers"},
		{[]string{"restore", "b1", "--to-instance", "db", "--to-mysql", "root@tcp(127.0.0.1:1)/"}, "not both"},
		{[]string{"restore", "b1", "--to-instance", "db", "--rename-db", "a-b"}, `--rename-db "a-b": use old:new`},
		{[]string{"restore", "b1"}, "--to-instance NAME"},
		{[]string{"restore", "b1", "--to-instance", "db"}, "no controller address"},
		{[]string{"restore", "b1", "--to-mysql", "root@tcp(127.0.0.1:1)/", "--controller", closed}, "no Tidemark controller answers"},
		{[]string{"dev"}, "--mysql DSN is required"},
		{[]string{"binlog", "start", "--controller", closed}, "--instance NAME is required"},
		{[]string{"binlog", "start", "--controller", closed, "--instance", "db", "--flush", "1h"}, "--flush 1h0m0s: must be between 10ms and 10m"},
		{[]string{"binlog", "start", "--controller", closed, "--instance", "db"}, "no Tidemark controller answers"},
		{[]string{"binlog", "stop", "--controller", closed}, "--instance NAME is required"},
		{[]string{"binlog", "status", "--controller", closed}, "--instance NAME is required"},
		{[]string{"binlog", "status", "--controller", closed, "--instance", "db"}, "no Tidemark controller answers"},
		{[]string{"restore", "--instance", "db", "--to-time", "03/12/2026 10:00", "--to-instance", "t"},
			`--to-time "03/12/2026 10:00": expected 'YYYY-MM-DD HH:MM:SS' (UTC), or with an offset`},
		{[]string{"restore", "--instance", "db", "--to-time", "2026-12-03 10:00:00", "--to-gtid", "0-1-5", "--to-instance", "t"}, "give one of --to-time, --to-gtid and --to-position"},
		{[]string{"restore", "--instance", "db", "--to-gtid", "0-1", "--to-instance", "t"}, `--to-gtid "0-1": expected a MariaDB GTID position`},
		{[]string{"restore", "--instance", "db", "--to-position", "bin.000001", "--to-instance", "t"}, "expected FILE:POS"},
		{[]string{"restore", "--instance", "db", "--to-position", "bin.000001:2", "--to-instance", "t"}, "position 4 or later"},
		{[]string{"restore", "--instance", "db", "--to-position", "bin.000001:4@x", "--to-instance", "t"}, `"x" after @ is not a server id`},
		{[]string{"restore", "--instance", "db", "--to-position", "bin.000001:4@0", "--to-instance", "t"}, `"0" after @ is not a server id`},
		{[]string{"restore", "--instance", "db", "--to-instance", "t"}, "give --to-time, --to-gtid or --to-position"},
		{[]string{"restore", "--instance", "db", "--to-time", "2026-12-03 10:00:00", "--to-mysql", "root@tcp(127.0.0.1:1)/", "--to-instance", "x"}, "not both"},
		{[]string{"restore", "--instance", "db", "--to-time", "2026-12-03 10:00:00", "--to-mysql", "root@tcp(127.0.0.1:1)/"}, "--repo is required"},
		{[]string{"restore", "--instance", "db", "--to-time", "2026-12-03 10:00:00"}, "give --to-mysql DSN"},
		{[]string{"restore", "--to-time", "2026-12-03 10:00:00", "--to-instance", "t"}, "--instance NAME is required"},
		{[]string{"restore", "--instance", "db", "--to-time", "2026-12-03 10:00:00", "--to-instance", "t", "--controller", closed}, "no Tidemark controller answers"},
		{[]string{"restore"}, "BACKUP_ID is required"},
		{[]string{"restore", "--to-datadir", "/srv/new"}, "BACKUP_ID is required"},
		{[]string{"restore", "b1", "--to-datadir", "/srv/new", "--no-binlog"}, "--no-binlog, --verify, --resume and --then-replicate-from do not apply to --to-datadir"},
		{[]string{"restore", "--to-datadir", "/srv/new", "--to-gtid", "0-1-5"}, "--instance NAME or BACKUP_ID is required"},
		{[]string{"restore", "--to-datadir", "/srv/new", "--instance", "db"}, "give --to-time, --to-gtid or --to-position"},
		{[]string{"restore", "b1", "--to-datadir", "/srv/new", "--to-instance", "db", "--mysqld", "/opt/mariadbd"}, "the agent uses the programs on its host's PATH"},
		{[]string{"restore", "b1", "--to-datadir", "/srv/new", "--to-instance", "db", "--controller", closed}, "no Tidemark controller answers"},
		{[]string{"restore", "b1", "--to-datadir", "/srv/new", "--tables", "a.b"}, "do not apply to --to-datadir"},
		{[]string{"restore", "b1", "--to-datadir", "srv/new", "--to-instance", "db"}, "give an absolute path"},
		{[]string{"repo", "reconcile", "--repo", "file:///nonexistent"}, "reconcile needs the catalog: give --controller HOST:PORT"},
		{[]string{"repo", "reconcile", "--controller", closed, "--grace", "-1s"}, "--grace must not be negative"},
		{[]string{"repo", "reconcile", "--controller", closed, "--dry-run"}, "--repo is required"},
	} {
		code, _, errs := run(t, tc.args...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("tidemark %s: exit %d, stderr %q, want %q", strings.Join(tc.args, " "), code, errs, tc.want)
		}
	}
	// The repository listing never depends on the controller: one that
	// does not answer is a warning, and the manifests are listed.
	repo := "file://" + filepath.Join(t.TempDir(), "repo")
	if code, _, errs := run(t, "repo", "init", "--repo", repo); code != 0 {
		t.Fatalf("repo init: %s", errs)
	}
	if code, out, errs := run(t, "backups", "--repo", repo, "--controller", closed, "-o", "json"); code != 0 || strings.TrimSpace(out) != "[]" ||
		!strings.Contains(errs, "warning: listing without the catalog's view (superseded attempts are not marked): no Tidemark controller answers") {
		t.Errorf("backups --repo with a dead controller: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

// TestParseToTime: --to-time is UTC unless the value carries an offset.
func TestParseToTime(t *testing.T) {
	for in, want := range map[string]time.Time{
		"2026-12-03 10:00:00":        time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC),
		" 2026-12-03 10:00:00.5 ":    time.Date(2026, 12, 3, 10, 0, 0, 5e8, time.UTC),
		"2026-12-03 10:00:00+02:00":  time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC),
		"2026-12-03 10:00:00 -05:00": time.Date(2026, 12, 3, 15, 0, 0, 0, time.UTC),
		"2026-12-03T10:00:00Z":       time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC),
		"2026-12-03T10:00:00+01:00":  time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC),
		"2026-12-03T10:00:00":        time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC),
	} {
		got, err := parseToTime(in)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseToTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "2026-12-03", "10:00:00", "2026-13-03 10:00:00", "yesterday"} {
		if _, err := parseToTime(bad); err == nil || !strings.Contains(err.Error(), "'YYYY-MM-DD HH:MM:SS' (UTC)") {
			t.Errorf("parseToTime(%q): %v", bad, err)
		}
	}
}
