package tlsx

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// StreamLayer is hashicorp/raft's stream layer over mutual TLS: both ends
// present a controller certificate of the cluster CA, and anything else is
// refused in the handshake. A dial also checks that the certificate
// answering at a member's address names that member (SetMemberNames), so
// one controller's certificate cannot stand in for another's. The handshake happens on the connection's first
// read or write, in the transport's per-connection goroutine, so a peer that
// stalls it does not hold up the accept loop.
type StreamLayer struct {
	net.Listener
	advertise net.Addr
	client    *tls.Config
	members   atomic.Pointer[func(raft.ServerAddress) (raft.ServerID, bool)]
}

// SetMemberNames gives the lookup from a Raft address to the member id the
// configuration holds for it. Until it is set, and for an address it does
// not know (a node being added), any controller certificate is accepted.
func (s *StreamLayer) SetMemberNames(lookup func(raft.ServerAddress) (raft.ServerID, bool)) {
	s.members.Store(&lookup)
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

// NewStreamLayer listens on bind and advertises advertise (nil: the bound
// address).
func NewStreamLayer(bind string, advertise net.Addr, src *Source) (*StreamLayer, error) {
	l, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	if advertise == nil {
		advertise = l.Addr()
	}
	srv := src.ServerConfig()
	srv.ClientAuth = tls.RequireAndVerifyClientCert
	srv.VerifyConnection = requirePeerKind(KindController)
	srv.NextProtos = nil
	return &StreamLayer{Listener: tls.NewListener(l, srv), advertise: advertise, client: src.ClientConfig()}, nil
}

// Addr is the advertised address.
func (s *StreamLayer) Addr() net.Addr { return s.advertise }

// Dial connects to a peer and completes the handshake within timeout.
func (s *StreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	c, err := tls.DialWithDialer(d, "tcp", string(address), s.client)
	if err != nil {
		return nil, fmt.Errorf("raft TLS to %s: %w", address, err)
	}
	if lookup := s.members.Load(); lookup != nil {
		if want, ok := (*lookup)(address); ok {
			id, err := IdentityOf(c.ConnectionState().PeerCertificates[0])
			if err == nil && id.Name != string(want) {
				err = fmt.Errorf("its certificate names controller %q, but the member at that address is %q", id.Name, want)
			}
			if err != nil {
				_ = c.Close()
				return nil, fmt.Errorf("raft TLS to %s: %w", address, err)
			}
		}
	}
	return c, nil
}
