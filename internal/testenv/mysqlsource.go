package testenv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/go-mysql-org/go-mysql/server"
	guuid "github.com/google/uuid"
)

// MySQLSourceDouble is a test DOUBLE for a MySQL 8.0 server as a replication
// source: this machine has no MySQL (Debian ships MariaDB only), and the
// binlog streamer has a MySQL path (GTID auto-positioning, file/position,
// MySQL's event types) that MariaDB never takes.
//
// It speaks the MySQL protocol (go-mysql's server package) and serves
// binlog files it writes itself in MySQL 8.0's format: a format
// description event with MySQL 8.0's post-header lengths and CRC32
// checksums, Previous_gtids, and per transaction Gtid, Query(BEGIN),
// Table_map, Write_rows (v2) and Xid events. How it serves them follows
// the source's documented behaviour (sql/rpl_binlog_sender.cc): a fake
// Rotate first, the file's format description (with log_pos 0 and the
// in-use flag cleared when the dump starts past the header), heartbeats
// when idle at the period the replica sets in @master_heartbeat_period,
// the real Rotate at the end of a file; COM_BINLOG_DUMP_GTID skips the
// transactions of the replica's set and refuses, with error 1236, a set
// that lacks purged transactions; COM_BINLOG_DUMP of a purged file gets
// error 1236 too. It answers the queries the streamer sends, as MySQL 8.0
// does, and records every dump request.
//
// What it cannot show: anything MySQL itself would do beyond that
// (semi-sync, compression, the SQL of the transactions), and PITR onto
// MySQL, which needs a real MySQL server as the target.
type MySQLSourceDouble struct {
	DSN      string // root without a password over TCP, go-sql-driver form
	Addr     string
	ServerID uint32
	UUID     string
	Version  string

	proto *protoServer

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every append
	files    []*binlogFile
	gno      int64
	purged   int64 // transactions 1..purged are in purged files
	gtidMode bool
	sourceID string // the UUID transactions are written under (a replica writes its source's)
	prior    string // transactions of other UUIDs in the binlog (PromoteWithOwnUUID)
	dumps    []DumpRequest
	replica  bool // read_only, and SHOW SLAVE STATUS shows a source
}

// DumpRequest is one dump a replica asked the double for.
type DumpRequest struct {
	GTID bool   // COM_BINLOG_DUMP_GTID; else COM_BINLOG_DUMP
	File string // file/position dumps
	Pos  uint32
	Set  string // the replica's GTID set (GTID dumps)
}

type binlogFile struct {
	name   string
	data   []byte
	closed bool
	// txns[i] is the GNO and the offset range of each transaction.
	txns []txnRange
}

type txnRange struct {
	uuid       string
	gno        int64
	start, end int
}

// MySQLSourceOptions adjust a double.
type MySQLSourceOptions struct {
	ServerID uint32
	// GTIDModeOff streams by file and position only (gtid_mode=OFF).
	GTIDModeOff bool
	// ReplicaOf makes this double a replica of another: its binlog holds
	// the same transactions under the source's UUID (what a promoted MySQL
	// replica with log_replica_updates has), up to now; Commit on the
	// replica continues them.
	ReplicaOf *MySQLSourceDouble
}

// StartMySQLSourceDouble starts a double listening on 127.0.0.1 with one
// binlog file, binlog.000001, holding no transaction yet.
func StartMySQLSourceDouble(t testing.TB, o MySQLSourceOptions) *MySQLSourceDouble {
	t.Helper()
	p := listenProto(t)
	d := &MySQLSourceDouble{
		Addr:     p.addr(),
		ServerID: o.ServerID,
		Version:  "8.0.36",
		proto:    p,
		changed:  make(chan struct{}),
		gtidMode: !o.GTIDModeOff,
	}
	if d.ServerID == 0 {
		d.ServerID = nextServerID()
	}
	d.UUID = fmt.Sprintf("3e11fa47-71ca-11e1-9e33-%012x", d.ServerID)
	d.sourceID = d.UUID
	d.DSN = "root@tcp(" + d.Addr + ")/"
	d.newFile("binlog.000001", "")
	if src := o.ReplicaOf; src != nil {
		src.mu.Lock()
		d.sourceID, d.gno, d.replica = src.sourceID, src.gno, true
		d.mu.Lock()
		for g := int64(1); g <= d.gno; g++ {
			d.appendTxn(g, time.Now())
		}
		d.mu.Unlock()
		src.mu.Unlock()
	}
	p.start(d.Version, func() server.Handler {
		return &sourceHandler{textOnly: textOnly{"MySQL source double"}, d: d, heartbeat: 30 * time.Second}
	})
	t.Cleanup(d.Close)
	return d
}

// Close stops the double and cuts every connection.
func (d *MySQLSourceDouble) Close() {
	d.proto.close()
	d.KillConnections()
}

// KillConnections cuts every client connection (a network drop, a
// restart).
func (d *MySQLSourceDouble) KillConnections() {
	d.proto.killConnections()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.signal()
}

// Promote makes a replica a primary: read_only off, replicating from
// no one.
func (d *MySQLSourceDouble) Promote() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.replica = false
}

// PromoteWithOwnUUID makes a replica a primary as MySQL does: its own
// transactions from now on carry its own server_uuid (from 1), after the
// old source's, which its binlog keeps.
func (d *MySQLSourceDouble) PromoteWithOwnUUID() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.replica = false
	d.prior = d.executedLocked()
	d.sourceID, d.gno = d.UUID, 0
}

// Commit appends n transactions to the current binlog file.
func (d *MySQLSourceDouble) Commit(n int) { d.CommitAt(n, time.Now()) }

// CommitAt appends n transactions stamped at (their events' timestamp).
func (d *MySQLSourceDouble) CommitAt(n int, at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for range n {
		d.gno++
		d.appendTxn(d.gno, at)
	}
	d.signal()
}

// Rotate ends the current file with a Rotate event and starts the next
// (FLUSH BINARY LOGS).
func (d *MySQLSourceDouble) Rotate() {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur := d.files[len(d.files)-1]
	n, _ := strconv.Atoi(strings.TrimPrefix(cur.name, "binlog."))
	next := fmt.Sprintf("binlog.%06d", n+1)
	body := binary.LittleEndian.AppendUint64(nil, 4)
	body = append(body, next...)
	d.appendEvent(cur, 4, uint32(time.Now().Unix()), 0, body)
	cur.closed = true
	d.newFile(next, d.executedLocked())
	d.signal()
}

// PurgeTo removes the files before name (PURGE BINARY LOGS TO).
func (d *MySQLSourceDouble) PurgeTo(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.files) > 1 && d.files[0].name < name {
		for _, tr := range d.files[0].txns {
			d.purged = max(d.purged, tr.gno)
		}
		d.files = d.files[1:]
	}
}

// Files returns a copy of every binlog file the double holds.
func (d *MySQLSourceDouble) Files() map[string][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string][]byte{}
	for _, f := range d.files {
		out[f.name] = bytes.Clone(f.data)
	}
	return out
}

// Dumps returns the dump requests received so far.
func (d *MySQLSourceDouble) Dumps() []DumpRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.dumps)
}

// Executed is @@gtid_executed.
func (d *MySQLSourceDouble) Executed() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.executedLocked()
}

func (d *MySQLSourceDouble) executedLocked() string {
	if !d.gtidMode || (d.gno == 0 && d.prior == "") {
		return ""
	}
	if d.prior == "" {
		return fmt.Sprintf("%s:1-%d", d.sourceID, d.gno)
	}
	gs, _ := mysql.ParseMysqlGTIDSet(d.prior)
	if d.gno > 0 {
		_ = gs.Update(fmt.Sprintf("%s:1-%d", d.sourceID, d.gno))
	}
	return gs.String()
}

func (d *MySQLSourceDouble) signal() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// ---- writing binlog files ----

// mysql80PostHeaderLengths is the post-header length of each event type
// 1..41 as MySQL 8.0's format description event lists them
// (libbinlogevents: Format_description_event, LOG_EVENT_TYPES = 41).
var mysql80PostHeaderLengths = []byte{
	0, 13, 0, 8, 0, 0, 0, 0, 4, 0, 4, 0, 0, 0, 98, 0, 4, 26, 8, 0,
	0, 0, 8, 8, 8, 2, 0, 0, 0, 10, 10, 10, 42, 42, 0, 18, 52, 0, 10, 40,
	0,
}

const (
	evQuery        = 2
	evRotate       = 4
	evFDE          = 15
	evXid          = 16
	evTableMap     = 19
	evHeartbeat    = 27
	evWriteRowsV2  = 30
	evGTID         = 33
	evAnonGTID     = 34
	evPreviousGTID = 35

	flagBinlogInUse = 0x1
	flagArtificial  = 0x20
)

func (d *MySQLSourceDouble) newFile(name, previous string) {
	f := &binlogFile{name: name, data: []byte{0xfe, 'b', 'i', 'n'}}
	fde := binary.LittleEndian.AppendUint16(nil, 4)
	ver := make([]byte, 50)
	copy(ver, d.Version)
	fde = append(fde, ver...)
	fde = binary.LittleEndian.AppendUint32(fde, uint32(time.Now().Unix()))
	fde = append(fde, 19)
	fde = append(fde, mysql80PostHeaderLengths...)
	fde = append(fde, 1) // checksum algorithm: CRC32
	d.appendEvent(f, evFDE, uint32(time.Now().Unix()), flagBinlogInUse, fde)
	d.appendEvent(f, evPreviousGTID, uint32(time.Now().Unix()), 0, encodeGTIDSet(previous))
	d.files = append(d.files, f)
}

// encodeGTIDSet is the binary form of "uuid:1-N" (or of nothing) as in
// Previous_gtids and COM_BINLOG_DUMP_GTID.
func encodeGTIDSet(set string) []byte {
	if set == "" {
		return binary.LittleEndian.AppendUint64(nil, 0)
	}
	gs, err := mysql.ParseMysqlGTIDSet(set)
	if err != nil {
		panic(err)
	}
	return gs.Encode()
}

// appendEvent appends one event with its header and CRC32 to f.
func (d *MySQLSourceDouble) appendEvent(f *binlogFile, typ byte, ts uint32, flags uint16, body []byte) {
	size := 19 + len(body) + 4
	ev := make([]byte, 0, size)
	ev = binary.LittleEndian.AppendUint32(ev, ts)
	ev = append(ev, typ)
	ev = binary.LittleEndian.AppendUint32(ev, d.ServerID)
	ev = binary.LittleEndian.AppendUint32(ev, uint32(size))
	ev = binary.LittleEndian.AppendUint32(ev, uint32(len(f.data)+size))
	ev = binary.LittleEndian.AppendUint16(ev, flags)
	ev = append(ev, body...)
	ev = binary.LittleEndian.AppendUint32(ev, crc32.ChecksumIEEE(ev))
	f.data = append(f.data, ev...)
}

// CommitDDL appends one DDL transaction: a Gtid event and the statement
// alone in a Query event, no BEGIN and no Xid, as MySQL writes DDL.
func (d *MySQLSourceDouble) CommitDDL(stmt string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gno++
	f := d.files[len(d.files)-1]
	start := len(f.data)
	at := time.Now()
	d.appendGTID(f, d.gno, at)
	d.appendEvent(f, evQuery, uint32(at.Unix()), 0, queryBody("test", stmt))
	f.txns = append(f.txns, txnRange{uuid: d.sourceID, gno: d.gno, start: start, end: len(f.data)})
	d.signal()
}

// appendGTID writes the Gtid event of transaction gno (anonymous with
// gtid_mode OFF).
func (d *MySQLSourceDouble) appendGTID(f *binlogFile, gno int64, at time.Time) {
	ts := uint32(at.Unix())
	if d.gtidMode {
		g := []byte{1} // commit flag
		uuid := guuid.MustParse(d.sourceID)
		g = append(g, uuid[:]...)
		g = binary.LittleEndian.AppendUint64(g, uint64(gno))
		g = append(g, 2) // logical clock timestamps follow
		g = binary.LittleEndian.AppendUint64(g, uint64(gno-1))
		g = binary.LittleEndian.AppendUint64(g, uint64(gno))
		us := uint64(at.UnixMicro())
		g = append(g, byte(us), byte(us>>8), byte(us>>16), byte(us>>24), byte(us>>32), byte(us>>40), byte(us>>48))
		g = append(g, 0)                                       // transaction length (packed): unknown
		g = binary.LittleEndian.AppendUint32(g, uint32(80036)) // immediate server version
		d.appendEvent(f, evGTID, ts, 0, g)
		return
	}
	g := make([]byte, 42)
	g[0] = 1
	g[25] = 2
	d.appendEvent(f, evAnonGTID, ts, 0, g)
}

// appendTxn writes transaction gno: INSERT INTO test.t VALUES (gno, gno*7).
func (d *MySQLSourceDouble) appendTxn(gno int64, at time.Time) {
	f := d.files[len(d.files)-1]
	start := len(f.data)
	ts := uint32(at.Unix())
	d.appendGTID(f, gno, at)
	d.appendEvent(f, evQuery, ts, 0, queryBody("test", "BEGIN"))
	tm := make([]byte, 6, 64)
	tm[0] = 108                                  // table id
	tm = binary.LittleEndian.AppendUint16(tm, 1) // flags: end of statement
	tm = append(tm, 4)
	tm = append(tm, "test\x00"...)
	tm = append(tm, 1)
	tm = append(tm, "t\x00"...)
	tm = append(tm, 2, mysql.MYSQL_TYPE_LONGLONG, mysql.MYSQL_TYPE_LONGLONG) // columns
	tm = append(tm, 0)                                                       // no metadata
	tm = append(tm, 0)                                                       // null bitmap: NOT NULL
	d.appendEvent(f, evTableMap, ts, 0, tm)
	wr := make([]byte, 6, 64)
	wr[0] = 108
	wr = binary.LittleEndian.AppendUint16(wr, 1)
	wr = binary.LittleEndian.AppendUint16(wr, 2) // extra data: none
	wr = append(wr, 2, 0x03)                     // columns, all present
	wr = append(wr, 0)                           // null bitmap of the row
	wr = binary.LittleEndian.AppendUint64(wr, uint64(gno))
	wr = binary.LittleEndian.AppendUint64(wr, uint64(gno*7))
	d.appendEvent(f, evWriteRowsV2, ts, 0, wr)
	d.appendEvent(f, evXid, ts, 0, binary.LittleEndian.AppendUint64(nil, uint64(gno+1000)))
	f.txns = append(f.txns, txnRange{uuid: d.sourceID, gno: gno, start: start, end: len(f.data)})
}

func queryBody(db, q string) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 1) // thread id
	b = binary.LittleEndian.AppendUint32(b, 0)    // exec time
	b = append(b, byte(len(db)))
	b = binary.LittleEndian.AppendUint16(b, 0) // error code
	b = binary.LittleEndian.AppendUint16(b, 0) // status vars length
	b = append(b, db...)
	b = append(b, 0)
	return append(b, q...)
}

// ---- serving ----

type sourceHandler struct {
	textOnly
	d         *MySQLSourceDouble
	conn      *server.Conn
	heartbeat time.Duration
	noCRC     bool
}

func (h *sourceHandler) setConn(c *server.Conn) { h.conn = c }

func rows(names []string, vals ...[]any) (*mysql.Result, error) {
	rs, err := mysql.BuildSimpleTextResultset(names, vals)
	if err != nil {
		return nil, err
	}
	return mysql.NewResult(rs), nil
}

// HandleQuery answers what the streamer and go-mysql's syncer ask, as
// MySQL 8.0 answers it.
func (h *sourceHandler) HandleQuery(q string) (*mysql.Result, error) {
	d := h.d
	d.mu.Lock()
	gtidMode, executed, replica := "OFF", d.executedLocked(), d.replica
	if d.gtidMode {
		gtidMode = "ON"
	}
	var logs [][]any
	for _, f := range d.files {
		logs = append(logs, []any{f.name, strconv.Itoa(len(f.data)), "No"})
	}
	d.mu.Unlock()
	uq := strings.ToUpper(strings.TrimSpace(q))
	switch {
	case strings.HasPrefix(uq, "SET @MASTER_HEARTBEAT_PERIOD"):
		// "SET @master_heartbeat_period = N, @source_heartbeat_period = N" (ns)
		if _, v, ok := strings.Cut(q, "="); ok {
			v, _, _ = strings.Cut(v, ",")
			if ns, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && ns > 0 {
				h.heartbeat = time.Duration(ns)
			}
		}
		return nil, nil
	case strings.HasPrefix(uq, "SET @MASTER_BINLOG_CHECKSUM"):
		// A checksum-aware replica says NONE: the events the source makes
		// up (fake Rotate, heartbeat) then come without a checksum.
		h.noCRC = strings.Contains(uq, "'NONE'")
		return nil, nil
	case strings.HasPrefix(uq, "SET"):
		return nil, nil
	case strings.HasPrefix(uq, "SELECT VERSION(), @@VERSION_COMMENT"):
		return rows([]string{"VERSION()", "@@version_comment", "@@hostname", "@@server_id", "@@log_bin", "@@lower_case_table_names"},
			[]any{d.Version, "MySQL Community Server - GPL", "double", strconv.FormatUint(uint64(d.ServerID), 10), "1", "0"})
	case uq == "SELECT @@SERVER_UUID" || uq == "SELECT @@GLOBAL.SERVER_UUID":
		return rows([]string{"@@server_uuid"}, []any{d.UUID})
	// What a MySQL replica's receiver asks (rpl_replica.cc).
	case uq == "SELECT UNIX_TIMESTAMP()":
		return rows([]string{"UNIX_TIMESTAMP()"}, []any{strconv.FormatInt(time.Now().Unix(), 10)})
	case uq == "SELECT @@GLOBAL.SERVER_ID":
		return rows([]string{"@@GLOBAL.SERVER_ID"}, []any{strconv.FormatUint(uint64(d.ServerID), 10)})
	case uq == "SELECT @SOURCE_BINLOG_CHECKSUM" || uq == "SELECT @MASTER_BINLOG_CHECKSUM":
		return rows([]string{"@source_binlog_checksum"}, []any{"CRC32"})
	case uq == "SELECT @@GLOBAL.GTID_MODE":
		return rows([]string{"@@GLOBAL.GTID_MODE"}, []any{gtidMode})
	case uq == "SELECT @@LOG_BIN, @@SERVER_ID, @@READ_ONLY, @@BINLOG_FORMAT":
		return rows([]string{"@@log_bin", "@@server_id", "@@read_only", "@@binlog_format"},
			[]any{"1", strconv.FormatUint(uint64(d.ServerID), 10), map[bool]string{true: "1", false: "0"}[replica], "ROW"})
	case uq == "SELECT @@SERVER_UUID, @@GTID_MODE":
		return rows([]string{"@@server_uuid", "@@gtid_mode"}, []any{d.UUID, gtidMode})
	case strings.Contains(uq, "@@GLOBAL.GTID_EXECUTED") || uq == "SELECT @@GTID_EXECUTED":
		return rows([]string{"@@GLOBAL.gtid_executed"}, []any{executed})
	case uq == "SHOW GRANTS":
		return rows([]string{"Grants for root@%"}, []any{"GRANT ALL PRIVILEGES ON *.* TO `root`@`%` WITH GRANT OPTION"})
	case uq == "SHOW SLAVE HOSTS" || uq == "SHOW REPLICAS":
		return rows([]string{"Server_id", "Host", "Port", "Source_id", "Replica_UUID"})
	case uq == "SHOW SLAVE STATUS" || uq == "SHOW REPLICA STATUS":
		if replica {
			return rows([]string{"Replica_IO_State", "Source_Host"}, []any{"Waiting for source to send event", "source"})
		}
		return rows([]string{"Replica_IO_State", "Source_Host"})
	case uq == "SHOW BINARY LOGS":
		return rows([]string{"Log_name", "File_size", "Encrypted"}, logs...)
	case strings.HasPrefix(uq, "SHOW GLOBAL VARIABLES LIKE 'BINLOG_CHECKSUM'"):
		return rows([]string{"Variable_name", "Value"}, []any{"binlog_checksum", "CRC32"})
	case strings.HasPrefix(uq, "SHOW VARIABLES WHERE VARIABLE_NAME IN ('RPL_SEMI_SYNC"):
		return rows([]string{"Variable_name", "Value"})
	case strings.HasPrefix(uq, "PURGE BINARY LOGS TO "):
		name := strings.Trim(strings.TrimSpace(q[len("PURGE BINARY LOGS TO "):]), "'\"")
		d.PurgeTo(name)
		return nil, nil
	}
	return nil, mysql.NewError(mysql.ER_UNKNOWN_ERROR, "the MySQL source double does not answer: "+q)
}

func (h *sourceHandler) HandleRegisterSlave([]byte) error { return nil }

// HandleBinlogDump serves a file/position dump.
func (h *sourceHandler) HandleBinlogDump(pos mysql.Position) (*replication.BinlogStreamer, error) {
	d := h.d
	d.mu.Lock()
	d.dumps = append(d.dumps, DumpRequest{File: pos.Name, Pos: pos.Pos})
	idx := -1
	for i, f := range d.files {
		if f.name == pos.Name {
			idx = i
		}
	}
	d.mu.Unlock()
	if idx < 0 {
		return nil, mysql.NewError(mysql.ER_MASTER_FATAL_ERROR_READING_BINLOG, "Could not find first log file name in binary log index file")
	}
	d.mu.Lock()
	ok := eventBoundary(d.files[idx], int(pos.Pos))
	d.mu.Unlock()
	if !ok {
		return nil, mysql.NewError(mysql.ER_MASTER_FATAL_ERROR_READING_BINLOG,
			fmt.Sprintf("Client requested source to start replication from impossible position; the first event '%s' at %d, the last event read from '%s' at 4, the last byte read from '%s' at 4.", pos.Name, pos.Pos, pos.Name, pos.Name))
	}
	return h.stream(idx, int(pos.Pos), nil), nil
}

// HandleBinlogDumpGTID serves an auto-positioned dump.
func (h *sourceHandler) HandleBinlogDumpGTID(set *mysql.MysqlGTIDSet) (*replication.BinlogStreamer, error) {
	d := h.d
	d.mu.Lock()
	d.dumps = append(d.dumps, DumpRequest{GTID: true, Set: set.String()})
	purged, src, gtidMode := d.purged, d.sourceID, d.gtidMode
	d.mu.Unlock()
	if !gtidMode {
		return nil, mysql.NewError(mysql.ER_MASTER_FATAL_ERROR_READING_BINLOG, "The replication receiver thread cannot start in AUTO_POSITION mode: this server has GTID_MODE = OFF instead of ON.")
	}
	if purged > 0 {
		need, _ := mysql.ParseMysqlGTIDSet(fmt.Sprintf("%s:1-%d", src, purged))
		if !set.Contain(need) {
			return nil, mysql.NewError(mysql.ER_MASTER_FATAL_ERROR_READING_BINLOG, "Cannot replicate because the source purged required binary logs. Replicate the missing transactions from elsewhere, or provision a new replica from backup.")
		}
	}
	return h.stream(0, 4, set), nil
}

// stream feeds a dump from file idx at pos, skipping the transactions of
// skip, until the connection goes.
func (h *sourceHandler) stream(idx, pos int, skip *mysql.MysqlGTIDSet) *replication.BinlogStreamer {
	s := replication.NewBinlogStreamer()
	d := h.d
	go func() {
		send := func(raw []byte) bool {
			return s.AddEventToStreamer(&replication.BinlogEvent{RawData: raw}) == nil
		}
		d.mu.Lock()
		name := d.files[idx].name
		d.mu.Unlock()
		// A fake Rotate names the file and position before every file the
		// dump sends, even after the real Rotate that ended the previous
		// one (Binlog_sender::run).
		fakeRotate := func() bool {
			rot := binary.LittleEndian.AppendUint64(nil, uint64(max(pos, 4)))
			rot = append(rot, name...)
			return send(artificial(evRotate, d.ServerID, 0, rot, !h.noCRC))
		}
		if !fakeRotate() {
			return
		}
		first := pos > 4
		for {
			d.mu.Lock()
			if idx >= len(d.files) || d.files[idx].name != name {
				// Purged under the dump.
				d.mu.Unlock()
				s.AddErrorToStreamer(errors.New("binlog file purged during the dump"))
				return
			}
			f := d.files[idx]
			if first {
				// Started past the header: the file's format description
				// goes first, with log_pos 0 and the in-use flag cleared
				// (Binlog_sender::send_format_description_event).
				first = false
				size := binary.LittleEndian.Uint32(f.data[4+9:])
				fde := bytes.Clone(f.data[4 : 4+size-4])
				binary.LittleEndian.PutUint32(fde[13:], 0)
				binary.LittleEndian.PutUint16(fde[17:], binary.LittleEndian.Uint16(fde[17:])&^flagBinlogInUse)
				fde = binary.LittleEndian.AppendUint32(fde, crc32.ChecksumIEEE(fde))
				if !send(fde) {
					d.mu.Unlock()
					return
				}
			}
			start := max(pos, 4)
			var out [][]byte
			for p := start; p < len(f.data); {
				size := int(binary.LittleEndian.Uint32(f.data[p+9:]))
				ev := f.data[p : p+size]
				if skip != nil {
					if tr, ok := txnAt(f, p); ok && skip.Contain(gtidSetOf(tr.uuid, tr.gno)) {
						p = tr.end
						continue
					}
				}
				out = append(out, ev)
				p += size
			}
			pos = len(f.data)
			closed := f.closed
			changed := d.changed
			d.mu.Unlock()
			for _, ev := range out {
				if !send(ev) {
					return
				}
			}
			if closed {
				idx++
				d.mu.Lock()
				if idx < len(d.files) {
					name = d.files[idx].name
				}
				d.mu.Unlock()
				pos = 4
				if !fakeRotate() {
					return
				}
				continue
			}
			select {
			case <-changed:
			case <-time.After(h.heartbeat):
				if !send(artificial(evHeartbeat, d.ServerID, uint32(pos), []byte(name), !h.noCRC)) {
					return
				}
			}
			if h.conn.Closed() {
				return
			}
		}
	}()
	return s
}

// eventBoundary reports whether pos is where an event of f starts (or
// its end).
func eventBoundary(f *binlogFile, pos int) bool {
	if pos == 4 || pos == len(f.data) {
		return true
	}
	for p := 4; p < len(f.data); p += int(binary.LittleEndian.Uint32(f.data[p+9:])) {
		if p == pos {
			return true
		}
	}
	return false
}

// txnAt returns the transaction that starts at offset p.
func txnAt(f *binlogFile, p int) (txnRange, bool) {
	for _, tr := range f.txns {
		if tr.start == p {
			return tr, true
		}
	}
	return txnRange{}, false
}

func gtidSetOf(uuid string, gno int64) *mysql.MysqlGTIDSet {
	gs, _ := mysql.ParseMysqlGTIDSet(fmt.Sprintf("%s:%d", uuid, gno))
	return gs.(*mysql.MysqlGTIDSet)
}

// artificial builds an event the source makes up for the dump (fake
// Rotate, heartbeat): timestamp 0, the artificial flag, a CRC32.
func artificial(typ byte, serverID, logPos uint32, body []byte, crc bool) []byte {
	size := 19 + len(body)
	if crc {
		size += 4
	}
	ev := make([]byte, 0, size)
	ev = binary.LittleEndian.AppendUint32(ev, 0)
	ev = append(ev, typ)
	ev = binary.LittleEndian.AppendUint32(ev, serverID)
	ev = binary.LittleEndian.AppendUint32(ev, uint32(size))
	ev = binary.LittleEndian.AppendUint32(ev, logPos)
	ev = binary.LittleEndian.AppendUint16(ev, flagArtificial)
	ev = append(ev, body...)
	if !crc {
		return ev
	}
	return binary.LittleEndian.AppendUint32(ev, crc32.ChecksumIEEE(ev))
}
