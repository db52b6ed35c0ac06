package logical

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

// checkBackupPrivileges names, up front, every privilege the backup user
// lacks, instead of failing on the first statement the server refuses, and
// catches the privileges whose absence the server would not report at all:
// without TRIGGER or EVENT, information_schema silently hides triggers and
// events, and the backup would be incomplete without an error.
//
// It reads the user's own grants from information_schema. Privileges that
// come through roles do not show there, so with an enabled role the check
// is skipped and the statements themselves report what is missing.
func checkBackupPrivileges(ctx context.Context, q *sql.Conn, srv *mysqlx.Server, dbs []string) error {
	var roles int
	if err := q.QueryRowContext(ctx, "SELECT COUNT(ROLE_NAME) FROM information_schema.ENABLED_ROLES").Scan(&roles); err != nil || roles > 0 {
		return nil //nolint:nilerr // best effort: the statements themselves report what is missing
	}
	global := map[string]bool{}
	// A user with SELECT on the mysql schema (global SELECT, which the
	// backup needs) sees every account's rows here, root's included: only
	// the current account's count, or a user without TRIGGER or EVENT
	// passes the check and its backup silently lacks triggers and events.
	rows, err := q.QueryContext(ctx, "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = "+currentGrantee)
	if err != nil {
		return nil //nolint:nilerr // best effort, as above
	}
	for rows.Next() {
		var p string
		if rows.Scan(&p) == nil {
			global[strings.ToUpper(p)] = true
		}
	}
	_ = rows.Close()
	type grant struct{ pattern, priv string }
	var schemaGrants []grant
	rows, err = q.QueryContext(ctx, "SELECT TABLE_SCHEMA, PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = "+currentGrantee)
	if err != nil {
		return nil //nolint:nilerr // best effort, as above
	}
	for rows.Next() {
		var g grant
		if rows.Scan(&g.pattern, &g.priv) == nil {
			g.priv = strings.ToUpper(g.priv)
			schemaGrants = append(schemaGrants, g)
		}
	}
	_ = rows.Close()

	var missing []string
	if !global["RELOAD"] {
		missing = append(missing, "RELOAD ON *.* (the backup lock)")
	}
	if srv.LogBin {
		switch {
		case srv.IsMariaDB() && srv.AtLeast(10, 5, 2):
			if !global["BINLOG MONITOR"] && !global["SUPER"] {
				missing = append(missing, "BINLOG MONITOR ON *.* (binlog coordinates)")
			}
		case !global["REPLICATION CLIENT"] && !global["SUPER"]:
			missing = append(missing, "REPLICATION CLIENT ON *.* (binlog coordinates)")
		}
	}
	for _, db := range dbs {
		var lacking []string
		for _, priv := range []string{"SELECT", "SHOW VIEW", "TRIGGER", "EVENT"} {
			if global[priv] {
				continue
			}
			ok := false
			for _, g := range schemaGrants {
				if g.priv == priv && likeMatch(g.pattern, db) {
					ok = true
					break
				}
			}
			if !ok {
				lacking = append(lacking, priv)
			}
		}
		if len(lacking) > 0 {
			missing = append(missing, strings.Join(lacking, ", ")+" ON "+qi(db)+".*")
		}
	}
	if len(missing) == 0 {
		return nil
	}
	var user string
	_ = q.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&user)
	return &mysqlx.Error{Kind: mysqlx.ErrPrivilege, Op: "checking privileges",
		Msg: fmt.Sprintf("user %s lacks privileges a consistent logical backup needs: %s; grant them (GRANT ... TO the user) or back up as another user",
			user, strings.Join(missing, "; "))}
}

// currentGrantee is the current account as information_schema's GRANTEE
// column spells it: 'user'@'host'.
const currentGrantee = `CONCAT("'", SUBSTRING_INDEX(CURRENT_USER(), '@', 1), "'@'", SUBSTRING_INDEX(CURRENT_USER(), '@', -1), "'")`

// likeMatch matches a grant's database pattern (% and _ wildcards, \
// escapes) against a name, as the server does.
func likeMatch(pattern, name string) bool {
	if pattern == "" {
		return name == ""
	}
	switch c := pattern[0]; c {
	case '%':
		for i := 0; i <= len(name); i++ {
			if likeMatch(pattern[1:], name[i:]) {
				return true
			}
		}
		return false
	case '_':
		return name != "" && likeMatch(pattern[1:], name[1:])
	case '\\':
		if len(pattern) > 1 {
			return name != "" && name[0] == pattern[1] && likeMatch(pattern[2:], name[1:])
		}
	}
	return name != "" && name[0] == pattern[0] && likeMatch(pattern[1:], name[1:])
}
