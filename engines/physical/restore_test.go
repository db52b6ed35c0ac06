package physical_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/engines/physical/physicaltest"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

func openRepo(t *testing.T) *archive.Repo {
	t.Helper()
	st, err := file.Open(filepath.Join(t.TempDir(), "repo"), file.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := archive.Init(context.Background(), st, archive.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); _ = st.Close() })
	return r
}

// fill writes a few tables, one with an uncommitted-at-crash-time-free
// history of updates and deletes, so recovery has redo to apply.
func fill(t *testing.T, src *testenv.MariaDB, rows int) {
	t.Helper()
	src.Exec(t, "CREATE DATABASE app",
		"CREATE TABLE app.accounts (id INT PRIMARY KEY, owner VARCHAR(40), balance BIGINT, note TEXT)",
		"CREATE TABLE app.log (id BIGINT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB",
		"CREATE TABLE app.aria (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=Aria")
	var b strings.Builder
	for i := 0; i < rows; i++ {
		if b.Len() > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "(%d, 'owner%d', %d, REPEAT('x', %d))", i, i, i*10, i%300)
		if i%500 == 499 || i == rows-1 {
			src.Exec(t, "INSERT INTO app.accounts VALUES "+b.String())
			b.Reset()
		}
	}
	src.Exec(t, "UPDATE app.accounts SET balance = balance + 7 WHERE id % 3 = 0",
		"DELETE FROM app.accounts WHERE id % 11 = 5",
		"INSERT INTO app.log (v) SELECT owner FROM app.accounts WHERE id < 100",
		"INSERT INTO app.aria VALUES (1, 'one'), (2, 'two')")
}

func rowsFor() int {
	if testing.Short() {
		return 2000
	}
	return 20000
}

func restore(t *testing.T, repo *archive.Repo, m *v1.Manifest, dir string, mysqld string) (*physical.RestoreResult, error) {
	t.Helper()
	return physical.Restore(context.Background(), physical.RestoreParams{
		Source: engines.ArchiveSource(repo, m), Dirs: map[string]string{physical.RootDatadir: dir}, Mysqld: mysqld,
	})
}

// TestRestoreCrashImage: a killed server's datadir (a crash-consistent
// image) restored into a new directory is recovered by the temporary
// server, the marker removed, and a server started on it holds exactly
// the source's data at the kill.
func TestRestoreCrashImage(t *testing.T) {
	repo := openRepo(t)
	src := testenv.StartMariaDB(t)
	fill(t, src, rowsFor())
	want := testenv.Checksums(t, src.DB(t), "app")
	m := physicaltest.Snapshot(t, repo, src, "src")

	dir := filepath.Join(t.TempDir(), "restored")
	res, err := restore(t, repo, m, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Files == 0 || res.Bytes == 0 || res.Mysqld == nil {
		t.Errorf("result %+v", res)
	}
	if physical.Unfinished(dir) {
		t.Fatalf("the marker is still in %s after a successful restore", dir)
	}
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{DataDir: dir, Name: "restored"})
	sameSums(t, want, testenv.Checksums(t, dst.DB(t), "app"))
	var gtid string
	if err := dst.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&gtid); err != nil || gtid != m.Consistency.GtidSet {
		t.Errorf("restored gtid_binlog_pos %q (%v), the backup's %q", gtid, err, m.Consistency.GtidSet)
	}
}

// TestRestoreCrashImageBinlogsElsewhere: a crash image of a server whose
// binlogs live outside its datadir (an absolute --log-bin, so its index
// names absolute paths): the binlogs are restored into the datadir, the
// index made to name them there, recovery runs with them, and a server on
// the datadir has the source's data and binlog position.
func TestRestoreCrashImageBinlogsElsewhere(t *testing.T) {
	repo := openRepo(t)
	binlogs := filepath.Join(t.TempDir(), "binlogs")
	if err := os.MkdirAll(binlogs, 0o750); err != nil {
		t.Fatal(err)
	}
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{ExtraArgs: []string{"--log-bin=" + filepath.Join(binlogs, "binlog")}})
	fill(t, src, 1000)
	want := testenv.Checksums(t, src.DB(t), "app")
	m := physicaltest.SnapshotWithBinlogs(t, repo, src, binlogs, "src")
	if idx, _ := os.ReadFile(filepath.Join(binlogs, "binlog.index")); !strings.Contains(string(idx), binlogs) {
		t.Fatalf("the source's index %q does not name absolute paths: the test tests nothing", idx)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := restore(t, repo, m, dir, ""); err != nil {
		t.Fatal(err)
	}
	idx, err := os.ReadFile(filepath.Join(dir, "binlog.index"))
	if err != nil || strings.Contains(string(idx), binlogs) {
		t.Fatalf("restored index %q (%v) still names the source's directory", idx, err)
	}
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{DataDir: dir, Name: "restored"})
	sameSums(t, want, testenv.Checksums(t, dst.DB(t), "app"))
	var gtid string
	if err := dst.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&gtid); err != nil || gtid != m.Consistency.GtidSet {
		t.Errorf("restored gtid_binlog_pos %q (%v), the backup's %q", gtid, err, m.Consistency.GtidSet)
	}
}

// TestRestoreMariabackup: mariabackup's output, restored and prepared with
// mariabackup --prepare, starts and equals the source at the backup.
func TestRestoreMariabackup(t *testing.T) {
	repo := openRepo(t)
	src := testenv.StartMariaDB(t)
	fill(t, src, rowsFor())
	want := testenv.Checksums(t, src.DB(t), "app")
	m := physicaltest.Mariabackup(t, repo, src, "src")
	src.Exec(t, "UPDATE app.accounts SET balance = 0") // after the backup: must not show

	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := restore(t, repo, m, dir, ""); err != nil {
		t.Fatal(err)
	}
	if physical.Unfinished(dir) {
		t.Fatalf("the marker is still in %s", dir)
	}
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{DataDir: dir, Name: "restored"})
	sameSums(t, want, testenv.Checksums(t, dst.DB(t), "app"))
}

// TestRestoreRefusals: every refusal comes before anything is written or
// started, and says what was wrong.
func TestRestoreRefusals(t *testing.T) {
	repo := openRepo(t)
	src := testenv.StartMariaDB(t)
	fill(t, src, 500)
	m := physicaltest.Snapshot(t, repo, src, "src")

	t.Run("non-empty", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "ibdata1"), []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
		_, err := restore(t, repo, m, dir, "")
		if !errors.Is(err, physical.ErrNotEmpty) || !strings.Contains(err.Error(), "ibdata1") {
			t.Fatalf("err = %v, want ErrNotEmpty naming ibdata1", err)
		}
		onlyEntries(t, dir, "ibdata1")
	})
	t.Run("running server", func(t *testing.T) {
		live := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "live"})
		_, err := restore(t, repo, m, live.DataDir, "")
		if !errors.Is(err, physical.ErrInUse) || !strings.Contains(err.Error(), fmt.Sprint(live.Pid())) {
			t.Fatalf("err = %v, want ErrInUse naming pid %d", err, live.Pid())
		}
	})
	t.Run("unfinished", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, physical.InProgressMarker), []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
		_, err := restore(t, repo, m, dir, "")
		if !errors.Is(err, physical.ErrNotEmpty) || !strings.Contains(err.Error(), "unfinished restore") {
			t.Fatalf("err = %v, want the unfinished restore named", err)
		}
		onlyEntries(t, dir, physical.InProgressMarker)
	})
	t.Run("too small", func(t *testing.T) {
		dir := filepath.Join(testenv.Tmpfs(t, "16m"), "data")
		_, err := restore(t, repo, m, dir, "")
		if !errors.Is(err, physical.ErrNoSpace) || !strings.Contains(err.Error(), "MiB free") {
			t.Fatalf("err = %v, want ErrNoSpace with the figures", err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was created (%v)", dir, err)
		}
	})
	t.Run("other version", func(t *testing.T) {
		// A double of the server binary: a script answering --version
		// as MariaDB 11.4 would, and recording any other call.
		dir := t.TempDir()
		calls := filepath.Join(dir, "calls")
		fake := filepath.Join(dir, "fake-mariadbd-11.4")
		script := "#!/bin/sh\nif [ \"$2\" = --version ]; then echo 'mariadbd  Ver 11.4.5-MariaDB for debian-linux-gnu on x86_64 (Debian)'; exit 0; fi\necho \"$@\" >> " + calls + "\nexit 1\n"
		if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dir, "data")
		_, err := restore(t, repo, m, target, fake)
		if !errors.Is(err, physical.ErrVersionMismatch) || !strings.Contains(err.Error(), "11.4.5") || !strings.Contains(err.Error(), m.Server.Version) {
			t.Fatalf("err = %v, want a version mismatch naming both versions", err)
		}
		if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was created (%v)", target, err)
		}
		if _, err := os.Stat(calls); err == nil {
			t.Errorf("the server binary was started for more than --version")
		}
	})
	t.Run("recovery fails", func(t *testing.T) {
		// A double of the server binary of the right version whose
		// start fails as a damaged datadir would: the error quotes its
		// error log, and the directory keeps its marker.
		dir := t.TempDir()
		fake := filepath.Join(dir, "fake-mariadbd-failing")
		script := "#!/bin/sh\nif [ \"$2\" = --version ]; then echo 'mariadbd  Ver " + m.Server.Version + " for debian-linux-gnu on x86_64'; exit 0; fi\n" +
			"for a in \"$@\"; do case \"$a\" in --log-error=*) echo '[ERROR] InnoDB: simulated corruption in ./ibdata1' > \"${a#--log-error=}\";; esac; done\nexit 1\n"
		if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dir, "data")
		_, err := restore(t, repo, m, target, fake)
		if err == nil || !strings.Contains(err.Error(), "simulated corruption") || !strings.Contains(err.Error(), physical.InProgressMarker) {
			t.Fatalf("err = %v, want the error log's tail and the marker named", err)
		}
		if !physical.Unfinished(target) {
			t.Errorf("the marker was removed after a failed prepare")
		}
		if _, err := restore(t, repo, m, target, ""); !errors.Is(err, physical.ErrNotEmpty) || !strings.Contains(err.Error(), "unfinished restore") {
			t.Errorf("a second restore into it: %v, want the unfinished restore named", err)
		}
	})
	t.Run("other mariabackup version", func(t *testing.T) {
		// A backup mariabackup must prepare (one small file is enough:
		// the check comes first), and a double of mariabackup that
		// reports 11.4.
		mm, err := repo.WithBackup(context.Background(), archive.BackupOptions{Instance: "src", Engine: "mariabackup"}, func(ctx context.Context, b *archive.Backup) error {
			sink := engines.ArchiveSink(b)
			sink.SetServer(m.Server)
			sink.SetConsistency(m.Consistency)
			sink.SetEngineMetadata(physical.MetaFormat, physical.FormatVersion)
			sink.SetEngineMetadata(physical.MetaPrepare, physical.PrepareMariabackup)
			w, err := physical.Create(sink, physical.File{Root: physical.RootDatadir, Path: "ibdata1", Kind: physical.KindFile, Mode: 0o640}, 0)
			if err != nil {
				return err
			}
			_, _ = w.Write([]byte("data"))
			return w.Close()
		})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		fake := filepath.Join(dir, "fake-mariabackup-11.4")
		if err := os.WriteFile(fake, []byte("#!/bin/sh\necho 'mariabackup based on MariaDB server 11.4.5-MariaDB Linux (x86_64)' >&2\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dir, "data")
		_, err = physical.Restore(context.Background(), physical.RestoreParams{Source: engines.ArchiveSource(repo, mm),
			Dirs: map[string]string{physical.RootDatadir: target}, Mariabackup: fake})
		if !errors.Is(err, physical.ErrVersionMismatch) || !strings.Contains(err.Error(), "mariabackup") || !strings.Contains(err.Error(), "11.4.5") {
			t.Fatalf("err = %v, want a mismatch naming mariabackup 11.4.5", err)
		}
		if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was created (%v)", target, err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		// Cancelled while the files are written: the error says so, the
		// marker stays, and no server was started on the half.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		target := filepath.Join(t.TempDir(), "data")
		_, err := physical.Restore(ctx, physical.RestoreParams{Source: engines.ArchiveSource(repo, m),
			Dirs: map[string]string{physical.RootDatadir: target}, Parallel: 1,
			Progress: func(phase string, done, total int64) {
				if phase == "extract" && done > 0 {
					cancel()
				}
			}})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if !physical.Unfinished(target) {
			t.Errorf("no marker in the half-written %s", target)
		}
		if strings.Contains(err.Error(), "temporary server") {
			t.Errorf("a server was started on the half-written directory: %v", err)
		}
	})
	t.Run("logical backup", func(t *testing.T) {
		lm := &v1.Manifest{BackupId: "b-logical", Engine: "logical"}
		_, err := physical.Restore(context.Background(), physical.RestoreParams{
			Source: engines.ArchiveSource(repo, lm), Dirs: map[string]string{physical.RootDatadir: t.TempDir()},
		})
		if err == nil || !strings.Contains(err.Error(), "--to-mysql") {
			t.Fatalf("err = %v, want the logical restore named", err)
		}
	})
}

func onlyEntries(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %v after a refused restore, want only %v", dir, got, names)
	}
}

func sameSums(t *testing.T, want, got map[string]testenv.TableSum) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("tables %v, want %v", got, want)
		return
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("table %s = %+v, want %+v", k, got[k], w)
		}
	}
}
