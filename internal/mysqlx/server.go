package mysqlx

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Flavors as recorded in v1.ServerInfo.
const (
	MySQL   = "mysql"
	MariaDB = "mariadb"
	Percona = "percona"
)

// Server is what Detect learns about a server.
type Server struct {
	Flavor              string // MySQL, MariaDB or Percona
	Version             string // SELECT VERSION()
	Major, Minor, Patch int
	Hostname            string
	ServerID            uint32
	ServerUUID          string // MySQL only
	LogBin              bool
	LowerCaseTableNames int
}

// queryer is what Detect needs: a *sql.DB, *sql.Conn or *sql.Tx.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Detect reads the server's flavor, version and identity.
func Detect(ctx context.Context, q queryer) (*Server, error) {
	var s Server
	var comment string
	var logBin, lctn int
	if err := q.QueryRowContext(ctx, "SELECT VERSION(), @@version_comment, @@hostname, @@server_id, @@log_bin, @@lower_case_table_names").
		Scan(&s.Version, &comment, &s.Hostname, &s.ServerID, &logBin, &lctn); err != nil {
		return nil, Translate("detecting the server version", err)
	}
	s.LogBin, s.LowerCaseTableNames = logBin == 1, lctn
	s.Flavor, s.Major, s.Minor, s.Patch = ParseVersion(s.Version, comment)
	if s.Flavor != MariaDB {
		// server_uuid exists on MySQL ≥ 5.6 and Percona only.
		_ = q.QueryRowContext(ctx, "SELECT @@server_uuid").Scan(&s.ServerUUID)
	}
	return &s, nil
}

// ParseVersion splits "10.11.6-MariaDB-0+deb12u1" or "8.0.36" into flavor and
// numbers; comment is @@version_comment, which names Percona.
func ParseVersion(version, comment string) (flavor string, major, minor, patch int) {
	flavor = MySQL
	switch {
	case strings.Contains(strings.ToLower(version), "mariadb"):
		flavor = MariaDB
	case strings.Contains(strings.ToLower(comment), "percona"):
		flavor = Percona
	}
	v := version
	// MariaDB 10.x before 11 may report "5.5.5-10.x.y-MariaDB" through some
	// proxies; the real version follows the prefix.
	v = strings.TrimPrefix(v, "5.5.5-")
	if i := strings.IndexFunc(v, func(r rune) bool { return r != '.' && (r < '0' || r > '9') }); i >= 0 {
		v = v[:i]
	}
	parts := strings.SplitN(v, ".", 3)
	nums := []*int{&major, &minor, &patch}
	for i, p := range parts {
		n, _ := strconv.Atoi(p)
		*nums[i] = n
	}
	return flavor, major, minor, patch
}

// AtLeast reports whether the server's version is at least major.minor.patch.
func (s *Server) AtLeast(major, minor, patch int) bool {
	if s.Major != major {
		return s.Major > major
	}
	if s.Minor != minor {
		return s.Minor > minor
	}
	return s.Patch >= patch
}

// IsMariaDB reports the MariaDB flavor.
func (s *Server) IsMariaDB() bool { return s.Flavor == MariaDB }

// Proto is the server as recorded in a manifest.
func (s *Server) Proto() *v1.ServerInfo {
	return &v1.ServerInfo{Flavor: s.Flavor, Version: s.Version, Hostname: s.Hostname, ServerId: s.ServerID, ServerUuid: s.ServerUUID}
}

func (s *Server) String() string { return fmt.Sprintf("%s %s", s.Flavor, s.Version) }

// QuoteIdent quotes a MySQL identifier with backticks.
func QuoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// QuoteString quotes a string literal for a session whose sql_mode lacks
// NO_BACKSLASH_ESCAPES (the engines set sql_mode themselves).
func QuoteString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\x00", `\0`, "\n", `\n`, "\r", `\r`, "\x1a", `\Z`)
	return "'" + r.Replace(s) + "'"
}
