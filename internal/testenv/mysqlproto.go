package testenv

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/server"
)

// protoServer is the MySQL-protocol side of the MySQL doubles: it accepts
// connections on a loopback listener and serves each with a fresh handler
// (go-mysql's server package, user root without a password) until close.
type protoServer struct {
	ln  net.Listener
	srv *server.Server
	// newHandler makes the handler of one connection; a handler with a
	// setConn method is given its connection before the first command.
	newHandler func() server.Handler

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// listenProto opens the listener; start serves it once the double that
// owns it is ready.
func listenProto(t testing.TB) *protoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &protoServer{ln: ln, conns: map[net.Conn]struct{}{}}
}

func (p *protoServer) addr() string { return p.ln.Addr().String() }

func (p *protoServer) start(version string, newHandler func() server.Handler) {
	p.srv = server.NewServer(version, mysql.DEFAULT_COLLATION_ID, mysql.AUTH_NATIVE_PASSWORD, nil, nil)
	p.newHandler = newHandler
	go p.accept()
}

func (p *protoServer) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		go p.serve(c)
	}
}

func (p *protoServer) serve(c net.Conn) {
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		_ = c.Close()
	}()
	auth := server.NewInMemoryAuthenticationHandler(mysql.AUTH_NATIVE_PASSWORD)
	if err := auth.AddUser("root", ""); err != nil {
		return
	}
	h := p.newHandler()
	conn, err := p.srv.NewCustomizedConn(c, auth, h)
	if err != nil {
		return
	}
	if s, ok := h.(interface{ setConn(*server.Conn) }); ok {
		s.setConn(conn)
	}
	for {
		if err := conn.HandleCommand(); err != nil || conn.Closed() {
			return
		}
	}
}

// killConnections cuts every client connection (a network drop, a restart).
func (p *protoServer) killConnections() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

// close stops accepting and cuts every connection.
func (p *protoServer) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.killConnections()
}

// textOnly is the part of a double's handler that refuses what the doubles
// do not speak: prepared statements, field lists, other commands.
type textOnly struct{ name string }

func (textOnly) UseDB(string) error { return nil }

func (h textOnly) HandleFieldList(string, string) ([]*mysql.Field, error) {
	return nil, fmt.Errorf("field lists are not supported by the %s", h.name)
}

func (h textOnly) HandleStmtPrepare(string) (int, int, any, error) {
	return 0, 0, nil, mysql.NewError(mysql.ER_UNKNOWN_ERROR, "the "+h.name+" takes text queries only")
}

func (textOnly) HandleStmtExecute(any, string, []any) (*mysql.Result, error) {
	return nil, errors.New("prepared statements are not supported by the double")
}

func (textOnly) HandleStmtClose(any) error { return nil }

func (h textOnly) HandleOtherCommand(cmd byte, _ []byte) error {
	return mysql.NewError(mysql.ER_UNKNOWN_COM_ERROR, fmt.Sprintf("command %d not supported by the %s", cmd, h.name))
}
