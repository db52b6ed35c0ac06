package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/engines/physical/physicaltest"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestRestoreDatadirCommand drives `tidemark restore --to-datadir` on a
// physical backup of a real server: listed with its engine, refused onto a
// running server (naming --to-datadir), restored and started with the
// source's data, refused into the now non-empty directory; a logical backup
// is refused with --to-datadir (naming --to-mysql); repo verify reads the
// physical backup and finds a damaged chunk of it.
func TestRestoreDatadirCommand(t *testing.T) {
	t.Setenv("TIDEMARK_REPO", "")
	t.Setenv("TIDEMARK_KEY_FILE", "")
	t.Setenv("TIDEMARK_PASSPHRASE_FILE", "")
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "cli-phys-src"})
	testenv.LoadSample(t, src.DB(t), "shop", 2000)
	want := testenv.Checksums(t, src.DB(t), "shop")
	repoDir := filepath.Join(t.TempDir(), "repo")
	repoURI := "file://" + repoDir
	if code, _, errs := run(t, "repo", "init", "--repo", repoURI); code != 0 {
		t.Fatalf("init: %s", errs)
	}
	code, out, errs := run(t, "backup", "--mysql", src.DSN, "--repo", repoURI)
	if code != 0 {
		t.Fatalf("logical backup: %s", errs)
	}
	logicalID := lastLine(out)

	st, err := file.Open(repoDir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := archive.Open(context.Background(), st, archive.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	m := physicaltest.Snapshot(t, repo, src, "cli-phys-src")
	repo.Close()
	_ = st.Close()

	code, out, errs = run(t, "backups", "--repo", repoURI)
	if code != 0 || !strings.Contains(out, "ENGINE") || !strings.Contains(out, m.BackupId) || !strings.Contains(lineOf(out, m.BackupId), "snapshot") {
		t.Fatalf("backups: %d %q %q", code, out, errs)
	}

	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "cli-phys-dst"})
	if code, _, errs := run(t, "restore", m.BackupId, "--repo", repoURI, "--to-mysql", dst.DSN); code == 0 || !strings.Contains(errs, "--to-datadir") {
		t.Fatalf("physical backup onto a running server: %d %q", code, errs)
	}
	dir := filepath.Join(t.TempDir(), "datadir")
	if code, _, errs := run(t, "restore", logicalID, "--repo", repoURI, "--to-datadir", dir); code == 0 || !strings.Contains(errs, "--to-mysql") {
		t.Fatalf("logical backup into a datadir: %d %q", code, errs)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("a refused restore created %s (%v)", dir, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--to-datadir", dir, "--to-mysql", dst.DSN}, "not both"},
		{[]string{"--to-datadir", dir, "--databases", "shop"}, "do not apply to --to-datadir"},
		{[]string{"--to-datadir", dir, "--mysqld", "/nonexistent/mariadbd"}, "/nonexistent/mariadbd"},
		// Point in time: the refusal (no archive) comes before writing.
		{[]string{"--to-datadir", dir, "--to-gtid", m.Consistency.GtidSet}, "no binlog"},
	} {
		code, _, errs := run(t, append([]string{"restore", m.BackupId, "--repo", repoURI}, c.args...)...)
		if code == 0 || !strings.Contains(errs, c.want) {
			t.Errorf("restore %v: %d %q, want %q", c.args, code, errs, c.want)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("restore %v created %s (%v)", c.args, dir, err)
		}
	}
	code, out, errs = run(t, "restore", m.BackupId, "--repo", repoURI, "--to-datadir", dir, "-o", "json")
	var res map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res["backup_id"] != m.BackupId || res["datadir"] != dir || res["files"].(float64) == 0 {
		t.Fatalf("restore --to-datadir -o json: %d %q %q", code, out, errs)
	}
	if physical.Unfinished(dir) {
		t.Fatal("marker left")
	}
	if code, _, errs := run(t, "restore", m.BackupId, "--repo", repoURI, "--to-datadir", dir); code == 0 || !strings.Contains(errs, "not empty") || !strings.Contains(errs, "nothing was written") {
		t.Fatalf("restore into the non-empty dir: %d %q", code, errs)
	}
	got := testenv.StartMariaDB(t, testenv.MariaDBOptions{DataDir: dir, Name: "cli-phys-restored"})
	gotSums := testenv.Checksums(t, got.DB(t), "shop")
	if len(gotSums) != len(want) {
		t.Errorf("restored tables %v, want %v", gotSums, want)
	}
	for k, w := range want {
		if gotSums[k] != w {
			t.Errorf("restored table %s = %+v, want %+v", k, gotSums[k], w)
		}
	}

	if code, out, errs := run(t, "repo", "verify", "--repo", repoURI, "--read-data", "--backup", m.BackupId); code != 0 || !strings.Contains(out, "no problems") {
		t.Fatalf("verify: %d %q %q", code, out, errs)
	}
	// Damage the largest object: a chunk of the physical backup's
	// biggest file (ibdata1 or the redo log).
	var objs []string
	_ = filepath.Walk(repoDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			objs = append(objs, p)
		}
		return nil
	})
	sort.Slice(objs, func(i, j int) bool { return size(objs[i]) > size(objs[j]) })
	f, err := os.OpenFile(objs[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("damage"), size(objs[0])/2); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	if code, out, errs := run(t, "repo", "verify", "--repo", repoURI, "--read-data"); code == 0 || !strings.Contains(out+errs, m.BackupId) {
		t.Fatalf("verify after damage: %d %q %q", code, out, errs)
	}
}

func size(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func lineOf(out, s string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// TestRestoreDatadirPITRCommand: `tidemark restore --instance NAME
// --to-datadir DIR --to-gtid G` from a mariabackup-style base and the
// archived binlog: a server started on DIR equals the source at G, not at
// its later state.
func TestRestoreDatadirPITRCommand(t *testing.T) {
	t.Setenv("TIDEMARK_REPO", "")
	t.Setenv("TIDEMARK_KEY_FILE", "")
	t.Setenv("TIDEMARK_PASSPHRASE_FILE", "")
	ctx := context.Background()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "cli-ppitr-src", ExtraArgs: []string{"--gtid-strict-mode=1"}})
	db := src.DB(t)
	testenv.LoadSample(t, db, "shop", 500)
	repoDir := filepath.Join(t.TempDir(), "repo")
	st, err := file.Open(repoDir, file.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := archive.Init(ctx, st, archive.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- binlog.Stream(sctx, binlog.StreamParams{DSNs: []string{src.DSN}, Repo: repo, Instance: "db", Flush: 100 * time.Millisecond})
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("stream: %v", err)
		}
	}()

	physicaltest.Mariabackup(t, repo, src, "db")
	src.Exec(t, "UPDATE shop.orders SET status = 'shipped' WHERE id % 3 = 0", "CREATE TABLE shop.audit (id INT PRIMARY KEY)", "INSERT INTO shop.audit VALUES (1)")
	var gtid string
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&gtid); err != nil {
		t.Fatal(err)
	}
	want := testenv.Checksums(t, db, "shop")
	src.Exec(t, "DROP TABLE shop.audit", "DELETE FROM shop.orders WHERE id % 2 = 0")
	var end string
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&end); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "archive at "+end, testenv.Wait(30*time.Second), func() error {
		a, err := binlog.OpenArchive(ctx, repo, "db")
		if err != nil {
			return err
		}
		if got := a.Status().GTIDPosition; got != end {
			return fmt.Errorf("archived to %q", got)
		}
		return nil
	})

	dir := filepath.Join(t.TempDir(), "datadir")
	code, out, errs := run(t, "restore", "--repo", "file://"+repoDir, "--instance", "db", "--to-datadir", dir, "--to-gtid", gtid)
	if code != 0 || !strings.Contains(out, "transactions through replication") {
		t.Fatalf("restore: %d %q %q", code, out, errs)
	}
	t.Log(strings.TrimSpace(out))
	got := testenv.StartMariaDB(t, testenv.MariaDBOptions{DataDir: dir, Name: "cli-ppitr-restored"})
	sums := testenv.Checksums(t, got.DB(t), "shop")
	if len(sums) != len(want) {
		t.Fatalf("restored tables %v, want %v", sums, want)
	}
	for k, w := range want {
		if sums[k] != w {
			t.Errorf("table %s = %+v, want %+v", k, sums[k], w)
		}
	}
}
