package testenv

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/server"
	guuid "github.com/google/uuid"
)

// MySQLReplicaDouble is a test DOUBLE for a MySQL 8.0 server as the
// target of a point-in-time restore: this machine has no MySQL, and the
// roll-forward onto MySQL (engines/binlog/apply) must be shown to speak to
// a MySQL replica as MySQL's does.
//
// It answers, over the MySQL protocol (go-mysql's server package), the
// statements Apply sends to a MySQL target: SELECT of system variables
// (@@version, @@server_uuid, @@GLOBAL.gtid_executed, the replica_*
// settings), SET GLOBAL, CHANGE REPLICATION SOURCE TO ... FOR CHANNEL,
// START/STOP REPLICA, RESET REPLICA ALL and SHOW REPLICA STATUS (and the
// pre-8.0.22/23 spellings when its version is older; from 8.4 it refuses
// them, as 8.4 does). On START REPLICA its receiver connects to the given
// source as MySQL 8.0's receiver thread does (sql/rpl_replica.cc, in its
// order): the handshake with caching_sha2_password (the fast path; the
// full path without TLS fails with error 2061 as MySQL's client does) or
// an AuthSwitchRequest's plugin; SELECT UNIX_TIMESTAMP(), SELECT
// @@GLOBAL.SERVER_ID, SET @master_heartbeat_period, SET
// @master_binlog_checksum, SELECT @source_binlog_checksum, SELECT
// @@GLOBAL.GTID_MODE, SELECT @@GLOBAL.SERVER_UUID, SET @slave_uuid,
// COM_REGISTER_SLAVE, then COM_BINLOG_DUMP (or COM_BINLOG_DUMP_GTID with
// SOURCE_AUTO_POSITION=1, sending its gtid_executed). It refuses, as MySQL
// does, a source with its own server id or UUID, or a GTID_MODE that
// cannot give it what it would apply. It checks every event's CRC32,
// records every event it receives, and "applies" a transaction by adding
// its GTID to gtid_executed; one whose GTID it already has is skipped, as
// MySQL skips it, and recorded as such (Skipped), so a test can tell the
// plan's cut from MySQL's guard. Connection failures are retried every
// SOURCE_CONNECT_RETRY seconds with Replica_IO_Running "Connecting", and
// reported in Last_IO_Errno/Last_IO_Error; fatal ones stop the receiver.
//
// What it cannot show: the SQL of the transactions (rows are not
// applied), real MySQL's applier (parallel workers, commit order, the
// relay log, crash safety), MySQL's TLS library and its checks (the
// receiver's TLS is Go's: SOURCE_SSL, SOURCE_SSL_CA read from this host,
// SOURCE_SSL_VERIFY_SERVER_CERT checking the chain and the host name), and
// whatever else a real MySQL does that its documented protocol leaves out.
type MySQLReplicaDouble struct {
	DSN      string // root without a password over TCP, go-sql-driver form
	Addr     string
	ServerID uint32
	UUID     string
	Version  string

	proto *protoServer
	opts  MySQLReplicaOptions

	mu       sync.Mutex
	vars     map[string]string
	executed *mysql.MysqlGTIDSet
	channels map[string]*replicaChannel
	removed  []ReplicaChannel // channels RESET REPLICA ALL removed
	sets     []string         // SET GLOBAL statements, in order
	stmts    []string         // every statement received
}

// MySQLReplicaOptions adjust a replica double.
type MySQLReplicaOptions struct {
	Version      string // default 8.0.36
	ServerID     uint32 // default: a fresh one
	UUID         string // default: derived from the server id
	GTIDExecuted string // the initial @@gtid_executed (a restored base)
	GTIDMode     string // default ON
	// NoReplicationAdmin refuses CHANGE REPLICATION SOURCE with error
	// 1227, as for a user without REPLICATION_SLAVE_ADMIN.
	NoReplicationAdmin bool
	// FailAt makes the applier stop at that transaction ("uuid:n") with a
	// duplicate-key error, as a replica-side error would.
	FailAt string
	// HoldApplier receives but never applies (a stuck applier: a lock
	// wait, a long transaction).
	HoldApplier bool
	// AuthPlugin is the plugin the receiver answers the handshake with
	// (default caching_sha2_password, MySQL 8's default).
	AuthPlugin string
	// Vars overrides system variables (lower-case names).
	Vars map[string]string
}

// ReplicaEvent is one event the receiver got.
type ReplicaEvent struct {
	Type   byte
	LogPos uint32
	File   string // the source file it came from (per the Rotates)
	GTID   string // Gtid events: uuid:n
}

// ReplicaChannel is a snapshot of one replication channel.
type ReplicaChannel struct {
	Name           string
	Change         string   // the CHANGE statement that set it up
	Steps          []string // the receiver's protocol steps, in order, every connection
	Events         []ReplicaEvent
	Applied        []string // GTIDs applied, in order ("anonymous" for those without)
	Skipped        []string // GTIDs received that gtid_executed already held
	Workers        string   // replica_parallel_workers at START REPLICA
	PreserveOrder  string   // replica_preserve_commit_order at START REPLICA
	SourceUUID     string
	Dumps          int
	LastIOErrno    int
	LastIOError    string
	LastSQLErrno   int
	LastSQLError   string
	HeartbeatsSeen int
	// IgnoredOwn counts events dropped for carrying the replica's own
	// server id, as MySQL drops them.
	IgnoredOwn int
	// TLS is how the last login was protected: "" (plain), else the
	// version and whether the source's certificate was verified.
	TLS string
}

type replicaChannel struct {
	ReplicaChannel
	host, user, password string
	port                 int
	file                 string // SOURCE_LOG_FILE, then the receiver's position
	pos                  uint32
	autoPosition         bool
	ssl, sslVerify       bool
	sslCA                string
	retry                time.Duration
	heartbeat            time.Duration
	ioRunning, sqlRun    string
	relayFile            string // of the last executed event
	execPos              uint32
	stop                 chan struct{}
	done                 chan struct{}
	conn                 net.Conn
	// The transaction being received: kept across reconnections, as the
	// relay log keeps a transaction's first events when the connection
	// drops inside it and the receiver asks from where it was.
	inTxn, first bool
	gtid         string
}

// StartMySQLReplicaDouble starts a replica double on 127.0.0.1.
func StartMySQLReplicaDouble(t testing.TB, o MySQLReplicaOptions) *MySQLReplicaDouble {
	t.Helper()
	p := listenProto(t)
	if o.Version == "" {
		o.Version = "8.0.36"
	}
	if o.ServerID == 0 {
		o.ServerID = nextServerID()
	}
	if o.UUID == "" {
		o.UUID = fmt.Sprintf("9b0c3d1e-71ca-11e1-9e33-%012x", o.ServerID)
	}
	if o.GTIDMode == "" {
		o.GTIDMode = "ON"
	}
	if o.AuthPlugin == "" {
		o.AuthPlugin = "caching_sha2_password"
	}
	d := &MySQLReplicaDouble{
		Addr: p.addr(), ServerID: o.ServerID, UUID: o.UUID, Version: o.Version,
		proto: p, opts: o, channels: map[string]*replicaChannel{},
	}
	d.DSN = "root@tcp(" + d.Addr + ")/"
	gs, err := mysql.ParseMysqlGTIDSet(o.GTIDExecuted)
	if err != nil {
		t.Fatalf("replica double: gtid_executed %q: %v", o.GTIDExecuted, err)
	}
	d.executed = gs.(*mysql.MysqlGTIDSet)
	d.vars = map[string]string{
		"version": o.Version, "version_comment": "MySQL Community Server - GPL", "server_id": strconv.FormatUint(uint64(o.ServerID), 10),
		"server_uuid": o.UUID, "log_bin": "1", "gtid_mode": o.GTIDMode, "log_replica_updates": "1",
		"replica_parallel_workers": "4", "replica_preserve_commit_order": "1", "replica_skip_errors": "OFF",
		"replica_exec_mode": "STRICT", "binlog_checksum": "CRC32", "read_only": "0",
	}
	for k, v := range o.Vars {
		d.vars[k] = v
	}
	p.start(d.Version, func() server.Handler { return &replicaHandler{textOnly: textOnly{"MySQL replica double"}, d: d} })
	t.Cleanup(d.Close)
	return d
}

// Close stops every receiver and the double.
func (d *MySQLReplicaDouble) Close() {
	d.mu.Lock()
	var chs []*replicaChannel
	for _, c := range d.channels {
		chs = append(chs, c)
	}
	d.mu.Unlock()
	d.proto.close()
	for _, c := range chs {
		d.stopChannel(c)
	}
}

// Executed is @@gtid_executed.
func (d *MySQLReplicaDouble) Executed() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.executed.String()
}

// Channel returns a snapshot of a channel, or of the last one of that name
// RESET REPLICA ALL removed; false when there is none.
func (d *MySQLReplicaDouble) Channel(name string) (ReplicaChannel, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var s ReplicaChannel
	found := false
	if c, ok := d.channels[name]; ok {
		s, found = c.ReplicaChannel, true
	} else {
		for i := len(d.removed) - 1; i >= 0; i-- {
			if d.removed[i].Name == name {
				s, found = d.removed[i], true
				break
			}
		}
	}
	if !found {
		return ReplicaChannel{}, false
	}
	s.Steps, s.Events, s.Applied, s.Skipped = slices.Clone(s.Steps), slices.Clone(s.Events), slices.Clone(s.Applied), slices.Clone(s.Skipped)
	return s, true
}

// Channels lists the channels' names.
func (d *MySQLReplicaDouble) Channels() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for n := range d.channels {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Var returns a global variable's value.
func (d *MySQLReplicaDouble) Var(name string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.vars[name]
}

// GlobalSets returns the SET GLOBAL statements received, in order.
func (d *MySQLReplicaDouble) GlobalSets() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.sets)
}

// Statements returns every statement received, in order.
func (d *MySQLReplicaDouble) Statements() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.stmts)
}

type replicaHandler struct {
	textOnly
	d *MySQLReplicaDouble
}

// varAliases are the pre-8.0.26 names MySQL 8.0 still answers to.
var varAliases = map[string]string{
	"log_slave_updates": "log_replica_updates", "slave_parallel_workers": "replica_parallel_workers",
	"slave_preserve_commit_order": "replica_preserve_commit_order", "slave_skip_errors": "replica_skip_errors",
	"slave_exec_mode": "replica_exec_mode",
}

var (
	channelRE = regexp.MustCompile(`(?i)\s+FOR\s+CHANNEL\s+'([^']*)'\s*$`)
	optionRE  = regexp.MustCompile(`(?i)(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|[^,\s]+)`)
)

func (d *MySQLReplicaDouble) atLeast(a, b, c int) bool {
	var v [3]int
	for i, f := range strings.SplitN(d.Version, ".", 3) {
		f, _, _ = strings.Cut(f, "-")
		v[i], _ = strconv.Atoi(f)
	}
	return v[0] > a || (v[0] == a && (v[1] > b || (v[1] == b && v[2] >= c)))
}

func (h *replicaHandler) HandleQuery(q string) (*mysql.Result, error) {
	d := h.d
	q = strings.TrimSpace(q)
	uq := strings.ToUpper(q)
	d.mu.Lock()
	d.stmts = append(d.stmts, q)
	d.mu.Unlock()
	channel := ""
	body := q
	if m := channelRE.FindStringSubmatch(q); m != nil {
		channel, body = m[1], q[:len(q)-len(m[0])]
	}
	ubody := strings.ToUpper(body)
	newSyntax := d.atLeast(8, 0, 22)
	old := func(stmt string) error {
		if d.atLeast(8, 4, 0) {
			return mysql.NewError(mysql.ER_PARSE_ERROR, "You have an error in your SQL syntax near '"+stmt+"' (removed in MySQL 8.4)")
		}
		return nil
	}
	switch {
	case strings.HasPrefix(uq, "SELECT @@"):
		return d.selectVars(q[len("SELECT "):])
	case strings.HasPrefix(uq, "SELECT FILTER_NAME, FILTER_RULE FROM PERFORMANCE_SCHEMA.REPLICATION_APPLIER_GLOBAL_FILTERS"):
		return resultRows([]string{"FILTER_NAME", "FILTER_RULE"})
	case strings.HasPrefix(uq, "SET GLOBAL "):
		return nil, d.setGlobal(q[len("SET GLOBAL "):])
	case strings.HasPrefix(uq, "SET "):
		return nil, nil
	case strings.HasPrefix(ubody, "CHANGE REPLICATION SOURCE TO "):
		if !d.atLeast(8, 0, 23) {
			return nil, mysql.NewError(mysql.ER_PARSE_ERROR, "You have an error in your SQL syntax near 'REPLICATION SOURCE TO' (MySQL 8.0.23+)")
		}
		return nil, d.change(q, body[len("CHANGE REPLICATION SOURCE TO "):], channel)
	case strings.HasPrefix(ubody, "CHANGE MASTER TO "):
		if err := old("CHANGE MASTER"); err != nil {
			return nil, err
		}
		return nil, d.change(q, body[len("CHANGE MASTER TO "):], channel)
	case ubody == "START REPLICA" || ubody == "START SLAVE":
		if err := d.spelling(ubody, newSyntax, old); err != nil {
			return nil, err
		}
		return nil, d.startChannel(channel)
	case ubody == "STOP REPLICA" || ubody == "STOP SLAVE":
		if err := d.spelling(ubody, newSyntax, old); err != nil {
			return nil, err
		}
		d.mu.Lock()
		c, ok := d.channels[channel]
		d.mu.Unlock()
		if !ok {
			return nil, mysql.NewError(3074, fmt.Sprintf("Replication channel '%s' does not exist.", channel))
		}
		d.stopChannel(c)
		return nil, nil
	case ubody == "RESET REPLICA ALL" || ubody == "RESET SLAVE ALL":
		if err := d.spelling(ubody, newSyntax, old); err != nil {
			return nil, err
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		c, ok := d.channels[channel]
		if !ok {
			return nil, mysql.NewError(3074, fmt.Sprintf("Replication channel '%s' does not exist.", channel))
		}
		if c.ioRunning != "No" || c.sqlRun != "No" {
			return nil, mysql.NewError(3082, "This operation cannot be performed with running replication threads; run STOP REPLICA FOR CHANNEL '"+channel+"' first")
		}
		delete(d.channels, channel)
		d.removed = append(d.removed, c.ReplicaChannel)
		return nil, nil
	case ubody == "SHOW REPLICA STATUS" || ubody == "SHOW SLAVE STATUS":
		if err := d.spelling(ubody, newSyntax, old); err != nil {
			return nil, err
		}
		return d.status(channel, ubody == "SHOW SLAVE STATUS" && !newSyntax)
	}
	return nil, mysql.NewError(mysql.ER_PARSE_ERROR, "the MySQL replica double does not answer: "+q)
}

// spelling refuses REPLICA before 8.0.22 and SLAVE from 8.4.
func (d *MySQLReplicaDouble) spelling(stmt string, newSyntax bool, old func(string) error) error {
	if strings.Contains(stmt, "REPLICA") && !newSyntax {
		return mysql.NewError(mysql.ER_PARSE_ERROR, "You have an error in your SQL syntax near 'REPLICA' (MySQL 8.0.22+)")
	}
	if strings.Contains(stmt, "SLAVE") {
		return old(stmt)
	}
	return nil
}

func resultRows(names []string, vals ...[]any) (*mysql.Result, error) {
	rs, err := mysql.BuildSimpleTextResultset(names, vals)
	if err != nil {
		return nil, err
	}
	return mysql.NewResult(rs), nil
}

func (d *MySQLReplicaDouble) lookupVar(item string) (string, bool) {
	name := strings.ToLower(strings.TrimSpace(item))
	name = strings.TrimPrefix(name, "@@")
	name = strings.TrimPrefix(strings.TrimPrefix(name, "global."), "session.")
	if a, ok := varAliases[name]; ok && d.atLeast(8, 4, 0) {
		return "", false // 8.4 dropped the old names
	} else if ok {
		name = a
	}
	if name == "gtid_executed" {
		return d.executed.String(), true
	}
	v, ok := d.vars[name]
	return v, ok
}

func (d *MySQLReplicaDouble) selectVars(list string) (*mysql.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var names []string
	var row []any
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		v, ok := d.lookupVar(item)
		if !ok {
			return nil, mysql.NewError(mysql.ER_UNKNOWN_SYSTEM_VARIABLE, fmt.Sprintf("Unknown system variable '%s'", strings.TrimPrefix(strings.TrimPrefix(strings.ToLower(item), "@@"), "global.")))
		}
		names = append(names, item)
		row = append(row, []byte(v)[:len(v):len(v)]) // non-nil: '' is not NULL
	}
	return resultRows(names, row)
}

var boolVars = map[string]bool{"log_replica_updates": true, "replica_preserve_commit_order": true, "read_only": true}

func (d *MySQLReplicaDouble) setGlobal(assign string) error {
	name, value, ok := strings.Cut(assign, "=")
	if !ok {
		return mysql.NewError(mysql.ER_PARSE_ERROR, "SET GLOBAL without a value")
	}
	name = strings.ToLower(strings.TrimSpace(name))
	value = strings.Trim(strings.TrimSpace(value), "'")
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sets = append(d.sets, "SET GLOBAL "+strings.TrimSpace(assign))
	if a, ok := varAliases[name]; ok {
		name = a
	}
	switch name {
	case "gtid_purged":
		add, ok := strings.CutPrefix(value, "+")
		if !ok {
			return mysql.NewError(3546, "@@GLOBAL.GTID_PURGED cannot be changed: the new value must be a superset of the old value (the double takes '+set' only)")
		}
		gs, err := mysql.ParseMysqlGTIDSet(add)
		if err != nil {
			return mysql.NewError(mysql.ER_WRONG_ARGUMENTS, "Malformed GTID set specification '"+add+"'.")
		}
		union := d.executed.Clone().(*mysql.MysqlGTIDSet)
		_ = union.Update(gs.String())
		if gtidCount(union.String()) != gtidCount(d.executed.String())+gtidCount(gs.String()) {
			return mysql.NewError(3546, "@@GLOBAL.GTID_PURGED cannot be changed: the added gtid set must not overlap with @@GLOBAL.GTID_EXECUTED")
		}
		d.executed = union
		return nil
	case "gtid_executed", "server_uuid", "version":
		return mysql.NewError(1238, fmt.Sprintf("Variable '%s' is a read only variable", name))
	}
	if _, ok := d.vars[name]; !ok {
		return mysql.NewError(mysql.ER_UNKNOWN_SYSTEM_VARIABLE, fmt.Sprintf("Unknown system variable '%s'", name))
	}
	if boolVars[name] {
		switch strings.ToUpper(value) {
		case "ON", "1":
			value = "1"
		case "OFF", "0":
			value = "0"
		}
	}
	d.vars[name] = value
	if name == "server_id" {
		n, _ := strconv.ParseUint(value, 10, 32)
		d.ServerID = uint32(n)
	}
	return nil
}

func (d *MySQLReplicaDouble) change(stmt, opts, channel string) error {
	if d.opts.NoReplicationAdmin {
		return mysql.NewError(mysql.ER_SPECIFIC_ACCESS_DENIED_ERROR, "Access denied; you need (at least one of) the SUPER or REPLICATION_SLAVE_ADMIN privilege(s) for this operation")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.channels[channel]
	if ok && (c.ioRunning != "No" || c.sqlRun != "No") {
		return mysql.NewError(13117, "This operation cannot be performed with a running replica io thread; run STOP REPLICA IO_THREAD FOR CHANNEL '"+channel+"' first.")
	}
	if !ok {
		c = &replicaChannel{ioRunning: "No", sqlRun: "No", retry: 60 * time.Second, heartbeat: 30 * time.Second}
		c.Name = channel
	}
	c.Change = stmt
	for _, m := range optionRE.FindAllStringSubmatch(opts, -1) {
		key := strings.ToUpper(m[1])
		key = strings.Replace(strings.Replace(key, "MASTER_", "X_", 1), "SOURCE_", "X_", 1)
		val := m[2]
		if strings.HasPrefix(val, "'") {
			val = strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(val[1 : len(val)-1])
		}
		n, _ := strconv.Atoi(val)
		switch key {
		case "X_HOST":
			c.host = val
		case "X_PORT":
			c.port = n
		case "X_USER":
			c.user = val
		case "X_PASSWORD":
			c.password = val
		case "X_LOG_FILE":
			c.file = val
			c.relayFile = val
		case "X_LOG_POS":
			c.pos = uint32(n)
			c.execPos = uint32(n)
		case "X_AUTO_POSITION":
			c.autoPosition = n == 1
		case "X_SSL":
			c.ssl = n == 1
		case "X_SSL_CA":
			c.sslCA = val
		case "X_SSL_VERIFY_SERVER_CERT":
			c.sslVerify = n == 1
		case "X_CONNECT_RETRY":
			c.retry = time.Duration(n) * time.Second
		case "X_HEARTBEAT_PERIOD":
			f, _ := strconv.ParseFloat(val, 64)
			c.heartbeat = time.Duration(f * float64(time.Second))
		}
	}
	if c.autoPosition && d.vars["gtid_mode"] != "ON" {
		return mysql.NewError(1777, "CHANGE REPLICATION SOURCE TO SOURCE_AUTO_POSITION = 1 cannot be executed because @@GLOBAL.GTID_MODE = OFF.")
	}
	d.channels[channel] = c
	return nil
}

func (d *MySQLReplicaDouble) startChannel(name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.channels[name]
	if !ok {
		return mysql.NewError(3074, fmt.Sprintf("Replication channel '%s' does not exist.", name))
	}
	if c.ioRunning != "No" {
		return nil // MySQL warns that it runs already
	}
	c.ioRunning, c.sqlRun = "Connecting", "Yes"
	c.LastIOErrno, c.LastIOError, c.LastSQLErrno, c.LastSQLError = 0, "", 0, ""
	c.Workers, c.PreserveOrder = d.vars["replica_parallel_workers"], d.vars["replica_preserve_commit_order"]
	c.stop, c.done = make(chan struct{}), make(chan struct{})
	go d.receive(c)
	return nil
}

func (d *MySQLReplicaDouble) stopChannel(c *replicaChannel) {
	d.mu.Lock()
	stop, done, conn := c.stop, c.done, c.conn
	if stop != nil {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}
	d.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
	if done != nil {
		<-done
	}
	d.mu.Lock()
	c.ioRunning, c.sqlRun = "No", "No"
	d.mu.Unlock()
}

func (d *MySQLReplicaDouble) status(channel string, oldNames bool) (*mysql.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.channels[channel]
	if !ok {
		if channel == "" {
			return resultRows([]string{"Replica_IO_State"})
		}
		return nil, mysql.NewError(3074, fmt.Sprintf("Replication channel '%s' does not exist.", channel))
	}
	ssl := "No"
	if c.ssl {
		ssl = "Yes"
	}
	auto := "0"
	if c.autoPosition {
		auto = "1"
	}
	names := []string{"Replica_IO_State", "Source_Host", "Source_User", "Source_Port", "Connect_Retry", "Source_Log_File", "Read_Source_Log_Pos",
		"Relay_Source_Log_File", "Replica_IO_Running", "Replica_SQL_Running", "Exec_Source_Log_Pos", "Source_SSL_Allowed", "Source_SSL_CA_File",
		"Source_SSL_Verify_Server_Cert", "Last_IO_Errno", "Last_IO_Error", "Last_SQL_Errno", "Last_SQL_Error", "Source_UUID",
		"Executed_Gtid_Set", "Auto_Position", "Channel_Name"}
	if oldNames {
		r := strings.NewReplacer("Replica_", "Slave_", "Source_", "Master_")
		for i := range names {
			names[i] = r.Replace(names[i])
		}
	}
	verify := "No"
	if c.sslVerify {
		verify = "Yes"
	}
	return resultRows(names, []any{"", c.host, c.user, strconv.Itoa(c.port), strconv.Itoa(int(c.retry / time.Second)), c.file, strconv.FormatUint(uint64(c.pos), 10),
		c.relayFile, c.ioRunning, c.sqlRun, strconv.FormatUint(uint64(c.execPos), 10), ssl, c.sslCA, verify,
		strconv.Itoa(c.LastIOErrno), c.LastIOError, strconv.Itoa(c.LastSQLErrno), c.LastSQLError, c.SourceUUID,
		d.executed.String(), auto, c.Name})
}

// ---- the receiver ----

// ioError is a receiver failure with MySQL's error number; fatal ones
// stop the receiver, others are retried.
type ioError struct {
	errno int
	msg   string
	fatal bool
}

func (e *ioError) Error() string { return fmt.Sprintf("%d: %s", e.errno, e.msg) }

func (d *MySQLReplicaDouble) step(c *replicaChannel, s string) {
	d.mu.Lock()
	c.Steps = append(c.Steps, s)
	d.mu.Unlock()
}

func (d *MySQLReplicaDouble) receive(c *replicaChannel) {
	defer close(c.done)
	for attempt := 1; ; attempt++ {
		err := d.session(c)
		select {
		case <-c.stop:
			return
		default:
		}
		var ie *ioError
		if !errors.As(err, &ie) {
			ie = &ioError{errno: 2013, msg: fmt.Sprintf("Lost connection to MySQL server during query (%v)", err)}
		}
		d.mu.Lock()
		c.LastIOErrno, c.LastIOError = ie.errno, ie.msg
		if ie.errno == 1045 || ie.errno == 2061 || ie.errno == 2003 {
			c.LastIOError = fmt.Sprintf("Error connecting to source '%s@%s:%d'. This was attempt %d/86400, with a delay of %d seconds between attempts. Message: %s",
				c.user, c.host, c.port, attempt, int(c.retry/time.Second), ie.msg)
		}
		if ie.fatal {
			c.ioRunning = "No"
			d.mu.Unlock()
			return
		}
		c.ioRunning = "Connecting"
		d.mu.Unlock()
		select {
		case <-c.stop:
			return
		case <-time.After(c.retry):
		}
	}
}

// rconn is the receiver's client connection.
type rconn struct {
	c   net.Conn
	r   *bufio.Reader
	seq byte
}

func (p *rconn) read() ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(p.r, h[:]); err != nil {
		return nil, err
	}
	n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
	p.seq = h[3] + 1
	b := make([]byte, n)
	_, err := io.ReadFull(p.r, b)
	return b, err
}

func (p *rconn) write(b []byte) error {
	h := []byte{byte(len(b)), byte(len(b) >> 8), byte(len(b) >> 16), p.seq}
	p.seq++
	_, err := p.c.Write(append(h, b...))
	return err
}

func replicaErr(b []byte) *ioError {
	if len(b) < 3 || b[0] != 0xff {
		return &ioError{errno: 2027, msg: "Malformed packet"}
	}
	code := int(binary.LittleEndian.Uint16(b[1:]))
	msg := b[3:]
	if len(msg) > 0 && msg[0] == '#' && len(msg) >= 6 {
		msg = msg[6:]
	}
	return &ioError{errno: code, msg: string(msg)}
}

// query runs a statement and returns its first row (nil for OK).
func (p *rconn) query(q string) ([]string, error) {
	p.seq = 0
	if err := p.write(append([]byte{0x03}, q...)); err != nil {
		return nil, err
	}
	b, err := p.read()
	if err != nil {
		return nil, err
	}
	switch b[0] {
	case 0x00:
		return nil, nil
	case 0xff:
		return nil, replicaErr(b)
	}
	ncol := int(b[0])
	for range ncol { // column definitions
		if _, err := p.read(); err != nil {
			return nil, err
		}
	}
	if _, err := p.read(); err != nil { // EOF
		return nil, err
	}
	var first []string
	for {
		b, err := p.read()
		if err != nil {
			return nil, err
		}
		if b[0] == 0xfe && len(b) < 9 {
			return first, nil
		}
		if b[0] == 0xff {
			return nil, replicaErr(b)
		}
		if first != nil {
			continue
		}
		first = []string{}
		for len(b) > 0 {
			if b[0] == 0xfb {
				first = append(first, "")
				b = b[1:]
				continue
			}
			n, w := lenencInt(b)
			first = append(first, string(b[w:w+int(n)]))
			b = b[w+int(n):]
		}
	}
}

func lenencInt(b []byte) (uint64, int) {
	switch b[0] {
	case 0xfc:
		return uint64(binary.LittleEndian.Uint16(b[1:])), 3
	case 0xfd:
		return uint64(b[1]) | uint64(b[2])<<8 | uint64(b[3])<<16, 4
	case 0xfe:
		return binary.LittleEndian.Uint64(b[1:]), 9
	}
	return uint64(b[0]), 1
}

// scrambleFor is the receiver's auth response, computed by go-mysql's
// client code: an implementation independent of the source's check.
func scrambleFor(plugin string, scramble []byte, password string) ([]byte, error) {
	switch plugin {
	case "caching_sha2_password":
		return mysql.CalcCachingSha2Password(scramble, []byte(password)), nil
	case "mysql_native_password":
		return mysql.CalcNativePassword(scramble, []byte(password)), nil
	}
	return nil, &ioError{errno: 2059, msg: fmt.Sprintf("Authentication plugin '%s' cannot be loaded", plugin)}
}

// session is one connection of the receiver: login, the initial queries,
// the dump, and the events until the connection ends.
func (d *MySQLReplicaDouble) session(c *replicaChannel) error {
	d.mu.Lock()
	addr := net.JoinHostPort(c.host, strconv.Itoa(c.port))
	user, password, ssl, auto := c.user, c.password, c.ssl, c.autoPosition
	sslCA, sslVerify, host := c.sslCA, c.sslVerify, c.host
	c.TLS = ""
	d.mu.Unlock()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return &ioError{errno: 2003, msg: fmt.Sprintf("Can't connect to MySQL server on '%s' (%v)", addr, err)}
	}
	d.mu.Lock()
	c.conn = nc
	stopped := false
	select {
	case <-c.stop:
		stopped = true
	default:
	}
	d.mu.Unlock()
	defer func() { _ = nc.Close() }()
	if stopped {
		return nil
	}
	p := &rconn{c: nc, r: bufio.NewReader(nc)}
	d.step(c, "connect")

	// Handshake v10.
	hs, err := p.read()
	if err != nil {
		return err
	}
	if hs[0] == 0xff {
		return replicaErr(hs)
	}
	i := 1 + strings.IndexByte(string(hs[1:]), 0)
	version := string(hs[1:i])
	b := hs[i+1+4:] // connection id
	scramble := append([]byte(nil), b[:8]...)
	b = b[9:]
	caps := uint32(binary.LittleEndian.Uint16(b))
	b = b[2+1+2:] // caps low, charset, status
	caps |= uint32(binary.LittleEndian.Uint16(b)) << 16
	authLen := int(b[2])
	b = b[3+10:]
	n2 := max(13, authLen-8)
	scramble = append(scramble, b[:n2-1]...) // without its NUL
	b = b[n2:]
	serverPlugin := strings.TrimRight(string(b), "\x00")
	if caps&0x80000 == 0 || caps&0x200 == 0 {
		return &ioError{errno: 2027, msg: "the source does not speak protocol 4.1 with plugin authentication"}
	}
	d.step(c, "handshake "+version+" "+serverPlugin)

	plugin := d.opts.AuthPlugin
	auth, err := scrambleFor(plugin, scramble, password)
	if err != nil {
		return err
	}
	clientCaps := uint32(0x1 | 0x4 | 0x200 | 0x2000 | 0x8000 | 0x80000 | 0x200000)
	if ssl {
		// SSL request (the response's fixed part with CLIENT_SSL), then
		// TLS, then the response, as MySQL's client does.
		if caps&0x800 == 0 {
			return &ioError{errno: 2026, msg: "SSL connection error: SSL is required but the server doesn't support it"}
		}
		clientCaps |= 0x800
		req := binary.LittleEndian.AppendUint32(nil, clientCaps)
		req = binary.LittleEndian.AppendUint32(req, 1<<30)
		req = append(req, 255)
		req = append(req, make([]byte, 23)...)
		if err := p.write(req); err != nil {
			return err
		}
		cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		if sslVerify || sslCA != "" {
			pem, err := os.ReadFile(sslCA)
			if err != nil {
				return &ioError{errno: 2026, msg: fmt.Sprintf("SSL connection error: Unable to get certificate from '%s'", sslCA)}
			}
			cfg.RootCAs = x509.NewCertPool()
			cfg.RootCAs.AppendCertsFromPEM(pem)
		}
		if !sslVerify {
			cfg.InsecureSkipVerify = true // SOURCE_SSL_VERIFY_SERVER_CERT=0: the chain is checked below when a CA is given
			if cfg.RootCAs != nil {
				roots := cfg.RootCAs
				cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
					leaf, err := x509.ParseCertificate(raw[0])
					if err != nil {
						return err
					}
					_, err = leaf.Verify(x509.VerifyOptions{Roots: roots})
					return err
				}
			}
		}
		tc := tls.Client(nc, cfg)
		if err := tc.Handshake(); err != nil {
			return &ioError{errno: 2026, msg: "SSL connection error: " + err.Error()}
		}
		p.c, p.r = tc, bufio.NewReader(tc)
		state := fmt.Sprintf("TLS 0x%04x", tc.ConnectionState().Version)
		if sslVerify {
			state += " verified"
		}
		d.mu.Lock()
		c.TLS = state
		d.mu.Unlock()
		d.step(c, "tls")
	}
	resp := binary.LittleEndian.AppendUint32(nil, clientCaps)
	resp = binary.LittleEndian.AppendUint32(resp, 1<<30)
	resp = append(resp, 255)
	resp = append(resp, make([]byte, 23)...)
	resp = append(resp, user...)
	resp = append(resp, 0, byte(len(auth)))
	resp = append(resp, auth...)
	resp = append(resp, plugin...)
	resp = append(resp, 0)
	if err := p.write(resp); err != nil {
		return err
	}
	d.step(c, "auth "+plugin)
	for {
		b, err := p.read()
		if err != nil {
			return err
		}
		switch {
		case b[0] == 0x00:
			d.step(c, "login ok")
		case b[0] == 0xff:
			return replicaErr(b)
		case b[0] == 0xfe: // AuthSwitchRequest
			i := strings.IndexByte(string(b[1:]), 0)
			if i < 0 {
				return &ioError{errno: 2027, msg: "Malformed AuthSwitchRequest"}
			}
			plugin = string(b[1 : 1+i])
			scramble = []byte(strings.TrimRight(string(b[2+i:]), "\x00"))
			d.step(c, "auth switch "+plugin)
			if auth, err = scrambleFor(plugin, scramble, password); err != nil {
				return err
			}
			if err := p.write(auth); err != nil {
				return err
			}
			continue
		case b[0] == 0x01 && len(b) > 1 && b[1] == 0x03 && plugin == "caching_sha2_password":
			d.step(c, "auth fast")
			continue
		case b[0] == 0x01 && len(b) > 1 && b[1] == 0x04 && plugin == "caching_sha2_password":
			// Full authentication: without TLS, MySQL's client would ask
			// for the server's RSA key only with GET_SOURCE_PUBLIC_KEY=1.
			return &ioError{errno: 2061, msg: "Authentication plugin 'caching_sha2_password' reported error: Authentication requires secure connection."}
		default:
			return &ioError{errno: 2027, msg: fmt.Sprintf("Malformed packet during authentication (%x)", b)}
		}
		break
	}
	if v, _ := strconv.Atoi(strings.SplitN(version, ".", 2)[0]); v < 5 {
		return &ioError{errno: 13117, msg: "Source reported unrecognized MySQL version", fatal: true}
	}

	fatal := func(msg string, err error) error {
		var ie *ioError
		if errors.As(err, &ie) {
			return &ioError{errno: 13117, msg: fmt.Sprintf("Fatal error: %s Error: %s", msg, ie.msg), fatal: true}
		}
		return err
	}
	ask := func(q string) ([]string, error) {
		d.step(c, q)
		row, err := p.query(q)
		if err == nil && row == nil && strings.HasPrefix(q, "SELECT") {
			return nil, &ioError{errno: 13117, msg: fmt.Sprintf("The replica IO thread stops because the initialization query '%s' did not return any row.", q), fatal: true}
		}
		return row, err
	}
	// get_master_version_and_clock
	if _, err := ask("SELECT UNIX_TIMESTAMP()"); err != nil {
		var ie *ioError
		if !errors.As(err, &ie) {
			return err // a network error; else MySQL only warns
		}
	}
	row, err := ask("SELECT @@GLOBAL.SERVER_ID")
	if err != nil {
		return fatal("The replica I/O thread stops because a fatal error is encountered when it try to get the value of SERVER_ID variable from source.", err)
	}
	d.mu.Lock()
	own := d.ServerID
	hb := c.heartbeat
	d.mu.Unlock()
	if row[0] == strconv.FormatUint(uint64(own), 10) {
		return &ioError{errno: 13117, msg: "Fatal error: The replica I/O thread stops because source and replica have equal MySQL server ids; these ids must be different for replication to work (or the --replicate-same-server-id option must be used on replica but this does not always make sense; please check the manual before using it).", fatal: true}
	}
	ns := strconv.FormatInt(int64(hb), 10)
	if _, err := ask("SET @master_heartbeat_period = " + ns + ", @source_heartbeat_period = " + ns); err != nil {
		return fatal("The replica I/O thread stops because a fatal error is encountered when it tries to SET @source_heartbeat_period on source.", err)
	}
	if _, err := ask("SET @master_binlog_checksum = @@global.binlog_checksum, @source_binlog_checksum = @@global.binlog_checksum"); err != nil {
		return fatal("The replica I/O thread stops because a fatal error is encountered when it tried to SET @source_binlog_checksum on source.", err)
	}
	row, err = ask("SELECT @source_binlog_checksum")
	if err != nil {
		return fatal("The replica I/O thread stops because a fatal error is encountered when it tried to SELECT @source_binlog_checksum.", err)
	}
	crc := false
	switch strings.ToUpper(row[0]) {
	case "CRC32":
		crc = true
	case "NONE":
	default:
		return &ioError{errno: 13117, msg: "The replica I/O thread was stopped because a fatal error is encountered The checksum algorithm used by source is unknown to replica.", fatal: true}
	}
	row, err = ask("SELECT @@GLOBAL.GTID_MODE")
	if err != nil {
		return fatal("The replica IO thread stops because the initialization query 'SELECT @@GLOBAL.GTID_MODE' failed.", err)
	}
	d.mu.Lock()
	mine := d.vars["gtid_mode"]
	d.mu.Unlock()
	theirs := strings.ToUpper(row[0])
	on := func(m string) bool { return m == "ON" || m == "ON_PERMISSIVE" }
	if (mine == "OFF" && on(theirs)) || (mine == "ON" && !on(theirs)) {
		return &ioError{errno: 13117, msg: fmt.Sprintf("The replication receiver thread cannot start because the source has GTID_MODE = %s and this server has GTID_MODE = %s.", theirs, mine), fatal: true}
	}
	if auto && theirs != "ON" {
		return &ioError{errno: 13117, msg: fmt.Sprintf("The replication receiver thread cannot start in AUTO_POSITION mode: the source has GTID_MODE = %s instead of ON.", theirs), fatal: true}
	}
	// get_master_uuid
	row, err = ask("SELECT @@GLOBAL.SERVER_UUID")
	if err != nil {
		return fatal("The replica I/O thread stops because a fatal error is encountered when it tries to get the value of SERVER_UUID variable from source.", err)
	}
	if strings.EqualFold(row[0], d.UUID) {
		return &ioError{errno: 13117, msg: "Fatal error: The replica I/O thread stops because source and replica have equal MySQL server UUIDs; these UUIDs must be different for replication to work.", fatal: true}
	}
	d.mu.Lock()
	c.SourceUUID = row[0]
	d.mu.Unlock()
	// io_thread_init_commands
	if _, err := ask(fmt.Sprintf("SET @slave_uuid = '%s', @replica_uuid = '%s'", d.UUID, d.UUID)); err != nil {
		return fatal("The replica I/O thread stops because a fatal error is encountered when it tries to send query to source(query: SET @slave_uuid).", err)
	}
	// register_slave_on_master
	reg := []byte{0x15}
	reg = binary.LittleEndian.AppendUint32(reg, own)
	reg = append(reg, 0, 0, 0)             // report_host, report_user, report_password
	reg = append(reg, 0, 0, 0, 0, 0, 0, 0) // port, rank
	reg = append(reg, 0, 0, 0, 0)          // source id
	p.seq = 0
	d.step(c, "COM_REGISTER_SLAVE")
	if err := p.write(reg); err != nil {
		return err
	}
	if b, err := p.read(); err != nil {
		return err
	} else if b[0] == 0xff {
		ie := replicaErr(b)
		return &ioError{errno: 13118, msg: "Replica I/O thread couldn't register on source: " + ie.msg}
	}
	// request_dump
	d.mu.Lock()
	file, pos := c.file, c.pos
	exec := d.executed.Encode()
	c.Dumps++
	d.mu.Unlock()
	var dump []byte
	if auto {
		dump = []byte{0x1e}
		dump = binary.LittleEndian.AppendUint16(dump, 0)
		dump = binary.LittleEndian.AppendUint32(dump, own)
		dump = binary.LittleEndian.AppendUint32(dump, 0) // no file name
		dump = binary.LittleEndian.AppendUint64(dump, 4)
		dump = binary.LittleEndian.AppendUint32(dump, uint32(len(exec)))
		dump = append(dump, exec...)
		d.step(c, "COM_BINLOG_DUMP_GTID "+d.Executed())
	} else {
		dump = []byte{0x12}
		dump = binary.LittleEndian.AppendUint32(dump, pos)
		dump = binary.LittleEndian.AppendUint16(dump, 0)
		dump = binary.LittleEndian.AppendUint32(dump, own)
		dump = append(dump, file...)
		d.step(c, fmt.Sprintf("COM_BINLOG_DUMP %s:%d", file, pos))
	}
	p.seq = 0
	if err := p.write(dump); err != nil {
		return err
	}
	d.mu.Lock()
	c.ioRunning = "Yes"
	c.LastIOErrno, c.LastIOError = 0, ""
	d.mu.Unlock()
	return d.events(c, p, crc)
}

// events reads the dump's events and applies each transaction at its end.
func (d *MySQLReplicaDouble) events(c *replicaChannel, p *rconn, crc bool) error {
	failAt := d.opts.FailAt
	for {
		b, err := p.read()
		if err != nil {
			return err
		}
		switch b[0] {
		case 0xff:
			ie := replicaErr(b)
			return &ioError{errno: 13114, msg: fmt.Sprintf("Got fatal error %d from source when reading data from binary log: '%s'", ie.errno, ie.msg), fatal: true}
		case 0xfe:
			return &ioError{errno: 2013, msg: "the source ended the dump"}
		}
		ev := b[1:]
		if len(ev) < 19 {
			return &ioError{errno: 13122, msg: "Relay log write failure: could not queue event from source (too short)", fatal: true}
		}
		typ := ev[4]
		logPos := binary.LittleEndian.Uint32(ev[13:])
		if typ == 15 { // the FDE says what follows
			crc = ev[len(ev)-5] == 1
		}
		if crc && crc32.ChecksumIEEE(ev[:len(ev)-4]) != binary.LittleEndian.Uint32(ev[len(ev)-4:]) {
			return &ioError{errno: 13122, msg: fmt.Sprintf("Relay log write failure: could not queue event from source (event type %d at %d fails its checksum)", typ, logPos), fatal: true}
		}
		body := ev[19:]
		if crc {
			body = body[:len(body)-4]
		}
		d.mu.Lock()
		if sid := binary.LittleEndian.Uint32(ev[5:]); sid == d.ServerID && typ != 4 && typ != 15 && typ != 27 {
			// MySQL's receiver drops its own server id's events
			// (replicate_same_server_id off): they would be lost.
			c.IgnoredOwn++
			if logPos != 0 {
				c.pos = logPos
			}
			d.mu.Unlock()
			continue
		}
		re := ReplicaEvent{Type: typ, LogPos: logPos, File: c.file}
		switch typ {
		case 4: // Rotate
			c.file = string(body[8:])
			c.pos = uint32(binary.LittleEndian.Uint64(body))
			re.File = c.file
		case 27: // heartbeat
			c.HeartbeatsSeen++
		case 33, 34:
			if len(body) < 25 {
				d.mu.Unlock()
				return &ioError{errno: 13122, msg: "Relay log write failure: Gtid event too short", fatal: true}
			}
			c.inTxn, c.first = true, true
			c.gtid = "anonymous"
			if typ == 33 {
				u, _ := guuid.FromBytes(body[1:17])
				c.gtid = fmt.Sprintf("%s:%d", u, binary.LittleEndian.Uint64(body[17:]))
				re.GTID = c.gtid
			}
		}
		if logPos != 0 {
			c.pos = logPos
		}
		c.Events = append(c.Events, re)
		commit := false
		switch {
		case typ == 16: // Xid
			commit = c.inTxn
		case typ == 2 && c.inTxn:
			q := queryOf(body)
			commit = strings.EqualFold(q, "COMMIT") || (c.first && !strings.EqualFold(q, "BEGIN"))
			c.first = false
		}
		if c.sqlRun == "Yes" && !d.opts.HoldApplier {
			switch {
			case commit:
				c.inTxn = false
				d.applyLocked(c, c.gtid, failAt, logPos)
			case !c.inTxn && logPos != 0 && typ != 27:
				c.relayFile, c.execPos = c.file, logPos
			}
		}
		d.mu.Unlock()
	}
}

// applyLocked "applies" one transaction.
func (d *MySQLReplicaDouble) applyLocked(c *replicaChannel, gtid, failAt string, end uint32) {
	if gtid == failAt {
		c.sqlRun = "No"
		c.LastSQLErrno = 1062
		c.LastSQLError = fmt.Sprintf("Coordinator stopped because there were error(s) in the worker(s). The most recent failure being: Worker 1 failed executing transaction '%s' at source log %s, end_log_pos %d. Could not execute Write_rows event on table test.t; Duplicate entry '1' for key 't.PRIMARY', Error_code: 1062; handler error HA_ERR_FOUND_DUPP_KEY; the event's source log %s, end_log_pos %d",
			gtid, c.file, end, c.file, end)
		return
	}
	if gtid != "anonymous" {
		gs, _ := mysql.ParseMysqlGTIDSet(gtid)
		if d.executed.Contain(gs) {
			c.Skipped = append(c.Skipped, gtid)
			c.relayFile, c.execPos = c.file, end
			return
		}
		_ = d.executed.Update(gtid)
	}
	c.Applied = append(c.Applied, gtid)
	c.relayFile, c.execPos = c.file, end
}

// queryOf is a Query event's statement (MySQL 8.0's post-header of 13).
func queryOf(body []byte) string {
	if len(body) < 13 {
		return ""
	}
	dbLen := int(body[8])
	statusLen := int(binary.LittleEndian.Uint16(body[11:]))
	off := 13 + statusLen + dbLen + 1
	if off > len(body) {
		return ""
	}
	return strings.TrimSpace(string(body[off:]))
}

// gtidCount counts the transactions of a GTID set's string form.
func gtidCount(set string) int64 {
	var n int64
	for _, part := range strings.Split(set, ",") {
		fields := strings.Split(strings.TrimSpace(part), ":")
		for _, iv := range fields[1:] {
			a, b, ok := strings.Cut(iv, "-")
			lo, _ := strconv.ParseInt(a, 10, 64)
			hi := lo
			if ok {
				hi, _ = strconv.ParseInt(b, 10, 64)
			}
			n += hi - lo + 1
		}
	}
	return n
}
