package cli

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// TestBackupRestoreCommands drives the standalone commands end to end on two
// real servers: backup, list, restore, compare, and the common mistakes.
func TestBackupRestoreCommands(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "cli-src"})
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "cli-dst"})
	srcDB, dstDB := src.DB(t), dst.DB(t)
	testenv.LoadSample(t, srcDB, "shop", 3000)
	repo := "file://" + filepath.Join(t.TempDir(), "repo")
	t.Setenv("TIDEMARK_REPO", "")
	t.Setenv("TIDEMARK_KEY_FILE", "")
	t.Setenv("TIDEMARK_PASSPHRASE_FILE", "")

	if code, _, errs := run(t, "backup", "--mysql", src.DSN, "--repo", repo); code == 0 || !strings.Contains(errs, "repo init") {
		t.Fatalf("backup into a missing repo: %d %q", code, errs)
	}
	if code, _, errs := run(t, "repo", "init", "--repo", repo); code != 0 {
		t.Fatalf("init: %s", errs)
	}
	code, out, errs := run(t, "backup", "--mysql", src.DSN, "--repo", repo, "--parallel", "2")
	if code != 0 {
		t.Fatalf("backup: %d %s", code, errs)
	}
	id := lastLine(out)
	if !strings.Contains(out, "consistent at binlog") || strings.Contains(id, " ") {
		t.Fatalf("backup output: %q", out)
	}

	code, out, errs = run(t, "backups", "--repo", repo, "-o", "json")
	if code != 0 {
		t.Fatalf("backups: %s", errs)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 {
		t.Fatalf("backups json: %q %v", out, err)
	}
	for _, k := range []string{"id", "instance", "engine", "status", "started_at", "finished_at", "size_bytes", "stored_bytes", "consistency"} {
		if _, ok := list[0][k]; !ok {
			t.Errorf("backups json lacks %q", k)
		}
	}
	if list[0]["id"] != id || list[0]["status"] != "complete" || list[0]["engine"] != "logical" {
		t.Errorf("backups json: %v", list[0])
	}

	if code, _, errs = run(t, "restore", id, "--repo", repo, "--to-mysql", dst.DSN); code != 0 {
		t.Fatalf("restore: %s", errs)
	}
	testenv.Compare(t, srcDB, dstDB, "shop")

	code, _, errs = run(t, "restore", id, "--repo", repo, "--to-mysql", dst.DSN)
	if code == 0 || !strings.Contains(errs, "shop") || !strings.Contains(errs, "--drop-existing") {
		t.Fatalf("restore over existing tables: %d %q", code, errs)
	}
	if code, _, errs = run(t, "restore", id, "--repo", repo, "--to-mysql", dst.DSN, "--rename-db", "shop:shop2"); code != 0 {
		t.Fatalf("restore with rename: %s", errs)
	}
	// --no-binlog: the target's binlog does not move.
	var before, after string
	if err := dst.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&before); err != nil {
		t.Fatal(err)
	}
	if code, _, errs = run(t, "restore", id, "--repo", repo, "--to-mysql", dst.DSN, "--rename-db", "shop:shop3", "--no-binlog"); code != 0 {
		t.Fatalf("restore --no-binlog: %s", errs)
	}
	if err := dst.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&after); err != nil || after != before {
		t.Fatalf("restore --no-binlog moved the target's binlog from %q to %q (%v)", before, after, err)
	}
	// --verify, and verify-restore for a restore done earlier.
	code, out, errs = run(t, "restore", id, "--repo", repo, "--to-mysql", dst.DSN, "--rename-db", "shop:shop4", "--verify")
	if code != 0 || !strings.Contains(out, "verified: ") {
		t.Fatalf("restore --verify: %d %q %q", code, out, errs)
	}
	if code, out, errs = run(t, "verify-restore", id, "--repo", repo, "--to-mysql", dst.DSN, "--rename-db", "shop:shop2"); code != 0 || !strings.Contains(out, "verified: ") {
		t.Fatalf("verify-restore of an exact restore: %d %q %q", code, out, errs)
	}
	var vr map[string]any
	if code, out, errs = run(t, "verify-restore", id, "--repo", repo, "--to-mysql", dst.DSN, "--rename-db", "shop:shop2", "-o", "json"); code != 0 ||
		json.Unmarshal([]byte(out), &vr) != nil || vr["backup_id"] != id || vr["tables"] == float64(0) {
		t.Fatalf("verify-restore -o json of an exact restore: %d %q %q", code, out, errs)
	}
	if _, err := dstDB.Exec("UPDATE shop2.customers SET name = CONCAT(name, '!') WHERE id = 7"); err != nil {
		t.Fatal(err)
	}
	code, _, errs = run(t, "verify-restore", id, "--repo", repo, "--to-mysql", dst.DSN, "--rename-db", "shop:shop2")
	if code != ExitDamaged || !strings.Contains(errs, "shop.customers (restored as shop2.customers): backup ") || !strings.Contains(errs, "1 of ") {
		t.Fatalf("verify-restore after a change: %d %q", code, errs)
	}
	if code, _, errs = run(t, "restore", "20990101T000000Z-00000000", "--repo", repo, "--to-mysql", dst.DSN); code == 0 || !strings.Contains(errs, "not found") {
		t.Fatalf("unknown backup: %d %q", code, errs)
	}
	code, _, errs = run(t, "backup", "--mysql", strings.Replace(src.DSN, "tidemark@", "nosuchuser@", 1), "--repo", repo)
	if code == 0 || !strings.Contains(strings.ToLower(errs), "denied") {
		t.Fatalf("unknown user: %d %q", code, errs)
	}
	// A password on the command line is refused before any connection,
	// and not repeated.
	code, _, errs = run(t, "backup", "--mysql", strings.Replace(src.DSN, "tidemark@", "tidemark:wrong@", 1), "--repo", repo)
	if code == 0 || strings.Contains(errs, "wrong") || !strings.Contains(errs, "process list") || !strings.Contains(errs, "TIDEMARK_MYSQL_PASSWORD_FILE") {
		t.Fatalf("password in argv: %d %q", code, errs)
	}
	code, _, errs = run(t, "backup", "--mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/", freeClosedPort(t)), "--repo", repo)
	if code == 0 || !strings.Contains(errs, "127.0.0.1") {
		t.Fatalf("unreachable server: %d %q", code, errs)
	}
	// Failed attempts left nothing that looks like a backup.
	_, out, _ = run(t, "backups", "--repo", repo, "-o", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 {
		t.Fatalf("after failures the repo lists %q", out)
	}
}

// TestBackupHistoryCommand: `backup` warns on stderr naming each
// system-versioned table and --history; `backup --history` restores every
// row version; its restore by a user the server's secure_timestamp=SUPER
// keeps from writing a row's time fails before anything is written,
// naming the table and the privileges.
func TestBackupHistoryCommand(t *testing.T) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "cli-hist", ExtraArgs: []string{"--secure-timestamp=SUPER"}})
	m.Exec(t, "CREATE DATABASE h", "USE h", "CREATE TABLE h.v (id INT PRIMARY KEY, n INT) WITH SYSTEM VERSIONING",
		"INSERT INTO h.v SELECT seq, 0 FROM seq_1_to_10", "UPDATE h.v SET n = 1 WHERE id <= 4",
		"CREATE USER loader@'%'", "GRANT ALL PRIVILEGES ON h_x.* TO loader@'%'", "GRANT SELECT ON *.* TO loader@'%'")
	repo := "file://" + filepath.Join(t.TempDir(), "repo")
	t.Setenv("TIDEMARK_REPO", "")
	t.Setenv("TIDEMARK_KEY_FILE", "")
	t.Setenv("TIDEMARK_PASSPHRASE_FILE", "")
	if code, _, errs := run(t, "repo", "init", "--repo", repo); code != 0 {
		t.Fatalf("init: %s", errs)
	}
	code, _, errs := run(t, "backup", "--mysql", m.DSN, "--repo", repo)
	if code != 0 || !strings.Contains(errs, "warning: system-versioned tables backed up with their current rows only, not their history: h.v; back up with --history") {
		t.Fatalf("backup without --history: %d %q", code, errs)
	}
	code, out, errs := run(t, "backup", "--mysql", m.DSN, "--repo", repo, "--history")
	if code != 0 || strings.Contains(errs, "history") {
		t.Fatalf("backup --history: %d %q", code, errs)
	}
	id := lastLine(out)
	code, _, errs = run(t, "restore", id, "--repo", repo, "--to-mysql", strings.Replace(m.DSN, "tidemark@", "loader@", 1), "--rename-db", "h:h_x")
	if code == 0 || !strings.Contains(errs, "holds the row history of h_x.v") || !strings.Contains(errs, "BINLOG REPLAY") {
		t.Fatalf("restore of history by a user who may not write it: %d %q", code, errs)
	}
	db := m.DB(t)
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'h_x'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("the refused restore created h_x (%d, %v)", n, err)
	}
	if code, _, errs = run(t, "restore", id, "--repo", repo, "--to-mysql", m.DSN, "--rename-db", "h:h2"); code != 0 {
		t.Fatalf("restore --history backup: %d %q", code, errs)
	}
	const q = "SELECT COUNT(*), SUM(CRC32(CONCAT(id, n, row_start, row_end))) FROM %s.v FOR SYSTEM_TIME ALL"
	var wantN, gotN int
	var wantSum, gotSum string
	if err := db.QueryRow(fmt.Sprintf(q, "h")).Scan(&wantN, &wantSum); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(fmt.Sprintf(q, "h2")).Scan(&gotN, &gotSum); err != nil {
		t.Fatal(err)
	}
	if wantN != 14 || gotN != wantN || gotSum != wantSum {
		t.Errorf("restored history: %d row versions (sum %s), the source %d (sum %s), want 14 equal", gotN, gotSum, wantN, wantSum)
	}
}
