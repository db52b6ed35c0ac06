package mariabackup

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

// checkPrivileges names every privilege the tool needs and the user lacks,
// before the tool runs (it would stop at the first, after connecting, with
// a message about the statement it tried):
//
//   - RELOAD: BACKUP STAGE / FLUSH TABLES WITH READ LOCK, FLUSH ENGINE LOGS
//   - PROCESS: reads the InnoDB status and the process list (long queries)
//   - LOCK TABLES: the non-InnoDB tables' lock
//   - BINLOG MONITOR (MariaDB ≥ 10.5; REPLICATION CLIENT before and on
//     MySQL): SHOW MASTER STATUS, the coordinates
//   - BACKUP_ADMIN (MySQL 8): LOCK INSTANCE FOR BACKUP
//
// Grants through roles do not show in information_schema.USER_PRIVILEGES;
// with an enabled role the check is skipped and the tool reports.
func checkPrivileges(ctx context.Context, db *sql.DB, srv *mysqlx.Server) error {
	var roles int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(ROLE_NAME) FROM information_schema.ENABLED_ROLES").Scan(&roles); err != nil || roles > 0 {
		return nil //nolint:nilerr // best effort: the tool reports what is missing
	}
	// A user who may read the mysql schema sees every account's rows:
	// only the current account's count.
	rows, err := db.QueryContext(ctx, `SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES
		WHERE GRANTEE = CONCAT("'", SUBSTRING_INDEX(CURRENT_USER(), '@', 1), "'@'", SUBSTRING_INDEX(CURRENT_USER(), '@', -1), "'")`)
	if err != nil {
		return nil //nolint:nilerr // best effort, as above
	}
	have := map[string]bool{}
	for rows.Next() {
		var p string
		if rows.Scan(&p) == nil {
			have[strings.ToUpper(p)] = true
		}
	}
	_ = rows.Close()
	var missing []string
	for _, p := range []string{"RELOAD", "PROCESS", "LOCK TABLES"} {
		if !have[p] {
			missing = append(missing, p)
		}
	}
	switch {
	case srv.IsMariaDB() && srv.AtLeast(10, 5, 2):
		if !have["BINLOG MONITOR"] {
			missing = append(missing, "BINLOG MONITOR")
		}
	case !have["REPLICATION CLIENT"] && !have["SUPER"]:
		missing = append(missing, "REPLICATION CLIENT")
	}
	if !srv.IsMariaDB() && srv.AtLeast(8, 0, 0) && !have["BACKUP_ADMIN"] {
		missing = append(missing, "BACKUP_ADMIN")
	}
	if len(missing) == 0 {
		return nil
	}
	var user string
	_ = db.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&user)
	return &mysqlx.Error{Kind: mysqlx.ErrPrivilege, Op: "checking privileges",
		Msg: fmt.Sprintf("user %s lacks privileges the %s engine needs: %s ON *.*; grant them (GRANT %s ON *.* TO the user) or back up as another user",
			user, Name, strings.Join(missing, ", "), strings.Join(missing, ", "))}
}
