package physicaltest

import (
	"bufio"
	"context"
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Point reads the server's identity and binlog coordinates: what an
// engine records under its lock.
func Point(t testing.TB, db *sql.DB) (*v1.ServerInfo, *v1.ConsistencyPoint) {
	t.Helper()
	ctx := context.Background()
	srv, err := mysqlx.Detect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	c := &v1.ConsistencyPoint{Time: timestamppb.Now()}
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&c.GtidSet); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query("SHOW MASTER STATUS")
	if err != nil {
		t.Fatal(err)
	}
	cols, _ := rows.Columns()
	vals := make([]any, len(cols))
	vals[0], vals[1] = &c.BinlogFile, &c.BinlogPosition
	for i := 2; i < len(cols); i++ {
		vals[i] = new(sql.RawBytes)
	}
	for rows.Next() {
		if err := rows.Scan(vals...); err != nil {
			t.Fatal(err)
		}
	}
	_ = rows.Close()
	return srv.Proto(), c
}

// Snapshot kills src (a crash: its datadir is then exactly a
// crash-consistent image, what a filesystem snapshot holds), copies the
// datadir into a backup of engine "snapshot" with prepare=crash-recovery,
// and returns the manifest. The coordinates are read just before the
// kill; nothing may write meanwhile. src is left stopped; Restart it to go
// on.
func Snapshot(t testing.TB, repo *archive.Repo, src *testenv.MariaDB, instance string) *v1.Manifest {
	t.Helper()
	db, err := sql.Open("mysql", src.RootDSN)
	if err != nil {
		t.Fatal(err)
	}
	srv, c := Point(t, db)
	_ = db.Close()
	src.Kill()
	return store(t, repo, "snapshot", physical.PrepareCrashRecovery, []physical.Root{{Name: physical.RootDatadir, Dir: src.DataDir}}, instance, srv, c)
}

// SnapshotWithBinlogs is Snapshot of a server whose binlogs are in
// binlogDir, outside its datadir: they are stored as the binlog root.
func SnapshotWithBinlogs(t testing.TB, repo *archive.Repo, src *testenv.MariaDB, binlogDir, instance string) *v1.Manifest {
	t.Helper()
	db, err := sql.Open("mysql", src.RootDSN)
	if err != nil {
		t.Fatal(err)
	}
	srv, c := Point(t, db)
	_ = db.Close()
	src.Kill()
	return store(t, repo, "snapshot", physical.PrepareCrashRecovery,
		[]physical.Root{{Name: physical.RootDatadir, Dir: src.DataDir}, {Name: physical.RootBinlog, Dir: binlogDir}}, instance, srv, c)
}

// Mariabackup runs `mariabackup --backup --target-dir` on the running src
// (not streamed), copies the directory into a backup with
// prepare=mariabackup and the coordinates mariabackup wrote into
// mariadb_backup_binlog_info, and returns the manifest.
func Mariabackup(t testing.TB, repo *archive.Repo, src *testenv.MariaDB, instance string) *v1.Manifest {
	t.Helper()
	m, _ := MariabackupDir(t, repo, src, instance)
	return m
}

// MariabackupDir is Mariabackup, also returning mariabackup's directory
// (unprepared; removed when the test ends).
func MariabackupDir(t testing.TB, repo *archive.Repo, src *testenv.MariaDB, instance string) (*v1.Manifest, string) {
	t.Helper()
	bin := testenv.RequireBinary(t, "mariabackup", testenv.MariaDBInstallHint)
	dir := filepath.Join(t.TempDir(), "mariabackup")
	out, err := exec.Command(bin, "--backup", "--target-dir="+dir, "--socket="+src.Socket, "--user=root").CombinedOutput()
	if err != nil {
		t.Fatalf("mariabackup --backup: %v\n%s", err, tail(string(out)))
	}
	db, err := sql.Open("mysql", src.RootDSN)
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := Point(t, db)
	_ = db.Close()
	c := &v1.ConsistencyPoint{Time: timestamppb.Now()}
	// mariadb_backup_binlog_info since MariaDB 11; xtrabackup_binlog_info before.
	f, err := os.Open(filepath.Join(dir, "mariadb_backup_binlog_info"))
	if os.IsNotExist(err) {
		f, err = os.Open(filepath.Join(dir, "xtrabackup_binlog_info"))
	}
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	if sc.Scan() {
		// "binlog.000002\t1234\t0-1-42"
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 {
			c.BinlogFile = fields[0]
			c.BinlogPosition, _ = strconv.ParseUint(fields[1], 10, 64)
		}
		if len(fields) >= 3 {
			c.GtidSet = fields[2]
		}
	}
	_ = f.Close()
	if c.BinlogFile == "" {
		t.Fatalf("mariabackup's binlog info holds no coordinates")
	}
	return store(t, repo, "mariabackup", physical.PrepareMariabackup, []physical.Root{{Name: physical.RootDatadir, Dir: dir}}, instance, srv, c), dir
}

func store(t testing.TB, repo *archive.Repo, engine, prepare string, roots []physical.Root, instance string, srv *v1.ServerInfo, c *v1.ConsistencyPoint) *v1.Manifest {
	t.Helper()
	m, err := repo.WithBackup(context.Background(), archive.BackupOptions{Instance: instance, Engine: engine},
		func(ctx context.Context, b *archive.Backup) error {
			sink := engines.ArchiveSink(b)
			sink.SetServer(srv)
			sink.SetConsistency(c)
			sink.SetLockDuration(time.Millisecond)
			sink.SetEngineMetadata(physical.MetaFormat, physical.FormatVersion)
			sink.SetEngineMetadata(physical.MetaBlock, strconv.Itoa(physical.DefaultBlock))
			sink.SetEngineMetadata(physical.MetaPrepare, prepare)
			_, err := physical.CopyTree(ctx, physical.CopyParams{Sink: sink, Roots: roots})
			return err
		})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func tail(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}
