package controller

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/client"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// forwardedKey marks a request a follower forwarded to the leader. A node
// that receives one and is not the leader answers Unavailable instead of
// forwarding again, so two nodes with stale views never bounce a request
// between them.
const forwardedKey = "tidemark-forwarded-by"

// peerConns caches one gRPC connection per other node.
type peerConns struct {
	opts  client.Options
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newPeerConns(opts client.Options) *peerConns {
	return &peerConns{opts: opts, conns: map[string]*grpc.ClientConn{}}
}

func (p *peerConns) get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cc, ok := p.conns[addr]; ok {
		return cc, nil
	}
	creds, err := p.opts.Credentials()
	if err != nil {
		return nil, err
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	p.conns[addr] = cc
	return cc, nil
}

func (p *peerConns) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, cc := range p.conns {
		_ = cc.Close()
		delete(p.conns, a)
	}
}

// wasForwarded reports whether the incoming request came from another node.
func wasForwarded(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(forwardedKey)) > 0
}

// toLeader returns a ControlService client for the leader and the context
// to call it with; ErrNoLeader when there is none to reach, ErrNotLeader
// when the request was already forwarded here.
func (s *Server) toLeader(ctx context.Context) (v1.ControlServiceClient, context.Context, error) {
	id, addr := s.leader()
	if wasForwarded(ctx) {
		return nil, nil, catalog.Errorf(ErrNotLeader, "node %s received a forwarded request but is not the leader (it knows %q as leader); retry", s.id.NodeID, id)
	}
	switch {
	case id == "":
		return nil, nil, catalog.Errorf(ErrNoLeader, "node %s knows no leader (an election is under way or the cluster has no quorum); retry", s.id.NodeID)
	case id == s.id.NodeID:
		return nil, nil, catalog.Errorf(ErrNoLeader, "node %s is stepping down or taking over the leadership; retry", s.id.NodeID)
	case addr == "":
		return nil, nil, catalog.Errorf(ErrNoLeader, "the leader %s has not published its gRPC address yet; retry", id)
	}
	cc, err := s.peers.get(addr)
	if err != nil {
		return nil, nil, catalog.Errorf(ErrNoLeader, "leader %s at %s: %v", id, addr, err)
	}
	md := []string{forwardedKey, s.id.NodeID}
	if w := who(ctx); w != "" {
		md = append(md, callerKeyMD, w)
	}
	return v1.NewControlServiceClient(cc), metadata.AppendToOutgoingContext(ctx, md...), nil
}

// peerCluster returns a ClusterService client for another node's address.
func (s *Server) peerCluster(addr string) (v1.ClusterServiceClient, error) {
	cc, err := s.peers.get(addr)
	if err != nil {
		return nil, err
	}
	return v1.NewClusterServiceClient(cc), nil
}

// clientOptions are how this node dials other nodes: with its own
// controller certificate, or plaintext on an --insecure node.
func (s *Server) clientOptions() client.Options {
	if s.tls == nil {
		return client.Options{Insecure: true}
	}
	return client.Options{TLS: s.tls.ClientConfig()}
}
