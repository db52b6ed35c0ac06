package controller

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// identity is what a node remembers in its data directory so that a restart
// needs no flags: who it is and where it listens. Raft's own state holds
// the cluster; this file holds the node.
type identity struct {
	NodeID string `json:"node_id"`
	// GRPCAddr is where the gRPC server listens; GRPCAdvertiseAddr, the
	// address published to agents, the CLI and the other nodes (absent:
	// GRPCAddr).
	GRPCAddr          string `json:"grpc_addr"`
	GRPCAdvertiseAddr string `json:"grpc_advertise_addr,omitempty"`
	// RaftAddr is where the Raft transport listens; RaftAdvertiseAddr,
	// where the other nodes dial it (absent in files written before
	// --raft-advertise-addr, and when the two are equal: RaftAddr).
	RaftAddr          string `json:"raft_addr"`
	RaftAdvertiseAddr string `json:"raft_advertise_addr,omitempty"`
}

// grpcAdvertise is the gRPC address the cluster publishes for this node:
// in its member record, a follower's leader hint, NodeStatus.
func (id *identity) grpcAdvertise() string {
	if id.GRPCAdvertiseAddr != "" {
		return id.GRPCAdvertiseAddr
	}
	return id.GRPCAddr
}

// raftAdvertise is the Raft address the other nodes dial: the one in the
// Raft configuration and the member record.
func (id *identity) raftAdvertise() string {
	if id.RaftAdvertiseAddr != "" {
		return id.RaftAdvertiseAddr
	}
	return id.RaftAddr
}

const identityFile = "node.json"

// loadIdentity returns the remembered identity, or nil for a data directory
// that has none yet.
func loadIdentity(dir string) (*identity, error) {
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the node identity: %w", err)
	}
	id := &identity{}
	if err := json.Unmarshal(b, id); err != nil {
		return nil, fmt.Errorf("%s is damaged (%w): restore it or start over in an empty --data-dir", filepath.Join(dir, identityFile), err)
	}
	if id.NodeID == "" || id.GRPCAddr == "" || id.RaftAddr == "" {
		return nil, fmt.Errorf("%s lacks the node id or an address: restore it or start over in an empty --data-dir", filepath.Join(dir, identityFile))
	}
	return id, nil
}

// save writes the identity atomically (temp file, fsync, rename).
func (id *identity) save(dir string) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, identityFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("writing the node identity: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, identityFile))
	}
	if err != nil {
		return fmt.Errorf("writing the node identity: %w", err)
	}
	return nil
}

// resolveIdentity merges the flags with what the data directory remembers.
// A fresh directory needs every flag; a used one needs none, and refuses
// flags that contradict it (moving a node needs a membership change, not a
// flag).
func resolveIdentity(cfg *Config, saved *identity) (*identity, error) {
	if saved == nil {
		var missing []string
		for _, f := range []struct{ name, v string }{{"--node-id", cfg.NodeID}, {"--grpc-addr", cfg.GRPCAddr}, {"--raft-addr", cfg.RaftAddr}} {
			if f.v == "" {
				missing = append(missing, f.name)
			}
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("data dir %s is new: a new node needs %s, and --bootstrap (new cluster) or --join GRPC_ADDR (existing cluster)",
				cfg.DataDir, strings.Join(missing, ", "))
		}
		// A wildcard cannot be published: checked here, for a new node
		// only, as data directories made before --grpc-advertise-addr may
		// hold one (a single-node tidemark dev, which no one is told of).
		if host, _, err := net.SplitHostPort(cfg.GRPCAddr); err == nil && cfg.GRPCAdvertiseAddr == "" && (host == "" || net.ParseIP(host).IsUnspecified()) {
			return nil, fmt.Errorf("--grpc-addr %s is a wildcard, and the cluster tells agents, the CLI and the other nodes this node's gRPC address: give --grpc-advertise-addr HOST:PORT, the address they dial", cfg.GRPCAddr)
		}
		id := &identity{NodeID: cfg.NodeID, GRPCAddr: cfg.GRPCAddr, RaftAddr: cfg.RaftAddr}
		if cfg.GRPCAdvertiseAddr != cfg.GRPCAddr {
			id.GRPCAdvertiseAddr = cfg.GRPCAdvertiseAddr
		}
		if cfg.RaftAdvertiseAddr != cfg.RaftAddr {
			id.RaftAdvertiseAddr = cfg.RaftAdvertiseAddr
		}
		return id, nil
	}
	// The advertised addresses are in the other nodes' Raft configuration
	// and catalog: changing one is a membership change (remove-member,
	// then join anew).
	for _, f := range []struct{ name, flag, saved string }{
		{"--node-id", cfg.NodeID, saved.NodeID}, {"--grpc-addr", cfg.GRPCAddr, saved.GRPCAddr}, {"--raft-addr", cfg.RaftAddr, saved.RaftAddr},
		{"--grpc-advertise-addr", cfg.GRPCAdvertiseAddr, saved.grpcAdvertise()}, {"--raft-advertise-addr", cfg.RaftAdvertiseAddr, saved.raftAdvertise()},
	} {
		if f.flag != "" && f.flag != f.saved {
			grpc, raft := saved.GRPCAddr, saved.RaftAddr
			if saved.GRPCAdvertiseAddr != "" {
				grpc += ", advertised as " + saved.GRPCAdvertiseAddr
			}
			if saved.RaftAdvertiseAddr != "" {
				raft += ", advertised as " + saved.RaftAdvertiseAddr
			}
			return nil, fmt.Errorf("data dir %s belongs to node %s (grpc %s; raft %s): %s %s contradicts it; leave the flag out, or use another --data-dir",
				cfg.DataDir, saved.NodeID, grpc, raft, f.name, f.flag)
		}
	}
	return saved, nil
}
