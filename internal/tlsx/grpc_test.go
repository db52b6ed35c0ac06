package tlsx_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tidemark-backup/tidemark/internal/testenv"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
)

// countingConn counts Write calls and the TLS records in what they wrote.
type countingConn struct {
	net.Conn
	mu      sync.Mutex
	writes  int
	records int
	pending []byte // bytes of a record header or body not yet complete
	skip    int    // body bytes of the current record still to come
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	for b := p; len(b) > 0; {
		if c.skip > 0 {
			n := min(c.skip, len(b))
			c.skip -= n
			b = b[n:]
			continue
		}
		need := 5 - len(c.pending)
		n := min(need, len(b))
		c.pending = append(c.pending, b[:n]...)
		b = b[n:]
		if len(c.pending) == 5 {
			c.records++
			c.skip = int(binary.BigEndian.Uint16(c.pending[3:5]))
			c.pending = c.pending[:0]
		}
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countingConn) counts() (writes, records int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes, c.records
}

// A large message over tlsx.GRPC reaches the kernel in about one write per
// gRPC flush, not one per TLS record as through crypto/tls alone (a 32 KiB
// flush is two or three records), and the call works as over
// credentials.NewTLS.
func TestGRPCCoalescesRecords(t *testing.T) {
	ca := testenv.NewTestCA(t)
	for _, c := range []struct {
		name      string
		creds     func(*tls.Config) credentials.TransportCredentials
		coalesced bool
	}{
		{"tlsx.GRPC", tlsx.GRPC, true},
		{"credentials.NewTLS", credentials.NewTLS, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := grpc.NewServer(grpc.Creds(c.creds(ca.Source(t, testenv.Controller("c1")).ServerConfig())))
			healthpb.RegisterHealthServer(srv, health.NewServer())
			go func() { _ = srv.Serve(lis) }()
			defer srv.Stop()

			var conn *countingConn
			cc, err := grpc.NewClient(lis.Addr().String(),
				grpc.WithTransportCredentials(c.creds(ca.Source(t, testenv.Agent("a1")).ClientConfig())),
				grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
					raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
					if err != nil {
						return nil, err
					}
					conn = &countingConn{Conn: raw}
					return conn, nil
				}))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cc.Close() }()
			// An unknown service name of 2 MiB: the answer is NotFound,
			// after the whole request crossed the connection.
			_, err = healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{Service: strings.Repeat("x", 2<<20)})
			if err == nil || !strings.Contains(err.Error(), "unknown service") {
				t.Fatalf("Check: %v", err)
			}
			writes, records := conn.counts()
			t.Logf("%d writes for %d TLS records", writes, records)
			if records < 128 {
				t.Fatalf("only %d records for 2 MiB", records)
			}
			if got := writes*3 < records*2; got != c.coalesced {
				t.Fatalf("%d writes for %d records: coalesced %v, want %v", writes, records, got, c.coalesced)
			}
		})
	}
}
