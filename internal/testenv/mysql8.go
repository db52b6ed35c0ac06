package testenv

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// MySQL8Double is a test DOUBLE for a MySQL 8.0 server: this machine has
// no MySQL 8 (Debian ships MariaDB only), and Tidemark branches on the
// flavor for its lock protocol, its coordinates and its session settings.
//
// It is a proxy in front of a real MariaDB that passes the protocol through
// untouched but gives the server MySQL 8's personality where Tidemark asks:
// VERSION() and @@version_comment say MySQL 8.0.36, @@server_uuid exists,
// @@GLOBAL.gtid_executed reads MariaDB's gtid_binlog_pos, and LOCK INSTANCE
// FOR BACKUP, UNLOCK INSTANCE and max_execution_time are accepted (and do
// nothing). Every statement is logged per connection, in one global order,
// and a statement can be made to fail with a given server error.
//
// What it cannot show: MySQL's own semantics (LOCK INSTANCE FOR BACKUP
// blocking DDL, performance_schema, MySQL's SQL dialect beyond what MariaDB
// shares). Tests on it check which statements Tidemark sends, where and in
// what order, not how MySQL would execute them.
type MySQL8Double struct {
	DSN     string // root over TCP, like MariaDB.RootDSN
	Version string

	ln      net.Listener
	backend string
	mu      sync.Mutex
	seq     int
	log     []Statement
	fail    map[string]*DoubleError
	conns   map[net.Conn]bool
	nextID  int
	closing bool
	// hook answers statements of a personality layered on the double
	// (CloneDouble); it runs outside mu, on the client's goroutine, so a
	// long statement blocks only its connection.
	hook func(conn int, query string) (sql string, fail *DoubleError, handled bool)
	// threads maps a client connection to the backend's connection id
	// (what CONNECTION_ID() returns through the proxy).
	threads map[int]uint32
}

// Statement is one COM_QUERY or COM_STMT_PREPARE the double saw.
type Statement struct {
	Seq  int    // global order
	Conn int    // client connection, numbered from 1 in accept order
	SQL  string // as the client sent it
}

// DoubleError is a server error the double returns instead of running a
// statement.
type DoubleError struct {
	Number   uint16
	SQLState string
	Message  string
}

// StartMySQL8Double starts the double in front of m; a cleanup stops it.
func StartMySQL8Double(t testing.TB, m *MariaDB) *MySQL8Double {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &MySQL8Double{
		DSN: "root@tcp(" + ln.Addr().String() + ")/", Version: "8.0.36",
		ln: ln, backend: fmt.Sprintf("127.0.0.1:%d", m.Port),
		fail: map[string]*DoubleError{}, conns: map[net.Conn]bool{}, threads: map[int]uint32{},
	}
	go d.accept()
	t.Cleanup(d.Close)
	return d
}

// Close stops accepting and cuts every connection.
func (d *MySQL8Double) Close() {
	d.mu.Lock()
	d.closing = true
	for c := range d.conns {
		_ = c.Close()
	}
	d.mu.Unlock()
	_ = d.ln.Close()
}

// Fail makes every statement that starts with prefix (case-insensitive)
// fail with e; a nil e removes the failure.
func (d *MySQL8Double) Fail(prefix string, e *DoubleError) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e == nil {
		delete(d.fail, strings.ToUpper(prefix))
		return
	}
	d.fail[strings.ToUpper(prefix)] = e
}

// Log returns the statements seen so far.
func (d *MySQL8Double) Log() []Statement {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Statement(nil), d.log...)
}

func (d *MySQL8Double) accept() {
	ProxyAccept(d.ln, d.backend, func(c, b net.Conn) bool {
		d.mu.Lock()
		if d.closing {
			d.mu.Unlock()
			return false
		}
		d.nextID++
		id := d.nextID
		d.conns[c], d.conns[b] = true, true
		d.mu.Unlock()
		var wmu sync.Mutex // client writes: the server's bytes and our ERR packets
		go func() {
			buf := make([]byte, 64<<10)
			first := true
			for {
				n, err := b.Read(buf)
				if first && n > 0 {
					first = false
					if tid, ok := handshakeThreadID(buf[:n]); ok {
						d.mu.Lock()
						d.threads[id] = tid
						d.mu.Unlock()
					}
				}
				if n > 0 {
					wmu.Lock()
					_, werr := c.Write(buf[:n])
					wmu.Unlock()
					if werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			_ = c.Close()
		}()
		go func() {
			_ = d.clientToServer(id, c, b, &wmu) // ends when either side closes
			_ = b.Close()
			_ = c.Close()
			d.mu.Lock()
			delete(d.conns, c)
			delete(d.conns, b)
			d.mu.Unlock()
		}()
		return true
	})
}

// clientToServer forwards the client's packets, rewriting or answering the
// COM_QUERY and COM_STMT_PREPARE commands (sequence 0, command byte 0x03 or
// 0x16) it knows.
func (d *MySQL8Double) clientToServer(id int, c, b net.Conn, wmu *sync.Mutex) error {
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return err
		}
		n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
		payload := make([]byte, n)
		if _, err := io.ReadFull(c, payload); err != nil {
			return err
		}
		if hdr[3] != 0 || n == 0 || payload[0] != 0x03 && payload[0] != 0x16 || n == 0xffffff {
			if err := writePacket(b, hdr[3], payload); err != nil {
				return err
			}
			continue
		}
		query := string(payload[1:])
		rewritten, failWith := d.rewrite(id, query)
		d.mu.Lock()
		hook := d.hook
		d.mu.Unlock()
		if failWith == nil && hook != nil {
			if sql, fail, ok := hook(id, query); ok {
				rewritten, failWith = sql, fail
			}
		}
		if failWith != nil {
			wmu.Lock()
			err := writePacket(c, 1, errPacket(failWith))
			wmu.Unlock()
			if err != nil {
				return err
			}
			continue
		}
		if err := writePacket(b, 0, append([]byte{payload[0]}, rewritten...)); err != nil {
			return err
		}
	}
}

// handshakeThreadID reads the connection id from the server's first
// packet, the Protocol::HandshakeV10 (protocol version 10, the server
// version NUL-terminated, then the 4-byte connection id).
func handshakeThreadID(b []byte) (uint32, bool) {
	if len(b) < 5 || b[4] != 10 {
		return 0, false
	}
	p := b[5:]
	i := 0
	for i < len(p) && p[i] != 0 {
		i++
	}
	if i+5 > len(p) {
		return 0, false
	}
	p = p[i+1:]
	return uint32(p[0]) | uint32(p[1])<<8 | uint32(p[2])<<16 | uint32(p[3])<<24, true
}

// threadOf returns the backend connection id of the client connection
// that issued a statement, or 0.
func (d *MySQL8Double) threadOf(conn int) uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.threads[conn]
}

func writePacket(w io.Writer, seq byte, payload []byte) error {
	if len(payload) >= 0xffffff {
		return errors.New("double: packet too long to rewrite")
	}
	n := len(payload)
	_, err := w.Write(append([]byte{byte(n), byte(n >> 8), byte(n >> 16), seq}, payload...))
	return err
}

func errPacket(e *DoubleError) []byte {
	p := []byte{0xff, byte(e.Number), byte(e.Number >> 8), '#'}
	state := (e.SQLState + "HY000")[:5]
	p = append(p, state...)
	return append(p, e.Message...)
}

// mysql8Rewrites gives MariaDB MySQL 8's answers to what Tidemark asks.
var mysql8Rewrites = []struct{ from, to string }{
	{"VERSION()", "'8.0.36'"},
	{"@@version_comment", "'MySQL Community Server - GPL'"},
	{"@@server_uuid", "'3e11fa47-71ca-11e1-9e33-c80aa9429562'"},
	{"@@GLOBAL.gtid_executed", "@@GLOBAL.gtid_binlog_pos"},
}

// mysql8Statements are MySQL-only statements run as a no-op.
var mysql8Statements = []string{"LOCK INSTANCE FOR BACKUP", "UNLOCK INSTANCE", "SET SESSION MAX_EXECUTION_TIME"}

func (d *MySQL8Double) rewrite(id int, query string) (string, *DoubleError) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	d.log = append(d.log, Statement{Seq: d.seq, Conn: id, SQL: query})
	upper := strings.ToUpper(strings.TrimSpace(query))
	for prefix, e := range d.fail {
		if strings.HasPrefix(upper, prefix) {
			return "", e
		}
	}
	for _, s := range mysql8Statements {
		if strings.HasPrefix(upper, s) {
			return "DO 0", nil
		}
	}
	for _, r := range mysql8Rewrites {
		query = replaceFold(query, r.from, r.to)
	}
	return query, nil
}

// replaceFold replaces every case-insensitive occurrence of from.
func replaceFold(s, from, to string) string {
	lower, lfrom := strings.ToLower(s), strings.ToLower(from)
	var b strings.Builder
	for {
		i := strings.Index(lower, lfrom)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		b.WriteString(to)
		s, lower = s[i+len(from):], lower[i+len(from):]
	}
}

// ConnOf returns the connection that ran the first statement starting with
// prefix (case-insensitive), or 0.
func ConnOf(log []Statement, prefix string) int {
	for _, s := range log {
		if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(s.SQL)), strings.ToUpper(prefix)) {
			return s.Conn
		}
	}
	return 0
}
