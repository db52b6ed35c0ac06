package apply

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1" // mysql_native_password is SHA-1 by definition
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// source serves the planned events to a MariaDB replica as if it were a
// primary: the handshake, the handful of queries a replica's IO thread
// asks (slave.cc get_master_version_and_clock), COM_REGISTER_SLAVE and
// COM_BINLOG_DUMP, which it answers as sql_repl.cc does: an artificial
// Rotate naming the file, the file's Format_description event, then the
// events, and heartbeats when it has nothing more to send.
//
// To a MySQL replica (mysql set) it presents itself as MySQL 8.0: the
// handshake offers caching_sha2_password (the plugin MySQL 8 replicas use
// by default; mysql_native_password is off by default in 8.4 and gone in
// 9.x), whose fast path it always completes since it made the password;
// it answers the receiver's queries (rpl_replica.cc
// get_master_version_and_clock, get_master_uuid, io_thread_init_commands:
// the clock, server id, heartbeat period, checksum, GTID_MODE, its own
// server UUID, which differs from the target's and every source's, and
// the replica's UUID) and serves COM_BINLOG_DUMP by file and position as
// for MariaDB, with each file's Previous_gtids when the dump starts before
// it, as MySQL's Binlog_sender does. COM_BINLOG_DUMP_GTID is refused: the
// plan's cut is by position, and the target is told SOURCE_AUTO_POSITION=0.
//
// The files are named to the replica "tidemark-pitr.NNNNNN" by their index
// in Params.Files, never by their own names, which may repeat.
type source struct {
	ln        net.Listener
	files     []File
	plan      *PlanResult
	serverID  uint32 // differs from the target's
	user      string
	password  string
	heartbeat time.Duration
	log       *slog.Logger
	// tls, when set, is the server side of TLS: every replica must log in
	// over it (a plaintext one is refused).
	tls  *sourceTLS
	host string // the host the target is told to connect to
	// mysql: the replica is MySQL's (see above); uuid is the server UUID
	// announced to it.
	mysql      bool
	uuid       string
	nativeAuth bool
	// statusQ is the target's replica status statement (for waitApplied).
	statusQ string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sent   atomic.Int64 // bytes of events sent
	dumps  atomic.Int64 // COM_BINLOG_DUMP requests served
	mu     sync.Mutex
	conns  map[net.Conn]bool
	err    error // first serving failure that is ours (a file that cannot be read)
	// refused is the first replica refused for its TLS (none, or a failed
	// handshake): the target will retry for ever, so Apply ends on it.
	refused     error
	tlsSessions atomic.Int64  // replica logins served over TLS
	tlsVersion  atomic.Uint32 // of the last one
}

const sourceFilePrefix = "tidemark-pitr."

// testHookCut, when set (by tests only, never concurrently with other
// applies), is called after every event sent; true cuts the connection
// there, as a network failure would.
var testHookCut func() bool

// testHookRefuseLogin makes the source refuse every login (tests only).
var testHookRefuseLogin bool

// testHookPlainReplica makes Apply tell the target MASTER_SSL=0 while
// the source requires TLS (tests only).
var testHookPlainReplica bool

// testHookDumps, when set, receives the number of dumps a source served
// when it closes.
var testHookDumps func(int64)

func sourceFileName(i int) string { return fmt.Sprintf("%s%06d", sourceFilePrefix, i+1) }

// mysqlSource makes a source speak to a MySQL replica.
type mysqlSource struct {
	uuid string // the server UUID announced
	// nativeAuth offers mysql_native_password (to MySQL 5.7, whose client
	// defaults to it) instead of caching_sha2_password.
	nativeAuth bool
}

// newSource starts serving; my, when set, makes it a MySQL source.
func newSource(ctx context.Context, addr string, files []File, plan *PlanResult, serverID uint32, st *sourceTLS, my *mysqlSource, log *slog.Logger) (*source, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("replication source: listen on %s: %w", addr, err)
	}
	pw := make([]byte, 18)
	if _, err := rand.Read(pw); err != nil {
		_ = ln.Close()
		return nil, err
	}
	s := &source{
		ln: ln, files: files, plan: plan, serverID: serverID,
		user: "tidemark_pitr", password: fmt.Sprintf("%x", pw),
		heartbeat: time.Second, log: log, conns: map[net.Conn]bool{}, tls: st,
	}
	if my != nil {
		s.mysql, s.uuid, s.nativeAuth = true, my.uuid, my.nativeAuth
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

func (s *source) addr() *net.TCPAddr { return s.ln.Addr().(*net.TCPAddr) }

// close stops listening and ends every connection; it waits for them.
func (s *source) close() error {
	if testHookDumps != nil {
		defer func() { testHookDumps(s.dumps.Load()) }()
	}
	s.cancel()
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *source) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// refusal returns the first replica refused for its TLS, or nil.
func (s *source) refusal() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

func (s *source) refuse(err error) error {
	s.mu.Lock()
	if s.refused == nil {
		s.refused = err
	}
	s.mu.Unlock()
	return err
}

func (s *source) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.ctx.Err() != nil {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			err := s.serve(c)
			if err != nil && s.ctx.Err() == nil {
				s.log.Debug("replication source: connection ended", "remote", c.RemoteAddr().String(), "err", err)
			}
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			_ = c.Close()
		}()
	}
}

// Protocol constants (MySQL client/server protocol).
const (
	capLongPassword   = 1
	capLongFlag       = 4
	capConnectWithDB  = 8
	capProtocol41     = 0x200
	capSSL            = 0x800
	capTransactions   = 0x2000
	capSecureConn     = 0x8000
	capPluginAuth     = 0x80000
	capPluginAuthLenc = 0x200000
	serverCaps        = capLongPassword | capLongFlag | capConnectWithDB | capProtocol41 | capTransactions | capSecureConn | capPluginAuth | capPluginAuthLenc

	comQuit           = 0x01
	comQuery          = 0x03
	comPing           = 0x0e
	comBinlogDump     = 0x12
	comRegisterSlave  = 0x15
	comBinlogDumpGTID = 0x1e
	maxPacket         = 0xffffff
	statusAutocommit  = 0x0002
	utf8GeneralCI     = 33
	typeVarString     = 0xfd
	sendAnnotateRows  = 2 // COM_BINLOG_DUMP flag BINLOG_SEND_ANNOTATE_ROWS_EVENT
	evAnnotateRows    = 160
	erAccessDeniedNum = 1045
)

// pconn is one client connection: packets with sequence numbers.
type pconn struct {
	c   net.Conn
	r   *bufio.Reader
	w   *bufio.Writer
	seq byte
}

func (p *pconn) readPacket() ([]byte, error) {
	var out []byte
	for {
		var h [4]byte
		if _, err := io.ReadFull(p.r, h[:]); err != nil {
			return nil, err
		}
		n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
		p.seq = h[3] + 1
		b := make([]byte, n)
		if _, err := io.ReadFull(p.r, b); err != nil {
			return nil, err
		}
		out = append(out, b...)
		if n < maxPacket {
			return out, nil
		}
	}
}

// writePacket writes one payload made of parts (split into 16 MiB packets).
func (p *pconn) writePacket(parts ...[]byte) error {
	total := 0
	for _, b := range parts {
		total += len(b)
	}
	if total < maxPacket {
		h := [4]byte{byte(total), byte(total >> 8), byte(total >> 16), p.seq}
		p.seq++
		if _, err := p.w.Write(h[:]); err != nil {
			return err
		}
		for _, b := range parts {
			if _, err := p.w.Write(b); err != nil {
				return err
			}
		}
		return nil
	}
	all := make([]byte, 0, total)
	for _, b := range parts {
		all = append(all, b...)
	}
	for {
		n := min(len(all), maxPacket)
		h := [4]byte{byte(n), byte(n >> 8), byte(n >> 16), p.seq}
		p.seq++
		if _, err := p.w.Write(h[:]); err != nil {
			return err
		}
		if _, err := p.w.Write(all[:n]); err != nil {
			return err
		}
		all = all[n:]
		if n < maxPacket {
			return nil
		}
	}
}

func (p *pconn) ok() error {
	return p.writePacket([]byte{0, 0, 0, statusAutocommit, 0, 0, 0})
}

func (p *pconn) errPacket(code uint16, msg string) error {
	b := []byte{0xff, byte(code), byte(code >> 8), '#'}
	b = append(b, "HY000"...)
	b = append(b, msg...)
	if err := p.writePacket(b); err != nil {
		return err
	}
	return p.w.Flush()
}

func lenenc(b []byte, n uint64) []byte {
	switch {
	case n < 251:
		return append(b, byte(n))
	case n < 1<<16:
		return append(b, 0xfc, byte(n), byte(n>>8))
	case n < 1<<24:
		return append(b, 0xfd, byte(n), byte(n>>8), byte(n>>16))
	}
	b = append(b, 0xfe)
	return binary.LittleEndian.AppendUint64(b, n)
}

func lenencStr(b []byte, s string) []byte { return append(lenenc(b, uint64(len(s))), s...) }

// sqlNull stands for NULL in a resultSet row.
const sqlNull = "\x00NULL"

// resultSet writes a text result set of string columns.
func (p *pconn) resultSet(cols []string, rows [][]string) error {
	if err := p.writePacket(lenenc(nil, uint64(len(cols)))); err != nil {
		return err
	}
	for _, c := range cols {
		b := lenencStr(nil, "def")
		b = lenencStr(b, "")
		b = lenencStr(b, "")
		b = lenencStr(b, "")
		b = lenencStr(b, c)
		b = lenencStr(b, c)
		b = append(b, 0x0c, utf8GeneralCI, 0, 0, 1, 0, 0, typeVarString, 0, 0, 0, 0, 0)
		if err := p.writePacket(b); err != nil {
			return err
		}
	}
	eof := []byte{0xfe, 0, 0, statusAutocommit, 0}
	if err := p.writePacket(eof); err != nil {
		return err
	}
	for _, r := range rows {
		var b []byte
		for _, v := range r {
			if v == sqlNull {
				b = append(b, 0xfb)
				continue
			}
			b = lenencStr(b, v)
		}
		if err := p.writePacket(b); err != nil {
			return err
		}
	}
	if err := p.writePacket(eof); err != nil {
		return err
	}
	return p.w.Flush()
}

func (s *source) serve(c net.Conn) error {
	p := &pconn{c: c, r: bufio.NewReader(c), w: bufio.NewWriterSize(c, 256<<10)}
	// Handshake v10 with mysql_native_password.
	scramble := make([]byte, 20)
	if _, err := rand.Read(scramble); err != nil {
		return err
	}
	for i := range scramble {
		scramble[i] = 0x21 + scramble[i]%94 // printable, never NUL
	}
	version, plugin := "5.5.5-10.11.0-tidemark-pitr", "mysql_native_password"
	if s.mysql {
		version, plugin = "8.0.40-tidemark-pitr", "caching_sha2_password"
		if s.nativeAuth {
			plugin = "mysql_native_password"
		}
	}
	hs := []byte{10}
	hs = append(hs, version...)
	hs = append(hs, 0)
	hs = binary.LittleEndian.AppendUint32(hs, 1)
	hs = append(hs, scramble[:8]...)
	hs = append(hs, 0)
	caps := uint32(serverCaps)
	if s.tls != nil {
		caps |= capSSL
	}
	hs = binary.LittleEndian.AppendUint16(hs, uint16(caps&0xffff))
	hs = append(hs, utf8GeneralCI)
	hs = binary.LittleEndian.AppendUint16(hs, statusAutocommit)
	hs = binary.LittleEndian.AppendUint16(hs, uint16(caps>>16))
	hs = append(hs, 21)
	hs = append(hs, make([]byte, 10)...)
	hs = append(hs, scramble[8:]...)
	hs = append(hs, 0)
	hs = append(hs, plugin...)
	hs = append(hs, 0)
	p.seq = 0
	if err := p.writePacket(hs); err != nil {
		return err
	}
	if err := p.w.Flush(); err != nil {
		return err
	}
	resp, err := p.readPacket()
	if err != nil {
		return err
	}
	if resp, err = s.startTLS(p, resp); err != nil {
		return err
	}
	user, auth, clientPlugin, err := parseHandshakeResponse(resp)
	if err != nil {
		return p.errPacket(erAccessDeniedNum, "bad handshake: "+err.Error())
	}
	if clientPlugin != "" && clientPlugin != plugin {
		// The client answered for another plugin: ask again for ours
		// (AuthSwitchRequest) with the same scramble.
		sw := append([]byte{0xfe}, plugin...)
		sw = append(sw, 0)
		sw = append(sw, scramble...)
		sw = append(sw, 0)
		if err := p.writePacket(sw); err != nil {
			return err
		}
		if err := p.w.Flush(); err != nil {
			return err
		}
		if auth, err = p.readPacket(); err != nil {
			return err
		}
	}
	sha2 := plugin == "caching_sha2_password"
	ok := checkNativePassword(scramble, s.password, auth)
	if sha2 {
		ok = checkCachingSHA2(scramble, s.password, auth)
	}
	if user != s.user || !ok || testHookRefuseLogin {
		return p.errPacket(erAccessDeniedNum, fmt.Sprintf("Access denied for user '%s'", user))
	}
	if sha2 {
		// caching_sha2_password's fast path: the scramble matched.
		if err := p.writePacket([]byte{0x01, 0x03}); err != nil {
			return err
		}
	}
	if err := p.ok(); err != nil {
		return err
	}
	if err := p.w.Flush(); err != nil {
		return err
	}
	for {
		pkt, err := p.readPacket()
		if err != nil {
			return err
		}
		if len(pkt) == 0 {
			return errors.New("empty command packet")
		}
		switch pkt[0] {
		case comQuit:
			return nil
		case comPing, comRegisterSlave:
			if err := p.ok(); err != nil {
				return err
			}
			err = p.w.Flush()
		case comQuery:
			err = s.query(p, string(pkt[1:]))
		case comBinlogDump:
			s.dumps.Add(1)
			return s.dump(p, pkt[1:])
		case comBinlogDumpGTID:
			return p.errPacket(1236, "the Tidemark replication source serves by file and position only (SOURCE_AUTO_POSITION=0)")
		default:
			err = p.errPacket(1047, fmt.Sprintf("command %d not supported by the Tidemark replication source", pkt[0]))
		}
		if err != nil {
			return err
		}
	}
}

// errPlainReplica: a replica logged in without TLS while the source
// requires it.
var errPlainReplica = errors.New("a replica logged in without TLS, which the source requires (the target was told MASTER_SSL=1: is its server built without TLS, or is another client connecting?)")

// sslRequestLen is the length of the SSL request packet: the handshake
// response's fixed part (capabilities, max packet, charset, filler) alone.
const sslRequestLen = 32

// startTLS handles the client's first packet when the source speaks TLS:
// an SSL request (CLIENT_SSL, 32 bytes) is followed by the TLS handshake on
// the connection and then the real handshake response, which it returns.
// A full handshake response instead (a replica told MASTER_SSL=0, or a
// client without TLS) is refused with an error packet and recorded. With
// no TLS it returns resp as it is.
func (s *source) startTLS(p *pconn, resp []byte) ([]byte, error) {
	if s.tls == nil {
		return resp, nil
	}
	if len(resp) < 4 || binary.LittleEndian.Uint32(resp)&capSSL == 0 || len(resp) != sslRequestLen {
		err := s.refuse(errPlainReplica)
		return nil, errors.Join(err, p.errPacket(erAccessDeniedNum, "Access denied: the Tidemark replication source requires TLS (CHANGE MASTER ... MASTER_SSL=1)"))
	}
	// The client sends its TLS ClientHello right after the SSL request,
	// so the reader may hold some of it already: TLS reads through it.
	raw := &bufferedConn{Conn: p.c, r: p.r}
	tc := tls.Server(raw, s.tls.cfg)
	_ = p.c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := tc.HandshakeContext(s.ctx); err != nil {
		if s.ctx.Err() != nil {
			return nil, err
		}
		return nil, s.refuse(fmt.Errorf("the TLS handshake with the target's replica failed on the source's side: %w", err))
	}
	_ = p.c.SetDeadline(time.Time{})
	s.tlsSessions.Add(1)
	s.tlsVersion.Store(uint32(tc.ConnectionState().Version))
	p.r = bufio.NewReader(tc)
	p.w = bufio.NewWriterSize(tc, 256<<10)
	resp, err := p.readPacket()
	if err != nil {
		return nil, err
	}
	if len(resp) < 4 || binary.LittleEndian.Uint32(resp)&capSSL == 0 {
		return nil, p.errPacket(erAccessDeniedNum, "bad handshake: CLIENT_SSL dropped after the TLS handshake")
	}
	return resp, nil
}

// bufferedConn reads a connection through the bufio.Reader that already
// holds its next bytes.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// parseHandshakeResponse reads a HandshakeResponse41: the user, the auth
// data and the plugin the client computed it for ("" when it names none).
func parseHandshakeResponse(b []byte) (user string, auth []byte, plugin string, err error) {
	if len(b) < 32 {
		return "", nil, "", errors.New("handshake response too short")
	}
	caps := binary.LittleEndian.Uint32(b)
	if caps&capProtocol41 == 0 {
		return "", nil, "", errors.New("client does not speak protocol 4.1")
	}
	b = b[32:]
	i := strings.IndexByte(string(b), 0)
	if i < 0 {
		return "", nil, "", errors.New("no user name")
	}
	user, b = string(b[:i]), b[i+1:]
	switch {
	case caps&capPluginAuthLenc != 0:
		if len(b) == 0 {
			return "", nil, "", errors.New("no auth data")
		}
		n := int(b[0])
		if n >= 251 || len(b) < 1+n {
			return "", nil, "", errors.New("bad auth data length")
		}
		auth, b = b[1:1+n], b[1+n:]
	case caps&capSecureConn != 0:
		if len(b) == 0 || len(b) < 1+int(b[0]) {
			return "", nil, "", errors.New("bad auth data length")
		}
		auth, b = b[1:1+int(b[0])], b[1+int(b[0]):]
	default:
		return "", nil, "", errors.New("old authentication is not supported")
	}
	if caps&capConnectWithDB != 0 {
		if i := strings.IndexByte(string(b), 0); i >= 0 {
			b = b[i+1:]
		} else {
			b = nil
		}
	}
	if caps&capPluginAuth != 0 {
		if i := strings.IndexByte(string(b), 0); i >= 0 {
			plugin = string(b[:i])
		} else {
			plugin = string(b)
		}
	}
	return user, auth, plugin, nil
}

// checkCachingSHA2 verifies a caching_sha2_password fast-path response:
// SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + scramble).
func checkCachingSHA2(scramble []byte, password string, auth []byte) bool {
	return subtle.ConstantTimeCompare(cachingSHA2Scramble(scramble, password), auth) == 1
}

// cachingSHA2Scramble is what a client sends for password under
// caching_sha2_password's fast path, given the server's scramble.
func cachingSHA2Scramble(scramble []byte, password string) []byte {
	h1 := sha256.Sum256([]byte(password))
	h2 := sha256.Sum256(h1[:])
	m := sha256.New()
	m.Write(h2[:])
	m.Write(scramble)
	out := m.Sum(nil)
	for i := range out {
		out[i] ^= h1[i]
	}
	return out
}

// checkNativePassword verifies a mysql_native_password response:
// SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))).
func checkNativePassword(scramble []byte, password string, auth []byte) bool {
	h1 := sha1.Sum([]byte(password))
	h2 := sha1.Sum(h1[:])
	m := sha1.New()
	m.Write(scramble)
	m.Write(h2[:])
	want := m.Sum(nil)
	for i := range want {
		want[i] ^= h1[i]
	}
	return subtle.ConstantTimeCompare(want, auth) == 1
}

// query answers what a MariaDB replica's IO thread asks before the dump.
func (s *source) query(p *pconn, q string) error {
	norm := strings.ToUpper(strings.TrimSpace(q))
	s.log.Debug("replication source: query", "query", q)
	one := func(v string) error { return p.resultSet([]string{"v"}, [][]string{{v}}) }
	switch {
	case strings.HasPrefix(norm, "SET "):
		if m := replicaUUIDRE.FindStringSubmatch(q); m != nil {
			s.log.Debug("replication source: a MySQL replica", "replica_uuid", m[1], "source_uuid", s.uuid)
		}
		if err := p.ok(); err != nil {
			return err
		}
		return p.w.Flush()
	case norm == "SELECT @@GLOBAL.SERVER_UUID" || norm == "SELECT @@SERVER_UUID":
		return one(s.uuid)
	case norm == "SELECT @@GLOBAL.GTID_MODE" || norm == "SELECT @@GTID_MODE":
		// What the files hold: a MySQL replica refuses a source whose
		// mode cannot give it the transactions it will receive.
		if s.plan.mysqlGTIDs || !s.plan.anonymous {
			return one("ON")
		}
		return one("OFF")
	case norm == "SELECT UNIX_TIMESTAMP()":
		return one(strconv.FormatInt(time.Now().Unix(), 10))
	case norm == "SHOW VARIABLES LIKE 'SERVER_ID'":
		return p.resultSet([]string{"Variable_name", "Value"}, [][]string{{"server_id", strconv.FormatUint(uint64(s.serverID), 10)}})
	case norm == "SELECT @@GLOBAL.SERVER_ID" || norm == "SELECT @@SERVER_ID":
		return one(strconv.FormatUint(uint64(s.serverID), 10))
	case norm == "SELECT @MASTER_BINLOG_CHECKSUM" || norm == "SELECT @SOURCE_BINLOG_CHECKSUM":
		if s.plan.checksum {
			return one("CRC32")
		}
		return one("NONE")
	case norm == "SELECT @@GLOBAL.GTID_DOMAIN_ID":
		return one("0")
	case strings.HasPrefix(norm, "SELECT BINLOG_GTID_POS("):
		// A file/position replica asks for the GTID position there, to be
		// able to switch to GTID mode later; it copes with not knowing.
		return one(sqlNull)
	case strings.HasPrefix(norm, "SHOW VARIABLES LIKE "):
		return p.resultSet([]string{"Variable_name", "Value"}, nil) // not set here
	}
	s.log.Debug("replication source: unknown query", "query", q)
	return p.errPacket(1193, "Unknown system variable or statement for the Tidemark replication source: "+q)
}

var replicaUUIDRE = regexp.MustCompile(`(?i)@(?:replica|slave)_uuid\s*=\s*'([^']*)'`)

// dump streams the planned events from the position the replica asks for.
func (s *source) dump(p *pconn, req []byte) error {
	if len(req) < 10 {
		return p.errPacket(1236, "malformed COM_BINLOG_DUMP")
	}
	pos := uint64(binary.LittleEndian.Uint32(req))
	flags := binary.LittleEndian.Uint16(req[4:])
	name := string(req[10:])
	first := -1
	for i := range s.files {
		if sourceFileName(i) == name {
			first = i
		}
	}
	if name == "" {
		first, pos = max(s.plan.firstFile, 0), 4
	}
	if first < 0 {
		return p.errPacket(1236, fmt.Sprintf("Could not find first log file name in binary log index file (%q is not served here)", name))
	}
	if pos < 4 {
		pos = 4
	}
	s.log.Debug("replication source: dump", "file", name, "pos", pos, "flags", flags)
	checksum := s.plan.checksum
	lastEnd := pos
	lastName := name
	for i := first; i < len(s.files) && i <= s.plan.lastFile; i++ {
		fp := s.plan.files[i]
		if len(fp.ranges) == 0 && i != first {
			continue
		}
		from := uint64(4)
		if i == first {
			from = pos
		}
		if err := s.sendRotate(p, sourceFileName(i), from, checksum); err != nil {
			return err
		}
		var err error
		checksum, lastEnd, err = s.sendFile(p, i, from, flags)
		if err != nil {
			return err
		}
		lastName = sourceFileName(i)
		if err := p.w.Flush(); err != nil {
			return err
		}
	}
	// Everything is sent: keep the connection alive until Apply ends it.
	t := time.NewTicker(s.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return nil
		case <-t.C:
		}
		ev := make([]byte, headerLen, headerLen+len(lastName)+4)
		ev = append(ev, lastName...)
		if err := s.sendArtificial(p, ev, evHeartbeat, uint32(lastEnd), checksum); err != nil {
			return err
		}
		if err := p.w.Flush(); err != nil {
			return err
		}
	}
}

// sendArtificial fills in an artificial event's header and checksum and sends it.
func (s *source) sendArtificial(p *pconn, ev []byte, typ byte, logPos uint32, checksum bool) error {
	if checksum {
		ev = append(ev, 0, 0, 0, 0)
	}
	binary.LittleEndian.PutUint32(ev[0:], 0)
	ev[4] = typ
	binary.LittleEndian.PutUint32(ev[5:], s.serverID)
	binary.LittleEndian.PutUint32(ev[9:], uint32(len(ev)))
	binary.LittleEndian.PutUint32(ev[13:], logPos)
	binary.LittleEndian.PutUint16(ev[17:], flagArtificial)
	if checksum {
		setCRC(ev)
	}
	return p.writePacket([]byte{0}, ev)
}

func (s *source) sendRotate(p *pconn, name string, pos uint64, checksum bool) error {
	ev := make([]byte, headerLen+8, headerLen+8+len(name)+4)
	binary.LittleEndian.PutUint64(ev[headerLen:], pos)
	ev = append(ev, name...)
	return s.sendArtificial(p, ev, evRotate, 0, checksum)
}

// sendFile sends file i's Format_description event and then the planned
// events at or after from. It returns the file's checksum setting and the
// end of the last event sent.
func (s *source) sendFile(p *pconn, i int, from uint64, flags uint16) (bool, uint64, error) {
	fp := s.plan.files[i]
	rc, err := s.files[i].Open(s.ctx)
	if err != nil {
		return false, 0, s.fail(fmt.Errorf("open binlog file %s (file %d): %w", s.files[i].Name, i+1, err))
	}
	defer func() { _ = rc.Close() }()
	rd, err := newReader(rc, s.files[i].Name)
	if err != nil {
		return false, 0, s.fail(err)
	}
	r := 0 // current range
	lastEnd := from
	for {
		h, ev, pos, err := rd.next()
		if errors.Is(err, io.EOF) || errors.Is(err, errTruncated) {
			break
		}
		if err != nil {
			return false, 0, s.fail(err)
		}
		if h.Type == evMySQLPrevGTIDs {
			// Part of the file's head: sent when the dump starts at or
			// before it, as MySQL does; a replica writes its own.
			if pos >= from {
				if err := p.writePacket([]byte{0}, ev); err != nil {
					return false, 0, err
				}
				lastEnd = pos + uint64(h.Size)
			}
			continue
		}
		if h.Type == evFormatDesc {
			fdeEv := append([]byte(nil), ev...)
			fdeEv[17] &^= flagInUse
			if from > 4 {
				// As a primary does when a replica starts inside a file: the
				// event moves no position, and its "created" does not make the
				// replica drop the temporary tables of the stream so far.
				binary.LittleEndian.PutUint32(fdeEv[13:], 0)
				binary.LittleEndian.PutUint32(fdeEv[headerLen+fdeCreatedOffset:], 0)
			}
			if rd.fde.checksum {
				setCRC(fdeEv)
			}
			if err := p.writePacket([]byte{0}, fdeEv); err != nil {
				return false, 0, err
			}
			continue
		}
		for r < len(fp.ranges) && pos >= fp.ranges[r][1] {
			r++
		}
		if r == len(fp.ranges) {
			break
		}
		if pos < from || pos < fp.ranges[r][0] {
			continue
		}
		if h.Type == evAnnotateRows && flags&sendAnnotateRows == 0 {
			continue
		}
		if err := p.writePacket([]byte{0}, ev); err != nil {
			return false, 0, err
		}
		s.sent.Add(int64(len(ev)))
		if testHookCut != nil && testHookCut() {
			_ = p.w.Flush() // what was sent arrives, then the cut
			return false, 0, errors.New("connection cut by a test")
		}
		lastEnd = pos + uint64(h.Size)
	}
	if rd.fde == nil {
		return false, 0, s.fail(fmt.Errorf("binlog file %s has no format description event", s.files[i].Name))
	}
	return rd.fde.checksum, lastEnd, nil
}

func (s *source) fail(err error) error {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	return err
}
