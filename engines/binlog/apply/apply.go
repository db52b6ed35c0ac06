package apply

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/engines/binlog/gtid"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

// Result is what Apply applied.
type Result struct {
	Method       string // the method that ran
	Transactions int
	Bytes        int64
	First, Last  Point
	EndGTID      string // the target's data is at this GTID position
	Duration     time.Duration
	Warnings     []string
	// TLS is the replication connection's TLS; nil when it ran in plain
	// text or no replication connection was made (the sql method).
	TLS *TLSUsed
}

// ioGrace is how long the target's receiver may fail to connect to the
// source before the apply gives up (a variable for tests).
var ioGrace = 20 * time.Second

// pitrConnection is the replication connection Apply creates on the target
// and removes afterwards.
const pitrConnection = "tidemark_pitr"

// errCannotReplicate: the target refused to replicate from us (privilege,
// or not MariaDB); MethodAuto falls back to the sql method.
var errCannotReplicate = errors.New("the target cannot replicate from the Tidemark replication source")

// Apply rolls the target forward: it plans (Plan; a refusal writes
// nothing), then applies the planned transactions by Params.Method and,
// with ThenReplicateFrom, starts replicating from a live source at the
// restored GTID position. Cancelling ctx stops the apply and removes the
// replication connection; what was applied stays applied.
//
// The replication method (MariaDB targets) serves the planned events on a
// loopback port as a primary would and points a named replication
// connection, tidemark_pitr, at it (file/position mode, the files renamed
// tidemark-pitr.NNNNNN by their index); the server's own applier applies
// rows directly, in parallel with Parallel > 1. The connection is TLS when
// the target's DSN uses TLS or Params.TLS asks (see SourceTLS); a replica
// that cannot connect over it ends the apply at once with what the target
// said. Apply waits until the
// applier has executed the last planned event, then removes the
// connection and puts back what it changed: slave_parallel_threads,
// gtid_strict_mode (off while the target binlogs applied transactions
// whose GTIDs may be lower than its own), server_id (changed when the
// files hold the target's own id, whose events a replica would drop).
//
// The sql method pipes one synthetic binlog (the planned events of every
// file) through one mariadb-binlog into one mariadb client: one session,
// so temporary tables survive rotations, but one session also holds every
// source connection's temporary tables, so two source sessions with
// same-named temporary tables at once collide (as with any
// mysqlbinlog | mysql). It is several times slower.
//
// MySQL targets (MySQL's binlog files, Params.StartGTID a MySQL GTID set)
// replicate from the same source, which then presents itself as MySQL
// 8.0 (caching_sha2_password, the receiver's queries of rpl_replica.cc, a
// server UUID of its own), through a channel: CHANGE REPLICATION SOURCE
// TO ... SOURCE_AUTO_POSITION=0 FOR CHANNEL 'tidemark_pitr', START, SHOW,
// STOP and RESET REPLICA (CHANGE MASTER and SLAVE before 8.0.22/23; 5.7
// before 5.7.6 has no channels and gets the sql method). The dump is by
// file and position from the plan's cut, so no transaction is sent twice;
// the replica's skipping of GTIDs it has executed is only a guard. With
// Parallel > 1 replica_parallel_workers is set with
// replica_preserve_commit_order ON. Apply waits for the applier to pass
// the last planned event, then checks that gtid_executed holds every
// planned GTID, and puts back what it changed (server_id, the workers,
// commit order, replica_exec_mode). A target whose gtid_mode cannot take
// the files' transactions (OFF with GTIDs, ON with anonymous ones), or
// MariaDB files onto MySQL and the other way, is refused before anything
// runs. The sql method on MySQL needs MySQL's mysqlbinlog (MariaDB's
// cannot decode MySQL 8.0's events) and says so. ThenReplicateFrom uses
// SOURCE_AUTO_POSITION=1 on the default channel, after adding to
// gtid_purged what the restored set holds and gtid_executed lacks (a base
// loaded without its GTIDs), so the source does not send it again. Tested
// against doubles of MySQL only (testenv's MySQLSourceDouble and
// MySQLReplicaDouble): no MySQL server has run this path.
//
// TLS to a MySQL replica is tested with the double's Go TLS client, not
// MySQL's TLS library.
//
// Not supported: encrypted binlog files, MySQL transaction payload events
// (binlog_transaction_compression), tagged GTIDs (MySQL 8.3+).
func Apply(ctx context.Context, p Params) (*Result, error) {
	began := time.Now()
	switch p.Method {
	case MethodAuto, MethodReplication, MethodSQL:
	default:
		return nil, fmt.Errorf("roll forward: unknown method %q (use %q or %q)", p.Method, MethodReplication, MethodSQL)
	}
	if err := validateTLS(p); err != nil {
		return nil, err
	}
	var src *mysqlx.DSN
	if p.ThenReplicateFrom != "" {
		var err error
		if src, err = mysqlx.ParseDSN(p.ThenReplicateFrom); err != nil {
			return nil, fmt.Errorf("roll forward: --then-replicate-from: %w", err)
		}
		if !strings.Contains(src.Addr(), ":") || strings.HasPrefix(src.Addr(), "/") {
			return nil, fmt.Errorf("roll forward: --then-replicate-from %s: a replica connects over TCP; give tcp(host:port)", src)
		}
	}
	progress := func(pr Progress) {
		if p.Progress != nil {
			p.Progress(pr)
		}
	}
	plan := p.Planned
	if plan == nil {
		progress(Progress{Phase: "plan"})
		var err error
		if plan, err = Plan(ctx, p); err != nil {
			return nil, err
		}
	}
	dsn, err := mysqlx.ParseDSN(p.DSN)
	if err != nil {
		return nil, fmt.Errorf("roll forward: target: %w", err)
	}
	db, err := dsn.Open(nil)
	if err != nil {
		return nil, fmt.Errorf("roll forward: target: %w", err)
	}
	defer func() { _ = db.Close() }()
	db.SetMaxOpenConns(2)
	t, err := probeTarget(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("roll forward: target %s: %w", dsn, err)
	}
	res := &Result{Transactions: plan.Transactions, Bytes: plan.Bytes, First: plan.First, Last: plan.Last, EndGTID: plan.EndGTID, Warnings: plan.Warnings}
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	if plan.Transactions > 0 {
		if err := t.canApply(plan); err != nil {
			return nil, fmt.Errorf("roll forward to %s: target %s: %w", p.Stop, dsn, err)
		}
		method := p.Method
		if p.NoBinlog && t.logBin && t.logSlaveUpdates && method != MethodSQL {
			// Its applier would write every transaction to its binlog.
			if method == MethodReplication {
				return nil, fmt.Errorf("roll forward: the target binlogs what it replicates (%s=ON), so the replication method cannot keep the restore out of its binlog as --no-binlog asks: use the sql method, or drop --no-binlog", t.names.logUpdates)
			}
			method = MethodSQL
			res.Warnings = append(res.Warnings, fmt.Sprintf("the target binlogs what it replicates (%s=ON): for --no-binlog applying through %s --disable-log-bin | %s instead, which is several times slower", t.names.logUpdates, t.binlogProgram(), t.clientProgram()))
		}
		if method != MethodSQL {
			method = MethodReplication
			err = applyReplication(ctx, db, t, dsn, p, plan, res, log, progress)
			if errors.Is(err, errCannotReplicate) && p.Method == MethodAuto {
				res.Warnings = append(res.Warnings, fmt.Sprintf("%v; applying through %s | %s instead, which is several times slower", err, t.binlogProgram(), t.clientProgram()))
				method = MethodSQL
			} else if err != nil {
				return nil, fmt.Errorf("roll forward to %s: %w", p.Stop, err)
			}
		}
		if method == MethodSQL {
			if err := applySQL(ctx, db, t, dsn, p, plan, res, progress); err != nil {
				return nil, fmt.Errorf("roll forward to %s (sql method): %w", p.Stop, err)
			}
		}
		res.Method = method
	}
	if src != nil {
		warn, err := replicateFrom(ctx, db, t, src, plan)
		res.Warnings = append(res.Warnings, warn...)
		if err != nil {
			return res, fmt.Errorf("roll forward: applied up to %s, but replicating from %s failed: %w", plan.EndGTID, src, err)
		}
	}
	res.Duration = time.Since(began)
	progress(Progress{Phase: "done", Transactions: plan.Transactions, Applied: plan.Transactions, Bytes: plan.Bytes})
	return res, nil
}

// target is what Apply needs to know of the target server.
type target struct {
	version         string
	mariadb         bool
	mysql           *mysqlTarget // nil for MariaDB
	names           varNames
	serverID        uint32
	logBin          bool
	logSlaveUpdates bool
	haveSSL         string // @@have_ssl: YES, DISABLED (built with TLS, serves none), NO
	strict          bool
	parallel        int
	idempotent      bool     // slave_exec_mode is not STRICT
	inexact         []string // settings that make the applier skip events or errors
}

func probeTarget(ctx context.Context, db *sql.DB) (*target, error) {
	t := &target{names: mariadbNames}
	var comment string
	if err := db.QueryRowContext(ctx, "SELECT @@version, @@version_comment").Scan(&t.version, &comment); err != nil {
		return nil, mysqlx.Translate("reading the server's version", err)
	}
	t.mariadb = strings.Contains(strings.ToLower(t.version+" "+comment), "mariadb")
	if !t.mariadb {
		return probeMySQL(ctx, db, t)
	}
	if err := db.QueryRowContext(ctx, "SELECT @@server_id, @@log_bin, @@have_ssl").Scan(&t.serverID, &t.logBin, &t.haveSSL); err != nil {
		return nil, mysqlx.Translate("reading the server's settings", err)
	}
	if t.mariadb {
		var skip, execMode string
		var filters [6]string
		if err := db.QueryRowContext(ctx, `SELECT @@log_slave_updates, @@gtid_strict_mode, @@slave_parallel_threads, @@slave_skip_errors, @@slave_exec_mode,
			@@replicate_do_db, @@replicate_ignore_db, @@replicate_do_table, @@replicate_ignore_table, @@replicate_wild_do_table, @@replicate_wild_ignore_table`).Scan(
			&t.logSlaveUpdates, &t.strict, &t.parallel, &skip, &execMode, &filters[0], &filters[1], &filters[2], &filters[3], &filters[4], &filters[5]); err != nil {
			return nil, mysqlx.Translate("reading replication settings", err)
		}
		t.idempotent = !strings.EqualFold(execMode, "STRICT")
		// What would make the applier skip events or errors silently.
		if skip != "" && !strings.EqualFold(skip, "OFF") {
			t.inexact = append(t.inexact, "slave_skip_errors="+skip)
		}
		for i, name := range []string{"replicate_do_db", "replicate_ignore_db", "replicate_do_table", "replicate_ignore_table", "replicate_wild_do_table", "replicate_wild_ignore_table"} {
			if filters[i] != "" {
				t.inexact = append(t.inexact, name+"="+filters[i])
			}
		}
	}
	return t, nil
}

// quote makes a SQL string literal.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\x00", `\0`).Replace(s) + "'"
}

// globals remembers global variables changed for the apply and puts them back.
type globals struct {
	conn    *sql.Conn
	restore []string
}

func (g *globals) set(ctx context.Context, name, old, value string) error {
	if _, err := g.conn.ExecContext(ctx, "SET GLOBAL "+name+" = "+value); err != nil {
		return fmt.Errorf("SET GLOBAL %s = %s: %w", name, value, err)
	}
	g.restore = append(g.restore, "SET GLOBAL "+name+" = "+old)
	return nil
}

func (g *globals) putBack(ctx context.Context) error {
	var errs []error
	for i := len(g.restore) - 1; i >= 0; i-- {
		if _, err := g.conn.ExecContext(ctx, g.restore[i]); err != nil {
			errs = append(errs, fmt.Errorf("putting back %s: %w", g.restore[i], err))
		}
	}
	g.restore = nil
	return errors.Join(errs...)
}

// relaxStrict turns gtid_strict_mode off while the applied transactions are
// written to the target's binlog: the target's binlog may hold GTIDs of its
// own in the same domain with higher sequence numbers (a base restored
// through it), and strict mode refuses to binlog a lower one after them.
func relaxStrict(ctx context.Context, g *globals, t *target, binlogs bool, res *Result) error {
	if !t.strict || !binlogs {
		return nil
	}
	if err := g.set(ctx, "gtid_strict_mode", "1", "0"); err != nil {
		return err
	}
	res.Warnings = append(res.Warnings, "gtid_strict_mode was turned off during the apply (and back on after): the target binlogs the applied transactions, whose GTIDs may be lower than ones its binlog already holds")
	return nil
}

// applyReplication serves the files as a replication source and lets the
// target's replication applier apply them.
func applyReplication(ctx context.Context, db *sql.DB, t *target, dsn *mysqlx.DSN, p Params, plan *PlanResult, res *Result, log *slog.Logger, progress func(Progress)) (err error) {
	if t.mysql != nil && !t.mysql.atLeast(5, 7, 6) {
		return fmt.Errorf("%w: MySQL %s has no replication channels (5.7.6 and later have)", errCannotReplicate, t.version)
	}
	if len(t.inexact) > 0 {
		return fmt.Errorf("%w: its replica settings would skip events or errors silently (%s; startup options)", errCannotReplicate, strings.Join(t.inexact, ", "))
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return mysqlx.Translate("connecting to the target", err)
	}
	defer func() { _ = conn.Close() }()
	cleanupCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	}

	rs := t.stmts(pitrConnection)
	// A connection left by a crashed earlier apply goes first.
	_, _ = conn.ExecContext(ctx, rs.stop)
	_, _ = conn.ExecContext(ctx, rs.reset)

	// The source's server id must differ from the target's, and the
	// target's from every applied event's: a replica drops events that
	// carry its own server id.
	used := map[uint32]bool{t.serverID: true}
	for _, id := range plan.ServerIDs {
		used[id] = true
	}
	free := func() uint32 {
		for id := uint32(4294967294); ; id-- {
			if !used[id] {
				used[id] = true
				return id
			}
		}
	}
	g := &globals{conn: conn}
	defer func() {
		cctx, cancel := cleanupCtx()
		defer cancel()
		if perr := g.putBack(cctx); perr != nil {
			err = errors.Join(err, perr)
		}
	}()
	if slices.Contains(plan.ServerIDs, t.serverID) {
		if err := g.set(ctx, "server_id", strconv.FormatUint(uint64(t.serverID), 10), strconv.FormatUint(uint64(free()), 10)); err != nil {
			return fmt.Errorf("%w: %w", errCannotReplicate, mysqlx.Translate("changing the server id", err))
		}
		res.Warnings = append(res.Warnings, fmt.Sprintf("the files hold transactions of server id %d, the target's own: its server_id was changed during the apply (and put back) so that its replica thread applies them", t.serverID))
	}
	host := "127.0.0.1"
	addr := p.ServeAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	} else if h, _, err := net.SplitHostPort(addr); err == nil && h != "" && !net.ParseIP(h).IsUnspecified() {
		host = h
	} else if err != nil {
		return fmt.Errorf("serve address %q: %w", addr, err)
	} else {
		return fmt.Errorf("serve address %q: name the address the target connects to, not a wildcard", addr)
	}
	var st *sourceTLS
	if wantTLS(p, dsn) {
		if strings.EqualFold(t.haveSSL, "NO") {
			return fmt.Errorf("%w: the replication source is to speak TLS, but the target has no TLS support (have_ssl=NO), so its replica could not connect; turn serve TLS off (on a trusted network only) or use a target built with TLS", errCannotReplicate)
		}
		if st, err = newSourceTLS(p.TLS, host); err != nil {
			return err
		}
		defer st.close()
		switch {
		case !st.verify && st.ephemeral:
			res.Warnings = append(res.Warnings, fmt.Sprintf("the replication connection is encrypted, but the target does not verify the source's certificate: it is ephemeral, and with the serve address %s not on loopback the target is taken to be on another host, which cannot read a CA file written here; to verify, give a certificate and key and the path of their CA on the target's host", addr))
		case !st.verify:
			res.Warnings = append(res.Warnings, "the replication connection is encrypted, but the target does not verify the source's certificate: give the path of its CA on the target's host to verify")
		}
	}
	var my *mysqlSource
	if t.mysql != nil {
		my = &mysqlSource{uuid: t.mysql.freeUUID(plan), nativeAuth: !t.mysql.atLeast(8, 0, 0)}
	}
	s, err := newSource(ctx, addr, p.Files, plan, free(), st, my, log)
	if err != nil {
		return err
	}
	s.host = host
	s.statusQ = rs.status
	defer func() {
		if serr := s.close(); serr != nil && err == nil {
			err = serr
		}
	}()

	tlsOpts := st.changeMasterTLS()
	if testHookPlainReplica {
		tlsOpts = "MASTER_SSL=0"
	}
	change := fmt.Sprintf("CHANGE MASTER %s TO MASTER_HOST=%s, MASTER_PORT=%d, MASTER_USER=%s, MASTER_PASSWORD=%s, MASTER_LOG_FILE=%s, MASTER_LOG_POS=4, MASTER_USE_GTID=no, MASTER_HEARTBEAT_PERIOD=1, MASTER_CONNECT_RETRY=1, %s",
		quote(pitrConnection), quote(host), s.addr().Port, quote(s.user), quote(s.password), quote(sourceFileName(plan.firstFile)), tlsOpts)
	if t.mysql != nil {
		change = t.mysql.change(fmt.Sprintf("MASTER_HOST=%s, MASTER_PORT=%d, MASTER_USER=%s, MASTER_PASSWORD=%s, MASTER_LOG_FILE=%s, MASTER_LOG_POS=4, MASTER_AUTO_POSITION=0, MASTER_HEARTBEAT_PERIOD=1, MASTER_CONNECT_RETRY=1, %s",
			quote(host), s.addr().Port, quote(s.user), quote(s.password), quote(sourceFileName(plan.firstFile)), tlsOpts), pitrConnection)
	}
	if _, err := conn.ExecContext(ctx, change); err != nil {
		if n := mysqlx.ServerErrorNumber(err); n == 1227 || n == 1044 || n == 1045 {
			return fmt.Errorf("%w: %s refused: %w", errCannotReplicate, rs.changeName, err)
		}
		return mysqlx.Translate(rs.changeName, err)
	}
	defer func() {
		cctx, cancel := cleanupCtx()
		defer cancel()
		_, serr := conn.ExecContext(cctx, rs.stop)
		_, rerr := conn.ExecContext(cctx, rs.reset)
		if cerr := errors.Join(serr, rerr); cerr != nil {
			err = errors.Join(err, fmt.Errorf("removing the replication connection %s from the target: %w", pitrConnection, cerr))
		}
	}()
	if err := relaxStrict(ctx, g, t, t.logBin && t.logSlaveUpdates, res); err != nil {
		return err
	}
	if t.idempotent { // IDEMPOTENT would pass over missing and duplicate rows
		if err := g.set(ctx, t.names.execMode, "'IDEMPOTENT'", "'STRICT'"); err != nil {
			return err
		}
	}
	if p.Parallel > 1 && p.Parallel != t.parallel {
		if err := g.set(ctx, t.names.parallel, strconv.Itoa(t.parallel), strconv.Itoa(p.Parallel)); err != nil {
			return fmt.Errorf("%w (is another replication connection running on the target? stop it, or apply with Parallel 0)", err)
		}
	}
	if p.Parallel > 1 && t.mysql != nil && !t.mysql.preserveOrder {
		// Workers commit in the files' order, so that a stop or a failure
		// leaves the target at a prefix of the plan.
		if err := g.set(ctx, t.names.preserveOrder, "OFF", "ON"); err != nil {
			return fmt.Errorf("%w (MySQL before 8.0.19 needs %s=LOGICAL_CLOCK and the binary log for it; apply with Parallel 0 instead)", err, strings.Replace(t.names.parallel, "workers", "type", 1))
		}
	}
	if _, err := conn.ExecContext(ctx, rs.start); err != nil {
		return mysqlx.Translate(rs.startName, err)
	}
	if st != nil {
		res.TLS = &TLSUsed{Ephemeral: st.ephemeral}
		defer func() {
			res.TLS.Sessions = s.tlsSessions.Load()
			if v := s.tlsVersion.Load(); v != 0 {
				res.TLS.Version = tlsVersionName(uint16(v))
			}
		}()
	}
	if err := waitApplied(ctx, conn, s, plan, res, progress); err != nil {
		return err
	}
	if t.mysql != nil && plan.mysqlGTIDs {
		return checkExecuted(ctx, conn, plan)
	}
	return nil
}

// checkExecuted makes sure a MySQL target executed every planned GTID: the
// applier reached the last planned position, but a transaction it skipped
// for a GTID it already had (a guard, never the plan) or one it lost would
// show here.
func checkExecuted(ctx context.Context, conn *sql.Conn, plan *PlanResult) error {
	executed, err := gtidExecuted(ctx, conn)
	if err != nil {
		return err
	}
	have, err := gtid.ParseMySQLSet(executed)
	if err != nil {
		return fmt.Errorf("the target's gtid_executed: %w", err)
	}
	if missing := plan.mysqlApplied.Sub(have); !missing.IsEmpty() {
		return fmt.Errorf("the target's applier passed the last planned transaction, but its gtid_executed (%s) lacks %s", executed, missing)
	}
	return nil
}

// waitApplied polls the replication connection until the last planned
// transaction is applied, the applier fails, or ctx ends.
func waitApplied(ctx context.Context, conn *sql.Conn, s *source, plan *PlanResult, res *Result, progress func(Progress)) error {
	lastName := sourceFileName(plan.lastFile)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	applied := 0
	var ioFailing time.Time
	for {
		progress(Progress{Phase: "apply", Transactions: plan.Transactions, Applied: applied, BytesSent: s.sent.Load(), Bytes: plan.Bytes})
		if err := ctx.Err(); err != nil {
			return err
		}
		st, err := slaveStatus(ctx, conn, s.statusQ)
		if err != nil {
			return err
		}
		if st["Last_SQL_Errno"] != "0" && st["Last_SQL_Errno"] != "" {
			return fmt.Errorf("the target's replication applier stopped%s: %s", plan.failedAt(ctx, st["Last_SQL_Error"], s.files), plan.sourceNames(st["Last_SQL_Error"], s.files))
		}
		switch {
		case st["Slave_IO_Running"] == "No" && st["Last_IO_Errno"] != "0":
			return fmt.Errorf("the target's replication receiver stopped: %s", st["Last_IO_Error"])
		case st["Slave_IO_Running"] != "Yes" && st["Last_IO_Errno"] != "0" && st["Last_IO_Errno"] != "":
			// It retries for ever (master_retry_count); a source it cannot
			// reach or log into is not going to become reachable.
			if ioFailing.IsZero() {
				ioFailing = time.Now()
			} else if time.Since(ioFailing) > ioGrace {
				return fmt.Errorf("the target cannot connect to the replication source at %s for %v: %s (with the target on another host, set the serve address to one it can reach)", s.addr(), ioGrace, st["Last_IO_Error"])
			}
		default:
			ioFailing = time.Time{}
		}
		if err := s.failed(); err != nil {
			return fmt.Errorf("serving the binlog files: %w", err)
		}
		if res.TLS != nil && st["Master_SSL_Allowed"] == "Yes" {
			// What the target says it does, not what it was told.
			res.TLS.Verified = st["Master_SSL_Verify_Server_Cert"] == "Yes" && st["Master_SSL_CA_File"] != ""
			res.TLS.CAFile = st["Master_SSL_CA_File"]
		}
		if err := tlsFailure(ctx, conn, s, st); err != nil {
			return err
		}
		pos, _ := strconv.ParseUint(st["Exec_Master_Log_Pos"], 10, 64)
		if st["Relay_Master_Log_File"] == lastName && pos >= plan.lastEnd {
			return nil
		}
		if n, err := strconv.Atoi(strings.TrimPrefix(st["Relay_Master_Log_File"], sourceFilePrefix)); err == nil {
			applied = plan.appliedUpTo(n-1, pos)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// tlsFailure returns the error that ends an apply whose target cannot
// connect to the source over TLS: a login the source refused (no TLS, a
// failed handshake), or the target's own TLS error (a certificate that
// fails its checks, a CA file it cannot read). Neither mends on a retry,
// and the receiver would retry for ever. A refusal alone may be another
// client's: it counts only while the target's receiver is failing too.
func tlsFailure(ctx context.Context, conn *sql.Conn, s *source, st map[string]string) error {
	if s.tls == nil || st["Slave_IO_Running"] == "Yes" {
		return nil
	}
	refused := s.refusal()
	said := st["Last_IO_Error"]
	if st["Last_IO_Errno"] == "0" || st["Last_IO_Errno"] == "" {
		if refused == nil {
			return nil
		}
		if said = ioErrorSoon(ctx, conn, s.statusQ, st); said == "" {
			return nil
		}
	}
	if refused == nil && !strings.Contains(said, "SSL") {
		return nil // not TLS: the caller's ioGrace handles it
	}
	msg := "the target's replication receiver cannot connect to the source over TLS"
	if refused != nil {
		msg += ": " + refused.Error()
	}
	msg += "; the target says: " + said
	if s.tls.verify && !errors.Is(refused, errPlainReplica) {
		msg += fmt.Sprintf(" (the target checks that the source's certificate chains to MASTER_SSL_CA %s, a file its server must be able to read on its own host, and that it names %s)", s.tls.caFile, s.host)
		if s.tls.ephemeral {
			msg += "; that file is in the temporary directory: if the server cannot see it (a TMPDIR under /home with systemd's ProtectHome, PrivateTmp, a container), set TMPDIR to a directory it can read"
		}
	}
	return errors.New(msg)
}

// ioErrorSoon returns the receiver's last error, waiting up to a few
// seconds for the target to record it (the source sees a refusal before
// the target has written it down); "" when there is none.
func ioErrorSoon(ctx context.Context, conn *sql.Conn, q string, st map[string]string) string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if st["Last_IO_Errno"] != "0" && st["Last_IO_Errno"] != "" {
			return st["Last_IO_Error"]
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return ""
		}
		time.Sleep(200 * time.Millisecond)
		var err error
		if st, err = slaveStatus(ctx, conn, q); err != nil {
			return ""
		}
	}
}

// slaveStatus runs q, SHOW SLAVE 'name' STATUS or MySQL's SHOW REPLICA
// STATUS FOR CHANNEL, and returns its row by column, MySQL's newer
// column names (Replica_IO_Running, Exec_Source_Log_Pos) under MariaDB's
// (Slave_IO_Running, Exec_Master_Log_Pos).
func slaveStatus(ctx context.Context, conn *sql.Conn, q string) (map[string]string, error) {
	rows, err := conn.QueryContext(ctx, q)
	if err != nil {
		return nil, mysqlx.Translate(q, err)
	}
	defer func() { _ = rows.Close() }()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	st := map[string]string{}
	if !rows.Next() {
		return nil, fmt.Errorf("%s: no such replication connection (removed by someone else?)", q)
	}
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	for i, c := range cols {
		st[oldColumnNames.Replace(c)] = string(vals[i])
	}
	return st, rows.Err()
}

var oldColumnNames = strings.NewReplacer("Replica_", "Slave_", "Source_", "Master_")

// replicateFrom points the target's default replication connection at a
// live source from the restored GTID position and starts it.
func replicateFrom(ctx context.Context, db *sql.DB, t *target, src *mysqlx.DSN, plan *PlanResult) ([]string, error) {
	host, port, err := net.SplitHostPort(src.Addr())
	if err != nil {
		return nil, err
	}
	cfg := src.Config()
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	if t.mysql != nil {
		return replicateFromMySQL(ctx, conn, t, host, port, cfg.User, cfg.Passwd, plan)
	}
	pos := plan.EndGTID
	_, _ = conn.ExecContext(ctx, "STOP SLAVE ''")
	stmts := []string{
		"SET GLOBAL gtid_slave_pos = " + quote(pos),
		fmt.Sprintf("CHANGE MASTER '' TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos",
			quote(host), port, quote(cfg.User), quote(cfg.Passwd)),
		"START SLAVE ''",
	}
	for _, s := range stmts {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			if strings.HasPrefix(s, "CHANGE") {
				s = "CHANGE MASTER"
			}
			return nil, mysqlx.Translate(s, err)
		}
	}
	return nil, nil
}

// endLogPosRE finds the served file and position in an applier's error:
// MariaDB's and older MySQL's "master log", MySQL 8.0.26+'s "source log".
var endLogPosRE = regexp.MustCompile(`(master|source) log (` + regexp.QuoteMeta(sourceFilePrefix) + `\d+), end_log_pos (\d+)`)

// failedAt names the transaction an applier error message points at (by
// the served file name and end position) with its GTID and original file:
// the plan keeps no list of transactions, so that file is read again.
func (plan *PlanResult) failedAt(ctx context.Context, msg string, files []File) string {
	m := endLogPosRE.FindStringSubmatch(msg)
	if m == nil {
		return ""
	}
	pos, _ := strconv.ParseUint(m[3], 10, 64)
	n, err := strconv.Atoi(strings.TrimPrefix(m[2], sourceFilePrefix))
	if err != nil || n < 1 || n > len(files) {
		return ""
	}
	var found *Point
	_, _ = scanFile(ctx, files[n-1], n-1, true, 0, 0, func(Position) {}, func(gtid.MySQLSet) {}, func(t txn) {
		if found == nil && t.start < pos && pos <= t.end {
			p := t.point(files)
			found = &p
		}
	})
	if found == nil {
		return ""
	}
	return " in transaction " + found.String()
}

// sourceNames replaces the served file names in msg by the files' own.
func (plan *PlanResult) sourceNames(msg string, files []File) string {
	return endLogPosRE.ReplaceAllStringFunc(msg, func(s string) string {
		m := endLogPosRE.FindStringSubmatch(s)
		n, _ := strconv.Atoi(strings.TrimPrefix(m[2], sourceFilePrefix))
		if n < 1 || n > len(files) {
			return s
		}
		return fmt.Sprintf("%s log %s (file %d), end_log_pos %s", m[1], files[n-1].Name, n, m[3])
	})
}

// appliedUpTo counts the planned transactions that end at or before
// position pos of file i (0-based), to within checkpointEvery.
func (plan *PlanResult) appliedUpTo(i int, pos uint64) int {
	k := sort.Search(len(plan.checkpoints), func(k int) bool {
		c := plan.checkpoints[k]
		return c.file > i || (c.file == i && c.end > pos)
	})
	if k == 0 {
		return 0
	}
	return plan.checkpoints[k-1].n
}
