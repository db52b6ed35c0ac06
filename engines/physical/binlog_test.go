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

// TestVersionParsing: --version output as the programs print it, and the
// flavor/major-version verdict against a backup's server.
func TestVersionParsing(t *testing.T) {
	for _, c := range []struct {
		out, flavor, version, major string
		mariabackup                 bool
	}{
		{out: "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)\n", flavor: "mariadb", version: "10.11.19", major: "10.11"},
		{out: "/usr/sbin/mysqld  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)\n", flavor: "mysql", version: "8.0.36", major: "8.0"},
		{out: "/usr/sbin/mysqld  Ver 8.0.35-27 for Linux on x86_64 (Percona Server (GPL), Release '27', Revision '2f8eeab2')\n", flavor: "percona", version: "8.0.35", major: "8.0"},
		{out: "mariadbd  Ver 11.4.5-MariaDB for Linux on x86_64 (MariaDB Server)\n", flavor: "mariadb", version: "11.4.5", major: "11.4"},
		{out: "mariabackup based on MariaDB server 10.11.19-MariaDB debian-linux-gnu (x86_64)\n", flavor: "mariadb", version: "10.11.19", major: "10.11", mariabackup: true},
		{out: "2024-01-01T00:00:00.000000-00:00 0 [Note] [MY-011825] [Xtrabackup] recognized server arguments:\nxtrabackup version 8.0.35-30 based on MySQL server 8.0.35 Linux (x86_64) (revision id: 6beb4b49)\n", flavor: "mysql", version: "8.0.35", major: "8.0", mariabackup: true},
	} {
		parse := parseMysqldVersion
		if c.mariabackup {
			parse = parseMariabackupVersion
		}
		b, err := parse("bin", c.out)
		if err != nil || b.Flavor != c.flavor || b.Version != c.version || b.Major != c.major {
			t.Errorf("%q: %+v, %v; want %s %s (%s)", c.out, b, err, c.flavor, c.version, c.major)
		}
	}
	if _, err := parseMysqldVersion("bin", "Usage: whatever"); err == nil || !strings.Contains(err.Error(), "Ver X.Y.Z") {
		t.Errorf("not a server: %v", err)
	}
	mdb, _ := parseMysqldVersion("mariadbd", "mariadbd  Ver 10.11.19-MariaDB for Linux\n")
	my, _ := parseMysqldVersion("mysqld", "mysqld  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)\n")
	for _, c := range []struct {
		server *v1.ServerInfo
		bin    *Binary
		ok     bool
	}{
		{&v1.ServerInfo{Flavor: "mariadb", Version: "10.11.6-MariaDB-0+deb12u1"}, mdb, true},
		{&v1.ServerInfo{Flavor: "mariadb", Version: "10.6.16-MariaDB"}, mdb, false},
		{&v1.ServerInfo{Flavor: "mysql", Version: "8.0.36"}, mdb, false},
		{&v1.ServerInfo{Flavor: "percona", Version: "8.0.35-27"}, my, true},
		{&v1.ServerInfo{Flavor: "mysql", Version: "8.4.0"}, my, false},
	} {
		err := checkVersion("the server binary", c.server, c.bin)
		if (err == nil) != c.ok {
			t.Errorf("%s %s on %s %s: %v, want ok=%v", c.server.Flavor, c.server.Version, c.bin.Flavor, c.bin.Version, err, c.ok)
		}
	}
}
