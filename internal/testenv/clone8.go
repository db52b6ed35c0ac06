package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// CloneDouble is a test DOUBLE for MySQL 8.0's clone plugin: a
// MySQL8Double that also answers what the clone engine asks. No MySQL runs
// on this machine, so everything below is taken from MySQL's documentation
// and source, cited where it is used, and nothing here proves that MySQL
// behaves so; the README's support table says the clone engine is
// verified against this double only.
//
// What it answers (every other statement goes to the MariaDB behind it):
//
//   - information_schema.PLUGINS for the plugin 'clone' (ACTIVE, or no row
//     when "not installed"): https://dev.mysql.com/doc/refman/8.0/en/clone-plugin-installation.html
//   - SHOW GRANTS as MySQL 8.0 prints it: static privileges on one line,
//     dynamic ones (BACKUP_ADMIN) on another
//     (https://dev.mysql.com/doc/refman/8.0/en/show-grants.html,
//     https://dev.mysql.com/doc/refman/8.0/en/privileges-provided.html#priv_backup-admin).
//   - CLONE LOCAL DATA DIRECTORY [=] 'dir'
//     (https://dev.mysql.com/doc/refman/8.0/en/clone.html,
//     https://dev.mysql.com/doc/refman/8.0/en/clone-plugin-local.html):
//     refused with ER_PLUGIN_IS_NOT_LOADED (1524) without the plugin,
//     ER_SPECIFIC_ACCESS_DENIED_ERROR (1227) naming BACKUP_ADMIN without
//     the privilege, ER_PATH_IN_DATADIR (3632) for a path inside the
//     datadir and ER_DB_CREATE_EXISTS (1007) for an existing directory
//     (mysql-server sql/clone_handler.cc, validate_dir); otherwise it runs
//     until the directory is written, like MySQL's, blocking its
//     connection.
//   - KILL QUERY id of a running clone: the clone stops with
//     ER_QUERY_INTERRUPTED (1317) and STATE 'Failed'
//     (https://dev.mysql.com/doc/refman/8.0/en/clone-plugin-stop.html).
//   - performance_schema.clone_status (one row, the last clone; no row
//     before the first) and performance_schema.clone_progress (one row per
//     stage): the column names, types, state and stage names are those of
//     mysql-server plugin/clone/src/clone_status.cc (Status_pfs,
//     Progress_pfs, Table_pfs::init_state_names);
//     https://dev.mysql.com/doc/refman/8.0/en/performance-schema-clone-status-table.html,
//     https://dev.mysql.com/doc/refman/8.0/en/performance-schema-clone-progress-table.html.
//     The tables are answered by replacing their names in the query with a
//     derived table of literal rows, so any column list and WHERE the
//     client writes works. Times are UTC.
//
// What the clone writes: the files are MARIADB's, not MySQL's (no MySQL
// runs here): a copy of the backend's datadir taken under BACKUP STAGE
// BLOCK_COMMIT after InnoDB has flushed its dirty pages, without the
// binlogs (a clone has none: clone-plugin-local.html), with the backend's
// binlog file, position and gtid_binlog_pos recorded as clone_status's
// BINLOG_FILE, BINLOG_POSITION and GTID_EXECUTED. mariadbd can be started
// on it (through MySQLdDouble when the backup says MySQL). The files are
// written by this process, as MySQL's would be by mysqld.
//
// Failures it can be made to show: plugin missing (SetPlugin("")),
// privilege missing (SetBackupAdmin(false)), disk full after n bytes
// (FailAfter: ER_ERROR_ON_WRITE (3) with OS errno 28, the directory left
// half written), and a clone held mid-copy (Hold) so that a test can kill
// the client while the directory exists. A failed clone leaves its
// directory behind: the double does not clean up after itself, so a test
// sees that Tidemark does. A clone whose client went away runs on to its
// end, as a server thread does until it next checks its connection.
type CloneDouble struct {
	*MySQL8Double
	m *MariaDB

	mu          sync.Mutex
	plugin      string // PLUGIN_STATUS; "": not installed
	backupAdmin bool
	failAfter   int64 // bytes; <0: never
	hold        chan struct{}
	held        chan struct{} // closed when a held clone waits
	ran         bool
	status      cloneStatusRow
	progress    [7]cloneStageRow // DROP DATA .. RECOVERY
	running     *cloneRun
}

type cloneStatusRow struct {
	id, pid      int
	state        string
	begin, end   time.Time
	source, dest string
	errNo        int
	errMsg       string
	binlogFile   string
	binlogPos    uint64
	gtid         string
}

type cloneStageRow struct {
	state          string
	begin, end     time.Time
	threads        int
	estimate, data int64
}

type cloneRun struct {
	thread uint32
	killed bool
}

// cloneStages are Table_pfs's stage names after "None"
// (plugin/clone/src/clone_status.cc, init_state_names).
var cloneStages = [7]string{"DROP DATA", "FILE COPY", "PAGE COPY", "REDO COPY", "FILE SYNC", "RESTART", "RECOVERY"}

// StartCloneDouble starts a clone double in front of m: plugin ACTIVE,
// root with BACKUP_ADMIN.
func StartCloneDouble(t testing.TB, m *MariaDB) *CloneDouble {
	t.Helper()
	c := &CloneDouble{MySQL8Double: StartMySQL8Double(t, m), m: m, plugin: "ACTIVE", backupAdmin: true, failAfter: -1}
	for i := range c.progress {
		c.progress[i].state = "Not Started"
	}
	c.MySQL8Double.mu.Lock()
	c.hook = c.answer
	c.MySQL8Double.mu.Unlock()
	return c
}

// SetPlugin sets the clone plugin's PLUGIN_STATUS; "" means not installed.
func (c *CloneDouble) SetPlugin(status string) { c.mu.Lock(); c.plugin = status; c.mu.Unlock() }

// SetBackupAdmin grants or revokes BACKUP_ADMIN.
func (c *CloneDouble) SetBackupAdmin(ok bool) { c.mu.Lock(); c.backupAdmin = ok; c.mu.Unlock() }

// FailAfter makes the next clones fail with a disk-full error once n bytes
// are written; n < 0 turns it off.
func (c *CloneDouble) FailAfter(n int64) { c.mu.Lock(); c.failAfter = n; c.mu.Unlock() }

// Hold makes the next clone stop after its first file until Release; the
// returned channel is closed once it waits.
func (c *CloneDouble) Hold() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold, c.held = make(chan struct{}), make(chan struct{})
	return c.held
}

// Release lets a held clone go on.
func (c *CloneDouble) Release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold != nil {
		close(c.hold)
		c.hold = nil
	}
}

// State is clone_status's STATE ("" before the first clone).
func (c *CloneDouble) State() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status.state
}

var (
	cloneLocalRe = regexp.MustCompile(`(?is)^\s*CLONE\s+LOCAL\s+DATA\s+DIRECTORY\s*=?\s*'((?:[^'\\]|\\.|'')*)'\s*;?\s*$`)
	killQueryRe  = regexp.MustCompile(`(?i)^\s*KILL\s+QUERY\s+(\d+)\s*;?\s*$`)
)

// answer is the MySQL8Double hook.
func (c *CloneDouble) answer(conn int, query string) (string, *DoubleError, bool) {
	upper := strings.ToUpper(query)
	switch {
	case cloneLocalRe.MatchString(query):
		dir := cloneLocalRe.FindStringSubmatch(query)[1]
		dir = strings.NewReplacer(`\\`, `\`, `\'`, `'`, `''`, `'`).Replace(dir)
		if e := c.clone(conn, dir); e != nil {
			return "", e, true
		}
		return "DO 0", nil, true
	case killQueryRe.MatchString(query):
		id, _ := strconv.ParseUint(killQueryRe.FindStringSubmatch(query)[1], 10, 32)
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.running != nil && c.running.thread == uint32(id) {
			c.running.killed = true
			return "DO 0", nil, true
		}
		return "", nil, false
	case strings.HasPrefix(strings.TrimSpace(upper), "SHOW GRANTS"):
		return c.grants(), nil, true
	case strings.Contains(upper, "INFORMATION_SCHEMA.PLUGINS") && strings.Contains(upper, "'CLONE'"):
		return replaceFold(query, "information_schema.PLUGINS", c.pluginsTable()), nil, true
	case strings.Contains(upper, "INFORMATION_SCHEMA.PLUGINS"):
		// Any other look at the plugins (the agent's probe lists the
		// active ones): the backend's, with the clone plugin's row.
		return replaceFold(query, "information_schema.PLUGINS", c.allPluginsTable()), nil, true
	case strings.Contains(upper, "PERFORMANCE_SCHEMA.CLONE_STATUS"), strings.Contains(upper, "PERFORMANCE_SCHEMA.CLONE_PROGRESS"):
		c.mu.Lock()
		installed := c.plugin == "ACTIVE"
		st, pr := c.statusTable(), c.progressTable()
		c.mu.Unlock()
		if !installed {
			// The tables are the plugin's (pfs_plugin_table): without it
			// they do not exist.
			return "", &DoubleError{Number: 1146, SQLState: "42S02", Message: "Table 'performance_schema.clone_status' doesn't exist"}, true
		}
		q := replaceFold(query, "performance_schema.clone_status", st)
		return replaceFold(q, "performance_schema.clone_progress", pr), nil, true
	}
	return "", nil, false
}

func (c *CloneDouble) grants() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	// MySQL 8.0 prints the static privileges expanded (root's ALL) and the
	// dynamic ones on a line of their own (show-grants.html).
	static := "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, RELOAD, SHUTDOWN, PROCESS, FILE, REFERENCES, INDEX, ALTER, SHOW DATABASES, SUPER, CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, REPLICATION SLAVE, REPLICATION CLIENT, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, CREATE USER, EVENT, TRIGGER, CREATE TABLESPACE, CREATE ROLE, DROP ROLE ON *.* TO `root`@`%` WITH GRANT OPTION"
	dynamic := "GRANT APPLICATION_PASSWORD_ADMIN,AUDIT_ADMIN,BACKUP_ADMIN,BINLOG_ADMIN,BINLOG_ENCRYPTION_ADMIN,CLONE_ADMIN,CONNECTION_ADMIN,ENCRYPTION_KEY_ADMIN,GROUP_REPLICATION_ADMIN,PERSIST_RO_VARIABLES_ADMIN,REPLICATION_APPLIER,REPLICATION_SLAVE_ADMIN,RESOURCE_GROUP_ADMIN,ROLE_ADMIN,SERVICE_CONNECTION_ADMIN,SESSION_VARIABLES_ADMIN,SYSTEM_USER,SYSTEM_VARIABLES_ADMIN,XA_RECOVER_ADMIN ON *.* TO `root`@`%` WITH GRANT OPTION"
	if !c.backupAdmin {
		dynamic = "GRANT REPLICATION_APPLIER,SESSION_VARIABLES_ADMIN ON *.* TO `root`@`%`"
	}
	return "SELECT " + sqlLit(static) + " AS `Grants for root@%` UNION ALL SELECT " + sqlLit(dynamic)
}

func (c *CloneDouble) pluginsTable() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.plugin == "" {
		return "(SELECT 'x' AS PLUGIN_NAME, 'x' AS PLUGIN_STATUS, 'x' AS PLUGIN_LIBRARY FROM DUAL WHERE 0) AS PLUGINS"
	}
	return "(SELECT 'clone' AS PLUGIN_NAME, " + sqlLit(c.plugin) + " AS PLUGIN_STATUS, 'mysql_clone.so' AS PLUGIN_LIBRARY) AS PLUGINS"
}

// allPluginsTable is the backend's information_schema.PLUGINS with the
// clone plugin's row added (when it is installed), as a derived table.
func (c *CloneDouble) allPluginsTable() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := "(SELECT PLUGIN_NAME, PLUGIN_STATUS, PLUGIN_LIBRARY FROM information_schema.PLUGINS"
	if c.plugin != "" {
		t += " UNION ALL SELECT 'clone', " + sqlLit(c.plugin) + ", 'mysql_clone.so'"
	}
	return t + ") AS PLUGINS"
}

// statusTable is clone_status as a derived table; c.mu is held.
func (c *CloneDouble) statusTable() string {
	s := c.status
	row := fmt.Sprintf("SELECT %d AS ID, %d AS PID, %s AS STATE, %s AS BEGIN_TIME, %s AS END_TIME, %s AS SOURCE, %s AS DESTINATION, %d AS ERROR_NO, %s AS ERROR_MESSAGE, %s AS BINLOG_FILE, %d AS BINLOG_POSITION, %s AS GTID_EXECUTED",
		s.id, s.pid, sqlLit(s.state), tsLit(s.begin, 3), tsLit(s.end, 3), sqlLit(s.source), sqlLit(s.dest), s.errNo, sqlLit(s.errMsg), sqlLit(s.binlogFile), s.binlogPos, sqlLit(s.gtid))
	if !c.ran {
		row += " FROM DUAL WHERE 0"
	}
	return "(" + row + ") AS clone_status"
}

// progressTable is clone_progress as a derived table; c.mu is held.
func (c *CloneDouble) progressTable() string {
	var rows []string
	for i, p := range c.progress {
		rows = append(rows, fmt.Sprintf("SELECT %d AS ID, %s AS STAGE, %s AS STATE, %s AS BEGIN_TIME, %s AS END_TIME, %d AS THREADS, %d AS ESTIMATE, %d AS DATA, %d AS NETWORK, %d AS DATA_SPEED, %d AS NETWORK_SPEED",
			c.status.id, sqlLit(cloneStages[i]), sqlLit(p.state), tsLit(p.begin, 6), tsLit(p.end, 6), p.threads, p.estimate, p.data, 0, 0, 0))
	}
	q := strings.Join(rows, " UNION ALL ")
	if !c.ran {
		q = "SELECT * FROM (" + q + ") AS p WHERE 0"
	}
	return "(" + q + ") AS clone_progress"
}

func sqlLit(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func tsLit(t time.Time, digits int) string {
	if t.IsZero() {
		return "CAST(NULL AS DATETIME(" + strconv.Itoa(digits) + "))"
	}
	layout := "2006-01-02 15:04:05." + strings.Repeat("0", digits)
	return "CAST('" + t.UTC().Format(layout) + "' AS DATETIME(" + strconv.Itoa(digits) + "))"
}

// clone runs CLONE LOCAL DATA DIRECTORY on the connection conn.
func (c *CloneDouble) clone(conn int, dir string) *DoubleError {
	c.mu.Lock()
	switch {
	case c.plugin != "ACTIVE":
		c.mu.Unlock()
		return &DoubleError{Number: 1524, SQLState: "HY000", Message: "Plugin 'clone' is not loaded"}
	case !c.backupAdmin:
		c.mu.Unlock()
		return &DoubleError{Number: 1227, SQLState: "42000", Message: "Access denied; you need (at least one of) the BACKUP_ADMIN privilege(s) for this operation"}
	case c.running != nil:
		c.mu.Unlock()
		return &DoubleError{Number: 3634, SQLState: "HY000", Message: "Too many concurrent clone operations. Maximum allowed - 1."}
	}
	c.mu.Unlock()
	datadir, _ := filepath.EvalSymlinks(c.m.DataDir)
	if !filepath.IsAbs(dir) {
		return &DoubleError{Number: 1210, SQLState: "HY000", Message: "Incorrect arguments to CLONE: the data directory path must be absolute"}
	}
	if p, _ := filepath.EvalSymlinks(filepath.Dir(dir)); p == datadir || strings.HasPrefix(p+"/", datadir+"/") {
		return &DoubleError{Number: 3632, SQLState: "HY000", Message: fmt.Sprintf("Path is within the current data directory '%s'", dir)}
	}
	if _, err := os.Lstat(dir); err == nil {
		return &DoubleError{Number: 1007, SQLState: "HY000", Message: fmt.Sprintf("Can't create database '%s'; database exists", dir)}
	}
	if err := os.Mkdir(dir, 0o750); err != nil {
		return &DoubleError{Number: 1, SQLState: "HY000", Message: fmt.Sprintf("Can't create/write to file '%s' (OS errno %v)", dir, err)}
	}

	run := &cloneRun{thread: c.threadOf(conn)}
	now := time.Now()
	c.mu.Lock()
	c.ran, c.running = true, run
	c.status = cloneStatusRow{id: c.status.id + 1, pid: int(run.thread), state: "In Progress", begin: now, source: "LOCAL INSTANCE", dest: dir}
	for i := range c.progress {
		c.progress[i] = cloneStageRow{state: "Not Started"}
	}
	c.progress[0] = cloneStageRow{state: "Completed", begin: now, end: now, threads: 1}
	c.progress[1] = cloneStageRow{state: "In Progress", begin: now, threads: 1}
	c.mu.Unlock()

	e := c.copyLocked(dir, run)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running = nil
	end := time.Now()
	c.status.end = end
	if e != nil {
		c.status.state, c.status.errNo, c.status.errMsg = "Failed", int(e.Number), e.Message
		for i := range c.progress {
			if c.progress[i].state == "In Progress" {
				c.progress[i].state, c.progress[i].end = "Failed", end
			}
		}
		return e
	}
	c.status.state = "Completed"
	// PAGE COPY, REDO COPY and FILE SYNC have nothing left to do in a copy
	// taken under a lock; a local clone has no RESTART or RECOVERY stage
	// (the server on the clone does its recovery when it starts).
	c.progress[1].state, c.progress[1].end = "Completed", end
	for i := 2; i <= 4; i++ {
		c.progress[i] = cloneStageRow{state: "Completed", begin: end, end: end, threads: 1}
	}
	return nil
}

// copyLocked copies the backend's datadir into dir under BACKUP STAGE
// BLOCK_COMMIT, after InnoDB flushed its dirty pages, and records the
// backend's coordinates as the clone's.
func (c *CloneDouble) copyLocked(dir string, run *cloneRun) *DoubleError {
	ctx := context.Background()
	fail := func(err error) *DoubleError {
		return &DoubleError{Number: 1105, SQLState: "HY000", Message: "clone double: " + err.Error()}
	}
	db, err := sql.Open("mysql", c.m.RootDSN)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = db.Close() }()
	lc, err := db.Conn(ctx)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = lc.Close() }()
	for _, st := range []string{"BACKUP STAGE START", "BACKUP STAGE FLUSH", "BACKUP STAGE BLOCK_DDL", "BACKUP STAGE BLOCK_COMMIT"} {
		if _, err := lc.ExecContext(ctx, st); err != nil {
			return fail(fmt.Errorf("%s: %w", st, err))
		}
	}
	defer func() { _, _ = lc.ExecContext(ctx, "BACKUP STAGE END") }()
	// With commits blocked nothing new dirties a page; flushing what is
	// dirty makes the files on disk what the redo log's checkpoint says,
	// so the copy needs no redo beyond it.
	var pct string
	_ = lc.QueryRowContext(ctx, "SELECT @@GLOBAL.innodb_max_dirty_pages_pct").Scan(&pct)
	if _, err := lc.ExecContext(ctx, "SET GLOBAL innodb_max_dirty_pages_pct = 0"); err == nil {
		defer func() { _, _ = lc.ExecContext(ctx, "SET GLOBAL innodb_max_dirty_pages_pct = "+pct) }()
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			var name string
			var dirty int64
			if err := lc.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'").Scan(&name, &dirty); err != nil || dirty == 0 {
				break
			}
		}
	}
	var file, binBase sql.NullString
	var pos uint64
	var gtid string
	rows, err := lc.QueryContext(ctx, "SHOW MASTER STATUS")
	if err != nil {
		return fail(err)
	}
	if rows.Next() {
		cols, _ := rows.Columns()
		vals := make([]any, len(cols))
		vals[0], vals[1] = &file, &pos
		for i := 2; i < len(cols); i++ {
			vals[i] = new(sql.RawBytes)
		}
		if err := rows.Scan(vals...); err != nil {
			_ = rows.Close()
			return fail(err)
		}
	}
	_ = rows.Close()
	if err := lc.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_binlog_pos, @@log_bin_basename").Scan(&gtid, &binBase); err != nil {
		return fail(err)
	}

	src := c.m.DataDir
	var files []string
	var total int64
	binPrefix := ""
	if binBase.Valid {
		binPrefix = filepath.Base(binBase.String) + "."
	}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		base := d.Name()
		if rel == "." {
			return nil
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o750)
		}
		if !d.Type().IsRegular() || (binPrefix != "" && strings.HasPrefix(base, binPrefix)) || strings.Contains(base, "relay-bin") ||
			strings.HasSuffix(base, ".pid") || base == "ibtmp1" || strings.HasPrefix(base, "#sql") || strings.HasSuffix(base, ".err") {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		files = append(files, rel)
		total += fi.Size()
		return nil
	})
	if err != nil {
		return fail(err)
	}
	c.mu.Lock()
	c.progress[1].estimate = total
	c.status.binlogFile, c.status.binlogPos, c.status.gtid = file.String, pos, gtid
	failAfter, hold, held := c.failAfter, c.hold, c.held
	c.mu.Unlock()

	var written int64
	buf := make([]byte, 64<<10)
	for i, rel := range files {
		if i == 1 && hold != nil {
			close(held)
			if e := c.waitHold(hold, run); e != nil {
				return e
			}
		}
		in, err := os.Open(filepath.Join(src, rel))
		if err != nil {
			return fail(err)
		}
		out, err := os.OpenFile(filepath.Join(dir, rel), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
		if err != nil {
			_ = in.Close()
			return fail(err)
		}
		for {
			c.mu.Lock()
			killed := run.killed
			c.mu.Unlock()
			if killed {
				_ = in.Close()
				_ = out.Close()
				return &DoubleError{Number: 1317, SQLState: "70100", Message: "Query execution was interrupted"}
			}
			n, rerr := in.Read(buf)
			if n > 0 {
				if failAfter >= 0 && written+int64(n) > failAfter {
					_ = in.Close()
					_ = out.Close()
					return &DoubleError{Number: 3, SQLState: "HY000", Message: fmt.Sprintf("Error writing file '%s' (OS errno 28 - No space left on device)", filepath.Join(dir, rel))}
				}
				if _, err := out.Write(buf[:n]); err != nil {
					_ = in.Close()
					_ = out.Close()
					return fail(err)
				}
				written += int64(n)
				c.mu.Lock()
				c.progress[1].data = written
				c.mu.Unlock()
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				_ = in.Close()
				_ = out.Close()
				return fail(rerr)
			}
		}
		_ = in.Close()
		if err := out.Sync(); err != nil {
			_ = out.Close()
			return fail(err)
		}
		if err := out.Close(); err != nil {
			return fail(err)
		}
	}
	return nil
}

// waitHold waits for Release, or for a KILL QUERY of the held clone.
func (c *CloneDouble) waitHold(hold <-chan struct{}, run *cloneRun) *DoubleError {
	for {
		select {
		case <-hold:
			return nil
		case <-time.After(10 * time.Millisecond):
		}
		c.mu.Lock()
		killed := run.killed
		c.mu.Unlock()
		if killed {
			return &DoubleError{Number: 1317, SQLState: "70100", Message: "Query execution was interrupted"}
		}
	}
}

// MySQLdDouble writes a script that says it is MySQL 8.0.36's mysqld when
// asked for --version and runs mariadbd otherwise: the restore of a
// backup taken from CloneDouble (whose manifest says MySQL 8.0, whose
// files are MariaDB's) checks the server binary's flavor and then starts
// it on the files. It is a double too.
func MySQLdDouble(t testing.TB) string {
	t.Helper()
	bin := RequireBinary(t, "mariadbd", MariaDBInstallHint)
	p := filepath.Join(t.TempDir(), "mysqld")
	script := "#!/bin/sh\n# Test double: a MySQL 8.0 mysqld that is really mariadbd (no MySQL on this machine).\n" +
		"for a in \"$@\"; do [ \"$a\" = --version ] && { echo \"" + p + "  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)\"; exit 0; }; done\n" +
		"exec " + bin + " \"$@\"\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}
