package physical

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestBinlogBase: the restored index is made to name the restored files
// (an absolute --log-bin of the source would have recovery read the
// original server's binlog), and an index naming a file the backup lacks
// is refused.
func TestBinlogBase(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"mysql-bin.000007", "mysql-bin.000008"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("\xfebin"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	idx := filepath.Join(dir, "mysql-bin.index")
	write := func(s string) {
		if err := os.WriteFile(idx, []byte(s), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	c := &v1.ConsistencyPoint{BinlogFile: "mysql-bin.000008", BinlogPosition: 4}

	write("/var/log/mysql/mysql-bin.000007\n/var/log/mysql/mysql-bin.000008\n")
	base, err := binlogBase(dir, dir, c)
	if err != nil || base != "mysql-bin" {
		t.Fatalf("binlogBase = %q, %v", base, err)
	}
	if got, _ := os.ReadFile(idx); string(got) != "./mysql-bin.000007\n./mysql-bin.000008\n" {
		t.Errorf("index rewritten as %q", got)
	}

	elsewhere := t.TempDir()
	write("./mysql-bin.000007\n./mysql-bin.000008\n")
	if base, err := binlogBase(dir, elsewhere, c); err != nil || base != filepath.Join(dir, "mysql-bin") {
		t.Fatalf("binlogs beside another datadir: %q, %v", base, err)
	}
	if got, _ := os.ReadFile(idx); !strings.HasPrefix(string(got), filepath.Join(dir, "mysql-bin.000007")+"\n") {
		t.Errorf("index rewritten as %q", got)
	}

	write("./mysql-bin.000006\n./mysql-bin.000007\n")
	if _, err := binlogBase(dir, dir, c); err == nil || !strings.Contains(err.Error(), "mysql-bin.000006") {
		t.Errorf("an index naming a missing file: %v", err)
	}
	if base, err := binlogBase(dir, dir, &v1.ConsistencyPoint{}); err != nil || base != "" {
		t.Errorf("no coordinates: %q, %v", base, err)
	}
}
