package binlog

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

// ErrServer marks a server the streamer cannot use as it is configured (no
// binlog, missing privileges, a server id clash): retrying does not help, the
// message says what to change.
var ErrServer = errors.New("server not usable for binlog streaming")

// server is what the streamer learned about one server before streaming it.
type server struct {
	dsn      *mysqlx.DSN
	flavor   string // "mariadb" or "mysql"
	version  string
	serverID uint32
	uuid     string // MySQL only
	readOnly bool
	replica  bool // replicates from another server
	format   string
	binlogs  []string // SHOW BINARY LOGS, oldest first
	gtidMode bool     // MySQL gtid_mode=ON; MariaDB always has GTIDs
	// tls is the replication connection's TLS (nil: plain text): the
	// DSN's, or nil under ssl-mode=preferred when the server offers none.
	tls *tls.Config
}

func openDB(dsn *mysqlx.DSN) (*sql.DB, error) {
	db, err := dsn.Open(func(c *mysql.Config) {
		c.ReadTimeout = 30 * time.Second
		c.WriteTimeout = 30 * time.Second
	})
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// probe connects to a server and reads what the streamer needs. An error
// wrapping ErrServer is a configuration problem; any other is reachability.
func probe(ctx context.Context, dsn *mysqlx.DSN, ownID uint32, reportHost string) (*server, error) {
	db, err := openDB(dsn)
	if err != nil {
		return nil, err
	}
	defer func() { _ = db.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	det, err := mysqlx.Detect(ctx, db)
	if err != nil {
		if terr := mysqlx.TLSVerifyError(err, dsn); terr != nil {
			return nil, fmt.Errorf("%w: %w", ErrServer, terr)
		}
		return nil, fmt.Errorf("server %s: %w", dsn, err)
	}
	s := &server{dsn: dsn, flavor: "mysql", version: det.Version}
	if det.IsMariaDB() {
		s.flavor = "mariadb"
	}
	var logBin int
	if err := db.QueryRowContext(ctx, "SELECT @@log_bin, @@server_id, @@read_only, @@binlog_format").Scan(&logBin, &s.serverID, &s.readOnly, &s.format); err != nil {
		return nil, fmt.Errorf("server %s: reading variables: %w", dsn, err)
	}
	if logBin == 0 {
		return nil, fmt.Errorf("%w: %s has binary logging off (log_bin=OFF): start it with --log-bin (log_bin = ON or a base name under [mysqld]) and a unique --server-id, then restart", ErrServer, dsn)
	}
	if err := checkGrants(ctx, db, dsn); err != nil {
		return nil, err
	}
	if s.tls, err = replicationTLS(ctx, db, dsn); err != nil {
		return nil, err
	}
	if s.serverID == ownID {
		return nil, fmt.Errorf("%w: %s has server_id %d, the id this streamer registers with: give the streamer another --server-id", ErrServer, dsn, ownID)
	}
	if s.flavor == "mysql" {
		var mode string
		if err := db.QueryRowContext(ctx, "SELECT @@server_uuid, @@gtid_mode").Scan(&s.uuid, &mode); err == nil {
			s.gtidMode = strings.EqualFold(mode, "ON")
		}
	}
	if err := checkReplicaID(ctx, db, dsn, ownID, reportHost); err != nil {
		return nil, err
	}
	s.binlogs, err = binaryLogs(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("server %s: %w", dsn, err)
	}
	rows, err := db.QueryContext(ctx, "SHOW SLAVE STATUS")
	if err == nil {
		s.replica = rows.Next()
		_ = rows.Close()
	}
	return s, nil
}

// replicationTLS is the TLS the replication connection uses: the DSN's,
// except that under ssl-mode=preferred the SQL connection tells whether the
// server offered TLS (go-mysql's client has no plain-text fallback).
func replicationTLS(ctx context.Context, db *sql.DB, dsn *mysqlx.DSN) (*tls.Config, error) {
	cfg, fallback := dsn.TLS()
	if cfg == nil || !fallback {
		return cfg, nil
	}
	var name, cipher string
	if err := db.QueryRowContext(ctx, "SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&name, &cipher); err != nil {
		return nil, fmt.Errorf("server %s: reading Ssl_cipher: %w", dsn, err)
	}
	if cipher == "" {
		return nil, nil
	}
	return cfg, nil
}

func binaryLogs(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx, "SHOW BINARY LOGS")
	if err != nil {
		return nil, fmt.Errorf("SHOW BINARY LOGS: %w", err)
	}
	defer func() { _ = rows.Close() }()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		var name string
		vals[0] = &name
		for i := 1; i < len(vals); i++ {
			vals[i] = new(sql.RawBytes)
		}
		if err := rows.Scan(vals...); err != nil {
			return nil, err
		}
		out = append(out, name)
	}
	return out, rows.Err()
}

// checkGrants names the replication privileges the user lacks.
func checkGrants(ctx context.Context, db *sql.DB, dsn *mysqlx.DSN) error {
	rows, err := db.QueryContext(ctx, "SHOW GRANTS")
	if err != nil {
		return fmt.Errorf("server %s: SHOW GRANTS: %w", dsn, err)
	}
	defer func() { _ = rows.Close() }()
	var all strings.Builder
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			return err
		}
		if strings.Contains(g, " ON *.* ") {
			all.WriteString(strings.ToUpper(g))
			all.WriteByte('\n')
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	g := all.String()
	if strings.Contains(g, "ALL PRIVILEGES") {
		return nil
	}
	var missing []string
	if !strings.Contains(g, "REPLICATION SLAVE") && !strings.Contains(g, "REPLICATION REPLICA") {
		missing = append(missing, "REPLICATION SLAVE (to read the binlog as a replica)")
	}
	// MariaDB 10.5 split REPLICATION CLIENT into BINLOG MONITOR and others;
	// SHOW GRANTS prints the new names.
	if !strings.Contains(g, "REPLICATION CLIENT") && !strings.Contains(g, "BINLOG MONITOR") && !strings.Contains(g, "SUPER") {
		missing = append(missing, "REPLICATION CLIENT (BINLOG MONITOR on MariaDB ≥ 10.5; for SHOW BINARY LOGS)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: user %q on %s lacks %s: GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO the streamer's user",
			ErrServer, dsn.User(), dsn, strings.Join(missing, " and "))
	}
	return nil
}

// checkReplicaID refuses a server id another replica of this server already
// uses: the server would disconnect one of the two over and over. A
// registration under our own report host is an earlier run of this streamer
// the server has not noticed gone yet; the server replaces it.
func checkReplicaID(ctx context.Context, db *sql.DB, dsn *mysqlx.DSN, ownID uint32, reportHost string) error {
	rows, err := db.QueryContext(ctx, "SHOW SLAVE HOSTS")
	if err != nil {
		return nil // not allowed to look: the server's own check remains
	}
	defer func() { _ = rows.Close() }()
	cols, _ := rows.Columns()
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil
		}
		var id uint64
		var host string
		for i, c := range cols {
			switch strings.ToLower(c) {
			case "server_id":
				id, _ = strconv.ParseUint(vals[i].String, 10, 32)
			case "host":
				host = vals[i].String
			}
		}
		if uint32(id) == ownID && host != reportHost {
			return fmt.Errorf("%w: server id %d is already used by another replica of %s (host %q in SHOW SLAVE HOSTS): give the streamer a free --server-id",
				ErrServer, ownID, dsn, host)
		}
	}
	return nil
}

// deriveServerID picks the streamer's replica server id from the instance
// name: stable across restarts (so the server replaces a dead session rather
// than holding two), in the upper half of the id space that hand-numbered
// servers rarely use.
func deriveServerID(instance string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte("tidemark-binlog/" + instance))
	return h.Sum32()&0x3fffffff | 0x40000000
}
