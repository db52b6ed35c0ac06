package mysqlx

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Reading a big result set through database/sql costs more than the dump's
// own work: go-sql-driver reads the socket 4 KiB at a time and boxes every
// column's []byte into a driver.Value, one heap allocation per column (32
// million for 8 sysbench tables of 1M rows). A Tap lets the logical engine
// read its table scans off the connection's socket itself, between two of
// the driver's commands on that same connection: the driver does the
// handshake, the session setup and the snapshot, and its connection is idle
// and empty while we use the socket (the server never speaks unasked, so the
// driver's read buffer holds nothing once its command ended).
//
// The tap sees the client's handshake response and only offers a
// connection whose protocol it can read: not TLS (the driver wraps the
// socket after the dial, so we would see ciphertext) and not compressed.

// Client capability flags the tap reads from the handshake response.
const (
	capProtocol41   = 1 << 9
	capSSL          = 1 << 11
	capCompress     = 1 << 5
	capDeprecateEOF = 1 << 24
)

// ErrNotTapped says a connection cannot be read on the wire (TLS or
// compression); the caller goes through the driver instead.
var ErrNotTapped = errors.New("connection cannot be read on the wire (TLS or compression on)")

// Tap records the sockets a pool dials, and the connection ids (Sessions).
type Tap struct {
	mu       sync.Mutex
	conns    []*tapConn
	sessions *Sessions
}

// Sessions are the connection ids of the tapped pool, to kill its
// statements with.
func (t *Tap) Sessions() *Sessions { return t.sessions }

// OpenTapped is Open with every dialed socket recorded in the returned Tap.
func (d *DSN) OpenTapped(adjust func(*mysql.Config)) (*sql.DB, *Tap, error) {
	t := &Tap{}
	db, sessions, err := d.OpenSessions(func(c *mysql.Config) {
		if adjust != nil {
			adjust(c)
		}
		dial := c.DialFunc
		c.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var nc net.Conn
			var err error
			if dial != nil {
				nc, err = dial(ctx, network, addr)
			} else {
				var d net.Dialer
				nc, err = d.DialContext(ctx, network, addr)
			}
			if err != nil {
				return nil, err
			}
			if tc, ok := nc.(*net.TCPConn); ok {
				_ = tc.SetKeepAlive(true) // the driver does this only for a *net.TCPConn
			}
			tc := &tapConn{Conn: nc}
			t.mu.Lock()
			t.conns = append(t.conns, tc)
			t.mu.Unlock()
			return tc, nil
		}
	})
	t.sessions = sessions
	return db, t, err
}

// Take returns the wire of the one connection the pool dialed since the
// last Take and is still open. The caller opens connections one at a time
// (sql.DB.Conn on a pool with no idle connection) and takes each right
// after. It returns ErrNotTapped when that connection is TLS or compressed.
func (t *Tap) Take() (*Wire, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var open []*tapConn
	for _, c := range t.conns {
		if !c.closed.Load() {
			open = append(open, c)
		}
	}
	t.conns = nil
	if len(open) != 1 {
		return nil, fmt.Errorf("tap: %d new connections since the last take, want 1", len(open))
	}
	c := open[0]
	caps, ok := c.caps()
	if !ok {
		return nil, errors.New("tap: no handshake seen on the connection")
	}
	if caps&(capSSL|capCompress) != 0 || caps&capProtocol41 == 0 {
		return nil, ErrNotTapped
	}
	return &Wire{nc: c.Conn, deprecateEOF: caps&capDeprecateEOF != 0}, nil
}

// tapConn passes everything through and keeps the client capability flags
// of the first packet the client writes (the handshake response, or the
// SSL request that precedes a TLS handshake: both start with the flags).
type tapConn struct {
	net.Conn
	mu      sync.Mutex
	flags   uint32
	written bool
	closed  atomic.Bool
}

func (c *tapConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	if !c.written && len(b) >= 8 {
		c.flags = binary.LittleEndian.Uint32(b[4:8])
		c.written = true
	}
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *tapConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

func (c *tapConn) caps() (uint32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flags, c.written
}

// Wire reads result sets straight off one connection's socket, in the text
// protocol (Query) or the binary one (QueryBinary). It must only be used while the driver is idle on that connection
// (inside sql.Conn.Raw, which also keeps database/sql from closing it).
// After any error the socket is closed: its position in the protocol is
// unknown, and the driver then reports the connection as bad.
type Wire struct {
	nc           net.Conn
	deprecateEOF bool
	buf          []byte // read buffer; unread bytes are buf[r:w]
	r, w         int
	big          []byte // a row longer than one packet, reassembled
	fields       [][]byte
	cols         []binCol // QueryBinary's column types
	text         []byte   // QueryBinary's values formatted as text, one row's
	seq          byte
}

// wireBufSize is the read buffer: 64 reads per 16 MiB where the driver
// makes 4,096.
const wireBufSize = 256 << 10

// maxPacket is the largest payload of one packet; a longer one continues
// in the next.
const maxPacket = 1<<24 - 1

// Query runs query (a SELECT) and calls row for every row, in order, with
// one slice per column: nil for NULL, a non-nil (possibly empty) slice
// otherwise. The slices are valid only during the call. An error from the
// server comes back as a *mysql.MySQLError, so Translate knows it.
func (w *Wire) Query(ctx context.Context, query string, row func(fields [][]byte) error) error {
	return w.run(ctx, func() error {
		if err := w.writeCommand(comQuery, nil, query); err != nil {
			return err
		}
		ncols, err := w.resultHeader()
		if err != nil {
			return err
		}
		for range ncols {
			if _, err := w.packet(); err != nil {
				return err
			}
		}
		if err := w.endOfMetadata(); err != nil {
			return err
		}
		fields := w.fieldSlice(ncols)
		for {
			p, err := w.rowPacket()
			if p == nil || err != nil {
				return err
			}
			if err := parseRow(p, fields); err != nil {
				return err
			}
			if err := row(fields); err != nil {
				return err
			}
		}
	})
}

// inSync wraps an error after which the connection is still at a command
// boundary (the server refused a statement before any result): run leaves
// the socket open.
type inSync struct{ err error }

func (e inSync) Error() string { return e.err.Error() }
func (e inSync) Unwrap() error { return e.err }

// run does one command's exchange: it clears any deadline the driver left,
// lets ctx interrupt a blocked read, and closes the socket after any error
// but an inSync one.
func (w *Wire) run(ctx context.Context, exchange func() error) (err error) {
	if w.nc == nil {
		return errors.New("wire: connection closed after an earlier error")
	}
	defer func() {
		var ok inSync
		if errors.As(err, &ok) && ctx.Err() == nil {
			err = ok.err
			return
		}
		if err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (%w)", ctx.Err(), err)
			}
			_ = w.nc.Close()
			w.nc = nil
		}
	}()
	// A deadline the driver left behind must not fire on us; cancellation
	// interrupts a blocked read through the deadline.
	if err := w.nc.SetDeadline(time.Time{}); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = w.nc.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() && err == nil {
			// Canceled as the rows ended: the deadline is set (or about
			// to be), so the connection cannot serve the driver again.
			err = ctx.Err()
		}
	}()
	if w.buf == nil {
		w.buf = make([]byte, wireBufSize)
	}
	w.r, w.w = 0, 0
	return exchange()
}

// resultHeader reads the first packet of a result set: its column count.
func (w *Wire) resultHeader() (int, error) {
	p, err := w.packet()
	if err != nil {
		return 0, err
	}
	switch {
	case len(p) > 0 && p[0] == 0xff:
		return 0, serverError(p)
	case len(p) > 0 && (p[0] == 0x00 || p[0] == 0xfb):
		return 0, errors.New("wire: the statement returned no result set")
	}
	ncols, _, ok := lenencInt(p)
	if !ok || ncols == 0 || ncols > 1<<16 {
		return 0, fmt.Errorf("wire: bad column count packet (% x)", head(p))
	}
	return int(ncols), nil
}

// endOfMetadata reads the EOF packet after column definitions, which
// CLIENT_DEPRECATE_EOF leaves out.
func (w *Wire) endOfMetadata() error {
	if w.deprecateEOF {
		return nil
	}
	p, err := w.packet()
	if err != nil {
		return err
	}
	if !isEOF(p, false) {
		return fmt.Errorf("wire: expected EOF after the column definitions, got % x", head(p))
	}
	return nil
}

func (w *Wire) fieldSlice(n int) [][]byte {
	if cap(w.fields) < n {
		w.fields = make([][]byte, n)
	}
	return w.fields[:n]
}

// rowPacket returns the next row's packet, or nil at the end of the rows.
func (w *Wire) rowPacket() ([]byte, error) {
	p, err := w.packet()
	if err != nil {
		return nil, err
	}
	if len(p) > 0 {
		switch {
		case p[0] == 0xff:
			return nil, serverError(p)
		case isEOF(p, w.deprecateEOF):
			return nil, nil
		}
	}
	return p, nil
}

// isEOF tells the end of a result set: an EOF packet, or with
// CLIENT_DEPRECATE_EOF an OK packet with the EOF header. A row cannot start
// with 0xfe unless its first value is at least 16 MiB long, which makes the
// packet a full one.
func isEOF(p []byte, deprecateEOF bool) bool {
	if len(p) == 0 || p[0] != 0xfe {
		return false
	}
	if deprecateEOF {
		return len(p) < maxPacket
	}
	return len(p) < 9
}

func parseRow(p []byte, fields [][]byte) error {
	pos := 0
	for i := range fields {
		if pos >= len(p) {
			return fmt.Errorf("wire: row ends after %d of %d columns", i, len(fields))
		}
		if p[pos] == 0xfb {
			fields[i] = nil
			pos++
			continue
		}
		n, m, ok := lenencInt(p[pos:])
		if !ok || uint64(len(p)-pos-m) < n {
			return fmt.Errorf("wire: column %d overruns its row", i+1)
		}
		pos += m
		fields[i] = p[pos : pos+int(n) : pos+int(n)]
		pos += int(n)
	}
	if pos != len(p) {
		return fmt.Errorf("wire: row has %d bytes after its %d columns", len(p)-pos, len(fields))
	}
	return nil
}

// lenencInt decodes a length-encoded integer: its value and its size.
func lenencInt(b []byte) (uint64, int, bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	switch b[0] {
	case 0xfc:
		if len(b) < 3 {
			return 0, 0, false
		}
		return uint64(binary.LittleEndian.Uint16(b[1:])), 3, true
	case 0xfd:
		if len(b) < 4 {
			return 0, 0, false
		}
		return uint64(b[1]) | uint64(b[2])<<8 | uint64(b[3])<<16, 4, true
	case 0xfe:
		if len(b) < 9 {
			return 0, 0, false
		}
		return binary.LittleEndian.Uint64(b[1:]), 9, true
	case 0xfb, 0xff:
		return 0, 0, false
	}
	return uint64(b[0]), 1, true
}

func head(p []byte) []byte { return p[:min(len(p), 16)] }

// serverError decodes an ERR packet.
func serverError(p []byte) error {
	if len(p) < 3 {
		return fmt.Errorf("wire: short error packet (% x)", p)
	}
	e := &mysql.MySQLError{Number: binary.LittleEndian.Uint16(p[1:3])}
	msg := p[3:]
	if len(msg) >= 6 && msg[0] == '#' {
		copy(e.SQLState[:], msg[1:6])
		msg = msg[6:]
	}
	e.Message = string(msg)
	return e
}

// Command bytes.
const (
	comQuery       = 0x03
	comStmtPrepare = 0x16
	comStmtExecute = 0x17
	comStmtClose   = 0x19
)

// writeCommand sends one command packet: the command byte, then args, then
// text, and starts the sequence the reply continues.
func (w *Wire) writeCommand(cmd byte, args []byte, text string) error {
	n := 1 + len(args) + len(text)
	if n >= maxPacket {
		return fmt.Errorf("wire: command of %d bytes is too long", n)
	}
	b := make([]byte, 4, 4+n)
	b[0], b[1], b[2], b[3] = byte(n), byte(n>>8), byte(n>>16), 0
	b = append(b, cmd)
	b = append(b, args...)
	b = append(b, text...)
	w.seq = 1
	_, err := w.nc.Write(b)
	return err
}

// packet returns the next packet's payload, valid until the next call; a
// payload split over several packets comes back whole.
func (w *Wire) packet() ([]byte, error) {
	p, err := w.onePacket()
	if err != nil || len(p) < maxPacket {
		return p, err
	}
	w.big = append(w.big[:0], p...)
	for {
		p, err = w.onePacket()
		if err != nil {
			return nil, err
		}
		w.big = append(w.big, p...)
		if len(p) < maxPacket {
			return w.big, nil
		}
	}
}

func (w *Wire) onePacket() ([]byte, error) {
	if err := w.fill(4); err != nil {
		return nil, err
	}
	h := w.buf[w.r : w.r+4]
	n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
	if h[3] != w.seq {
		return nil, fmt.Errorf("wire: packet out of order (sequence %d, want %d)", h[3], w.seq)
	}
	w.seq++
	if err := w.fill(4 + n); err != nil {
		return nil, err
	}
	p := w.buf[w.r+4 : w.r+4+n : w.r+4+n]
	w.r += 4 + n
	return p, nil
}

// fill makes buf[r:] hold at least n bytes, moving the unread bytes to the
// front (and growing the buffer for a packet bigger than it) first.
func (w *Wire) fill(n int) error {
	if w.w-w.r >= n {
		return nil
	}
	if len(w.buf) > wireBufSize && n <= wireBufSize && w.w-w.r <= wireBufSize {
		// The big packet that grew the buffer is done with: shrink back.
		nb := make([]byte, wireBufSize)
		w.w = copy(nb, w.buf[w.r:w.w])
		w.buf, w.r = nb, 0
	} else if n > len(w.buf) {
		nb := make([]byte, n)
		w.w = copy(nb, w.buf[w.r:w.w])
		w.buf, w.r = nb, 0
	} else if w.r > 0 {
		w.w = copy(w.buf, w.buf[w.r:w.w])
		w.r = 0
	}
	for w.w-w.r < n {
		m, err := w.nc.Read(w.buf[w.w:])
		w.w += m
		if err != nil {
			if w.w-w.r >= n {
				return nil
			}
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}
