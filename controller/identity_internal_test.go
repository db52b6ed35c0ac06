package controller

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestResolveIdentityAdvertise: a new node records the advertised
// addresses only when they differ from the listen addresses; a node.json
// written before --*-advertise-addr (no such keys) advertises its listen
// addresses and accepts them as flags; a contradicting advertised address
// and a wildcard --grpc-addr with nothing to publish are refused.
func TestResolveIdentityAdvertise(t *testing.T) {
	cfg := Config{DataDir: "d", NodeID: "c1", GRPCAddr: "0.0.0.0:7400", GRPCAdvertiseAddr: "10.0.0.1:7400",
		RaftAddr: "127.0.0.1:7401", RaftAdvertiseAddr: "10.0.0.1:7401"}
	id, err := resolveIdentity(&cfg, nil)
	if err != nil || id.grpcAdvertise() != "10.0.0.1:7400" || id.raftAdvertise() != "10.0.0.1:7401" || id.RaftAddr != "127.0.0.1:7401" {
		t.Fatalf("new node: %+v, %v", id, err)
	}
	same := Config{DataDir: "d", NodeID: "c1", GRPCAddr: "10.0.0.1:7400", GRPCAdvertiseAddr: "10.0.0.1:7400", RaftAddr: "10.0.0.1:7401"}
	if id, err := resolveIdentity(&same, nil); err != nil || id.GRPCAdvertiseAddr != "" || id.RaftAdvertiseAddr != "" {
		t.Fatalf("advertised = listen addresses: %+v, %v; want no advertise keys", id, err)
	}
	wild := Config{DataDir: "d", NodeID: "c1", GRPCAddr: ":7400", RaftAddr: "10.0.0.1:7401"}
	if _, err := resolveIdentity(&wild, nil); err == nil || !strings.Contains(err.Error(), "give --grpc-advertise-addr HOST:PORT") {
		t.Fatalf("wildcard --grpc-addr without an advertised one: %v", err)
	}

	// A node.json from before the advertise keys.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, identityFile), []byte(`{"node_id":"c1","grpc_addr":"10.0.0.1:7400","raft_addr":"10.0.0.1:7401"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	saved, err := loadIdentity(dir)
	if err != nil || saved.grpcAdvertise() != "10.0.0.1:7400" || saved.raftAdvertise() != "10.0.0.1:7401" {
		t.Fatalf("old node.json: %+v, %v", saved, err)
	}
	again := Config{DataDir: dir, RaftAdvertiseAddr: "10.0.0.1:7401", GRPCAdvertiseAddr: "10.0.0.1:7400"}
	if _, err := resolveIdentity(&again, saved); err != nil {
		t.Fatalf("old node.json, advertised addresses equal to its own: %v", err)
	}
	moved := Config{DataDir: dir, RaftAdvertiseAddr: "10.0.0.9:7401"}
	if _, err := resolveIdentity(&moved, saved); err == nil || !strings.Contains(err.Error(), "--raft-advertise-addr 10.0.0.9:7401 contradicts it") {
		t.Fatalf("a moved advertised address: %v", err)
	}

	// Saved and loaded again, the advertised addresses survive.
	if err := id.save(dir); err != nil {
		t.Fatal(err)
	}
	back, err := loadIdentity(dir)
	if err != nil || *back != *id {
		t.Fatalf("saved %+v, loaded %+v, %v", id, back, err)
	}
}
