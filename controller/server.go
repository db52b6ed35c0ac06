package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tidemark-backup/tidemark/controller/fsm"
	"github.com/tidemark-backup/tidemark/controller/scheduler"
	"github.com/tidemark-backup/tidemark/internal/agentlink"
	"github.com/tidemark-backup/tidemark/internal/logadapt"
	"github.com/tidemark-backup/tidemark/internal/metrics"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Server is one controller node: a Raft member with the catalog FSM and the
// gRPC services (ControlService, AgentService, ClusterService,
// RelayService) on one listener.
type Server struct {
	cfg  Config
	id   identity
	log  *slog.Logger
	fsm  *fsm.FSM
	raft *raft.Raft

	trans *raft.NetworkTransport
	bolt  *raftboltdb.BoltStore
	snaps *raft.FileSnapshotStore
	grpc  *grpc.Server
	lis   net.Listener
	peers *peerConns
	// tls is the node's certificate source; nil on a plaintext
	// (--insecure) node. ca is the cluster CA when this node holds its key.
	tls *tlsx.Source
	ca  *tlsx.CA

	// agents holds the sessions and lease timers; only the leader has any.
	agents *agentHub
	// relay serves the --repo backend to relay:// agents.
	relay *RelayServer
	// sched is the leader's scheduler (nil when not leading); schedKick
	// makes it tick now.
	sched     atomic.Pointer[scheduler.Scheduler]
	schedKick chan struct{}
	// polKick makes the policy loop (retention, copies) run now.
	polKick chan struct{}
	// hooks posts alerts to the --webhook URLs.
	hooks *webhooks

	// health answers grpc.health.v1 from Ready; metricsSrv serves
	// --metrics-addr (nil without); collector is registered in
	// cfg.Metrics (nil without).
	health     *health.Server
	metricsSrv *metrics.Server
	collector  *nodeCollector

	// establishedTerm is the term in which this node, leading, committed
	// its barrier: consistent reads wait for it (reads.go).
	establishedTerm atomic.Uint64

	stop     chan struct{}
	stopOnce sync.Once
	done     sync.WaitGroup
}

// Start opens (or creates) the node in cfg.DataDir, bootstraps or joins a
// cluster when the directory is new, and serves until Shutdown. It returns
// once the node serves gRPC; leadership comes later.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating --data-dir: %w", err)
	}
	saved, err := loadIdentity(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	id, err := resolveIdentity(&cfg, saved)
	if err != nil {
		return nil, err
	}
	if saved == nil && !cfg.Bootstrap && len(cfg.Join) == 0 {
		return nil, fmt.Errorf("data dir %s is new: give --bootstrap to start a new cluster, or --join GRPC_ADDR to join an existing one", cfg.DataDir)
	}
	s := &Server{cfg: cfg, id: *id, log: cfg.Logger.With("node", id.NodeID), fsm: fsm.New(), stop: make(chan struct{}), schedKick: make(chan struct{}, 1), polKick: make(chan struct{}, 1)}
	s.hooks = newWebhooks(cfg.Webhooks, s.log)
	s.agents = newAgentHub(s, id.NodeID, cfg)
	s.relay = newRepoRelay(cfg)
	fresh := saved == nil
	if err := s.setupTLS(ctx, fresh); err != nil {
		return nil, err
	}
	s.peers = newPeerConns(s.clientOptions())
	defer func() {
		if err != nil {
			s.close()
		}
	}()

	if err := s.openRaft(); err != nil {
		return nil, err
	}
	existing, err := raft.HasExistingState(s.bolt, s.bolt, s.snapshots())
	if err != nil {
		return nil, fmt.Errorf("inspecting the Raft state in %s: %w", cfg.DataDir, err)
	}
	switch {
	case existing || !fresh:
		if cfg.Bootstrap || len(cfg.Join) > 0 {
			s.log.Info("data dir already holds a cluster member; ignoring --bootstrap/--join")
		}
	case cfg.Bootstrap:
		conf := raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(id.NodeID), Address: raft.ServerAddress(id.raftAdvertise()), Suffrage: raft.Voter}}}
		if err := s.raft.BootstrapCluster(conf).Error(); err != nil {
			return nil, fmt.Errorf("bootstrapping the cluster: %w", err)
		}
	}

	lis, err := net.Listen("tcp", id.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("listening on --grpc-addr %s: %w", id.GRPCAddr, err)
	}
	s.lis = lis
	// Keepalive on the agents' Connect streams (internal/agentlink): both
	// ends notice a silently dead peer in seconds, not when TCP gives up.
	opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(s.unaryInterceptor), grpc.ChainStreamInterceptor(s.streamInterceptor),
		grpc.KeepaliveParams(agentlink.ServerParameters()), grpc.KeepaliveEnforcementPolicy(agentlink.EnforcementPolicy())}
	if s.tls != nil {
		opts = append(opts, grpc.Creds(tlsx.GRPC(s.tls.ServerConfig())))
	}
	s.grpc = grpc.NewServer(opts...)
	v1.RegisterControlServiceServer(s.grpc, &controlService{s: s})
	v1.RegisterAgentServiceServer(s.grpc, &agentService{s: s})
	v1.RegisterClusterServiceServer(s.grpc, &clusterService{s: s})
	v1.RegisterRelayServiceServer(s.grpc, s.relay)
	s.health = health.NewServer()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	if err := s.setupMetrics(); err != nil {
		return nil, err
	}
	s.done.Add(3)
	go func() {
		defer s.done.Done()
		if err := s.grpc.Serve(lis); err != nil {
			s.log.Error("gRPC server stopped", "err", err)
		}
	}()
	go func() {
		defer s.done.Done()
		s.monitorLeadership()
	}()
	go func() {
		defer s.done.Done()
		s.healthLoop()
	}()

	if fresh && !existing && len(cfg.Join) > 0 {
		if err := s.join(ctx); err != nil {
			// Leave the directory as new, so the same command can be run
			// again once the cluster is there.
			s.close()
			_ = os.RemoveAll(filepath.Join(cfg.DataDir, "raft.db"))
			_ = os.RemoveAll(filepath.Join(cfg.DataDir, "snapshots"))
			return nil, err
		}
	}
	if fresh {
		if err := id.save(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	s.log.Info("controller node started", "grpc", id.GRPCAddr, "grpc_advertised", id.grpcAdvertise(), "raft", id.RaftAddr, "raft_advertised", id.raftAdvertise(), "data_dir", cfg.DataDir)
	return s, nil
}

// openRaft opens the stores and the transport and starts Raft.
func (s *Server) openRaft() error {
	cfg := s.cfg
	level := hclog.LevelFromString(cfg.RaftLogLevel)
	var logger hclog.Logger
	if cfg.RaftLogOutput != nil {
		logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: level, Output: cfg.RaftLogOutput})
	} else {
		// Through the node's slog handler: one format for every line.
		logger = logadapt.NewHclog(s.log, "raft", level)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(s.id.NodeID)
	rc.HeartbeatTimeout = cfg.Raft.HeartbeatTimeout
	rc.ElectionTimeout = cfg.Raft.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.Raft.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.Raft.CommitTimeout
	rc.SnapshotThreshold = cfg.Raft.SnapshotThreshold
	rc.SnapshotInterval = cfg.Raft.SnapshotInterval
	rc.TrailingLogs = cfg.Raft.TrailingLogs
	rc.Logger = logger
	// Concurrent writers' entries go to disk and to the followers in one
	// batch: fewer fsyncs and round trips per write under load.
	rc.BatchApplyCh = true
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("raft configuration: %w", err)
	}

	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db")})
	if err != nil {
		return fmt.Errorf("opening the Raft log in %s: %w", cfg.DataDir, err)
	}
	s.bolt = bolt
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, cfg.Raft.SnapshotRetain, logger)
	if err != nil {
		return fmt.Errorf("opening the snapshot store in %s: %w", cfg.DataDir, err)
	}
	s.snaps = snaps
	// The transport listens on RaftAddr and tells the other nodes
	// (RequestVote, the configuration) to dial the advertised address.
	adv, err := net.ResolveTCPAddr("tcp", s.id.raftAdvertise())
	if err != nil {
		flag := "--raft-addr"
		if s.id.RaftAdvertiseAddr != "" {
			flag = "--raft-advertise-addr"
		}
		return fmt.Errorf("%s %s: %w", flag, s.id.raftAdvertise(), err)
	}
	var trans *raft.NetworkTransport
	var stream *tlsx.StreamLayer
	if s.tls != nil {
		stream, err = tlsx.NewStreamLayer(s.id.RaftAddr, adv, s.tls)
		if err != nil {
			return fmt.Errorf("listening on --raft-addr %s: %w", s.id.RaftAddr, err)
		}
		trans = raft.NewNetworkTransportWithLogger(stream, 3, 10*time.Second, logger)
	} else {
		trans, err = raft.NewTCPTransportWithLogger(s.id.RaftAddr, adv, 3, 10*time.Second, logger)
		if err != nil {
			return fmt.Errorf("listening on --raft-addr %s: %w", s.id.RaftAddr, err)
		}
	}
	s.trans = trans
	// The leader replicates entries it has just written: a cache in front of
	// the log store saves reading each one back from bolt (Consul and Nomad
	// do the same).
	logs, err := raft.NewLogCache(logCacheSize, bolt)
	if err != nil {
		return fmt.Errorf("raft log cache: %w", err)
	}
	r, err := raft.NewRaft(rc, s.fsm, logs, bolt, snaps, trans)
	if err != nil {
		return fmt.Errorf("starting Raft: %w", err)
	}
	s.raft = r
	if stream != nil {
		// GetConfiguration reads the latest configuration without the
		// Raft loop, so dialing from Raft's own goroutines cannot block.
		stream.SetMemberNames(func(a raft.ServerAddress) (raft.ServerID, bool) {
			for _, srv := range r.GetConfiguration().Configuration().Servers {
				if srv.Address == a {
					return srv.ID, true
				}
			}
			return "", false
		})
	}
	return nil
}

// snapshots is the file snapshot store (kept for HasExistingState).
func (s *Server) snapshots() raft.SnapshotStore { return s.snaps }

// NodeID returns the node's Raft id.
func (s *Server) NodeID() string { return s.id.NodeID }

// Addr returns the gRPC address the node serves on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Shutdown stops serving and leaves Raft running no more. Agents' streams
// end; a follower or the leader simply disappears to the others (it stays a
// member: removing it is RemoveMember).
func (s *Server) Shutdown() {
	s.close()
	s.log.Info("controller node stopped")
}

func (s *Server) close() {
	s.stopOnce.Do(func() {
		close(s.stop)
		if s.health != nil {
			s.health.Shutdown() // NOT_SERVING to watchers before the server goes
		}
		s.metricsSrv.Close()
		if s.collector != nil {
			s.cfg.Metrics.Unregister(s.collector)
		}
		if s.grpc != nil {
			// GracefulStop would wait for every agent stream to end.
			s.grpc.Stop()
		}
		s.agents.revoke("")
		s.relay.close()
		if s.raft != nil {
			if err := s.raft.Shutdown().Error(); err != nil {
				s.log.Warn("raft shutdown", "err", err)
			}
		}
		if s.trans != nil {
			_ = s.trans.Close()
		}
		if s.bolt != nil {
			_ = s.bolt.Close()
		}
		if s.peers != nil {
			s.peers.close()
		}
	})
	s.done.Wait()
}

// errShutdown is returned by work cut short by Shutdown.
var errShutdown = errors.New("controller node is shutting down")

// logCacheSize is how many recent Raft entries the leader keeps in memory
// for replication.
const logCacheSize = 512
