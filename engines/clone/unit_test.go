package clone

import (
	"errors"
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

// TestGrantsBackupAdmin: SHOW GRANTS lines as MySQL 8.0 prints them.
func TestGrantsBackupAdmin(t *testing.T) {
	for _, c := range []struct {
		line string
		want bool
	}{
		{"GRANT BACKUP_ADMIN ON *.* TO `tm`@`%`", true},
		{"GRANT APPLICATION_PASSWORD_ADMIN,AUDIT_ADMIN,BACKUP_ADMIN,BINLOG_ADMIN ON *.* TO `root`@`localhost` WITH GRANT OPTION", true},
		{"GRANT ALL PRIVILEGES ON *.* TO `root`@`%`", true},
		{"grant all on *.* to `root`@`%`", true},
		{"GRANT SELECT, RELOAD, PROCESS ON *.* TO `tm`@`%`", false},
		{"GRANT BACKUP_ADMIN ON `shop`.* TO `tm`@`%`", false}, // not global: MySQL has no such grant, and it would not do
		{"GRANT BACKUP_ADMIN_EXTRA ON *.* TO `tm`@`%`", false},
		{"GRANT `backup_role`@`%` TO `tm`@`%`", false},
		{"GRANT USAGE ON *.* TO `tm`@`%`", false},
	} {
		if got := grantsBackupAdmin(c.line); got != c.want {
			t.Errorf("%q: %v, want %v", c.line, got, c.want)
		}
	}
}

// TestCheckServer: MariaDB and MySQL before 8.0.17 are refused, naming
// what works instead.
func TestCheckServer(t *testing.T) {
	for _, c := range []struct {
		version, comment string
		say              string // "" = accepted
	}{
		{"8.0.36", "MySQL Community Server - GPL", ""},
		{"8.0.17", "MySQL Community Server - GPL", ""},
		{"8.4.3", "MySQL Community Server - GPL", ""},
		{"8.0.16", "MySQL Community Server - GPL", "needs MySQL ≥ 8.0.17"},
		{"5.7.44-log", "MySQL Community Server (GPL)", "needs MySQL ≥ 8.0.17"},
		{"10.11.19-MariaDB-0+deb12u1", "Debian 12", "--engine mariabackup"},
		{"8.0.36-28", "Percona Server (GPL), Release 28", ""},
	} {
		s := &mysqlx.Server{Version: c.version}
		s.Flavor, s.Major, s.Minor, s.Patch = mysqlx.ParseVersion(c.version, c.comment)
		err := checkServer(s)
		switch {
		case c.say == "" && err != nil:
			t.Errorf("%s: %v", c.version, err)
		case c.say != "" && (!errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), c.say)):
			t.Errorf("%s: %v, want ErrUnsupported saying %q", c.version, err, c.say)
		}
	}
}

// TestParseTime: clone_status's END_TIME, read in a +00:00 session with
// or without the driver's parseTime.
func TestParseTime(t *testing.T) {
	for _, s := range []string{"2026-12-03 18:00:01.250", "2026-12-03 18:00:01.25", "2026-12-03T18:00:01.25Z"} {
		got, ok := parseTime(s)
		if !ok || got.UnixMilli() != 1796320801250 {
			t.Errorf("%q: %v %v", s, got, ok)
		}
	}
	if _, ok := parseTime(""); ok {
		t.Errorf("empty END_TIME parsed")
	}
}
