package tlsx

import (
	"context"
	"crypto/tls"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"
)

// GRPC returns gRPC transport credentials for cfg that write each gRPC
// flush as one system call. crypto/tls writes every record (at most 16 KiB
// of plaintext) with its own write, so one 32 KiB flush of HTTP/2 frames
// costs two or three system calls instead of plaintext's one (counted by
// TestGRPCCoalescesRecords); on a relay stream of hundreds of MB/s between
// two processes sharing two cores, that was a visible part of TLS's cost.
// The records are the same; only their trip to the kernel is batched.
func GRPC(cfg *tls.Config) credentials.TransportCredentials {
	return coalescingCreds{credentials.NewTLS(cfg)}
}

type coalescingCreds struct {
	credentials.TransportCredentials
}

func (c coalescingCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	bc := &batchConn{Conn: raw}
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, bc)
	if err != nil {
		return nil, nil, err
	}
	return &flushConn{Conn: conn, raw: bc}, info, nil
}

func (c coalescingCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	bc := &batchConn{Conn: raw}
	conn, info, err := c.TransportCredentials.ServerHandshake(bc)
	if err != nil {
		return nil, nil, err
	}
	return &flushConn{Conn: conn, raw: bc}, info, nil
}

func (c coalescingCreds) Clone() credentials.TransportCredentials {
	return coalescingCreds{c.TransportCredentials.Clone()}
}

// batchConn is the raw connection under TLS. Between hold and release its
// writes are collected and then written at once; otherwise (the handshake,
// an alert sent while reading) they go straight through.
type batchConn struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	buf     []byte
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holding {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *batchConn) hold() {
	c.mu.Lock()
	c.holding = true
	c.mu.Unlock()
}

// release writes what was held. A buffer grown past a few flushes is
// dropped, so an idle connection does not keep a large one.
func (c *batchConn) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = false
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > 1<<20 {
		c.buf = nil
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

// flushConn is the TLS connection handed to gRPC: each Write's records
// reach the kernel together.
type flushConn struct {
	net.Conn
	raw *batchConn
	mu  sync.Mutex // one Write's hold and release at a time
}

func (c *flushConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.raw.hold()
	n, err := c.Conn.Write(p)
	if rerr := c.raw.release(); rerr != nil && err == nil {
		// The records were accepted by TLS but never sent: the
		// connection is broken either way.
		return 0, rerr
	}
	return n, err
}
