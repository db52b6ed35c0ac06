package controller_test

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestBadInput: each mistake an operator can make starting a controller
// ends the process at once (or after --join-timeout) with one clear line.
func TestBadInput(t *testing.T) {
	var raftAddr string
	srv, _ := startInProcess(t, func(c *controller.Config) { raftAddr = c.RaftAddr })

	httpSrv := httptest.NewServer(http.NotFoundHandler())
	defer httpSrv.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// gRPC over the cluster's TLS, but no controller services.
	bare := grpc.NewServer(grpc.Creds(credentials.NewTLS(testCA(t).Source(t, testenv.Controller("bare")).ServerConfig())))
	go func() { _ = bare.Serve(lis) }()
	defer bare.Stop()

	// A data dir that belongs to node u1.
	used := newNode(t, "u1")
	used.start(true, "--bootstrap")
	used.Kill()

	// A node that is still trying to join: it serves, but knows no cluster.
	lonely := newNode(t, "l1")
	lonely.start(true, "--join", testenv.FreeAddr(t), "--join-timeout", "1m")

	x1 := testenv.Args(testCA(t).Files(t, testenv.Controller("x1")))
	bare1 := func() []string {
		return []string{"controller", "--node-id", "x1", "--data-dir", filepath.Join(t.TempDir(), "d"), "--grpc-addr", testenv.FreeAddr(t), "--raft-addr", testenv.FreeAddr(t)}
	}
	fresh := func() []string { return append(bare1(), x1...) }
	// A node bootstrapped with its own CA, its key sealed with keyFile.
	keyFile := filepath.Join(t.TempDir(), "ca.key")
	own := &node{Child: testenv.NewChild(t, "o1", tidemarkBin), t: t, id: "o1", dataDir: filepath.Join(t.TempDir(), "data"),
		grpcAddr: testenv.FreeAddr(t), raftAddr: testenv.FreeAddr(t), tls: []string{"--ca-key-file", keyFile}}
	own.start(true, "--bootstrap")
	own.Kill()
	otherKey := filepath.Join(t.TempDir(), "other.key")
	if err := os.WriteFile(otherKey, bytes.Repeat([]byte{1}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	strangers := testenv.NewTestCA(t)
	cases := []struct {
		name string
		args []string
		want string
		code int // the exit code: 1 failed, 2 usage, 4 credential refused, 5 nothing reachable
	}{
		{"NeitherBootstrapNorJoin", fresh(), "is new: give --bootstrap to start a new cluster, or --join GRPC_ADDR", 1},
		{"BootstrapAndJoin", append(fresh(), "--bootstrap", "--join", srv.Addr()), "give --bootstrap (start a new cluster) or --join ADDR (join an existing one), not both", 2},
		{"NoIdentityOnNewDir", []string{"controller", "--data-dir", t.TempDir(), "--bootstrap", "--insecure"}, "a new node needs --node-id, --grpc-addr, --raft-addr", 1},
		{"JoinNothing", append(fresh(), "--join", testenv.FreeAddr(t), "--join-timeout", "1s"), "could not join the cluster via 127.0.0.1:", 5},
		{"JoinNodeWithoutCluster", append(fresh(), "--join", lonely.grpcAddr, "--join-timeout", "1s"), "cannot add this node: it is not part of a bootstrapped cluster, or its cluster has no leader", 1},
		{"JoinHTTPServer", append(fresh(), "--join", strings.TrimPrefix(httpSrv.URL, "http://")), "TLS handshake failed: it does not speak TLS", 5},
		{"JoinRaftPort", append(fresh(), "--join", raftAddr, "--join-timeout", "3s"), "not a tidemark controller: it does not speak gRPC", 5},
		{"JoinOtherGRPC", append(fresh(), "--join", lis.Addr().String()), "not a tidemark controller: it serves gRPC but not the controller API", 5},
		{"OtherNodeID", append([]string{"controller", "--data-dir", used.dataDir, "--node-id", "u2"}, used.tls...), "belongs to node u1", 1},
		{"NoTLS", bare1(), "no TLS: give --ca-key-file FILE", 2},
		{"UnreadableTLSKey", append(bare1(), "--tls-ca", x1[1], "--tls-cert", x1[3], "--tls-key", filepath.Join(t.TempDir(), "missing.pem"), "--bootstrap"), "reading --tls-key: open ", 1},
		{"CertOfOtherNode", append(append(bare1(), testenv.Args(testCA(t).Files(t, testenv.Controller("x2")))...), "--bootstrap"), "names controller x2, but this node is controller x1", 1},
		{"AgentCertAsNode", append(append(bare1(), testenv.Args(testCA(t).Files(t, testenv.Agent("x1")))...), "--bootstrap"), "names agent x1, but this node is controller x1", 1},
		{"CertOfOtherCA", append(append(bare1(), testenv.Args(strangers.Files(t, testenv.Controller("x1")))...), "--join", srv.Addr()), "TLS handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority", 4},
		{"WrongCAKeyFile", []string{"controller", "--data-dir", own.dataDir, "--ca-key-file", otherKey}, "does not open the cluster's CA key", 1},
		{"InsecureNotLoopback", []string{"controller", "--node-id", "x", "--data-dir", t.TempDir(), "--grpc-addr", "0.0.0.0:7400", "--grpc-advertise-addr", "127.0.0.1:7400", "--raft-addr", testenv.FreeAddr(t), "--bootstrap", "--insecure"}, "--insecure (plaintext) is only allowed on loopback addresses", 1},
		{"WildcardRaftAddr", []string{"controller", "--node-id", "x", "--data-dir", t.TempDir(), "--grpc-addr", testenv.FreeAddr(t), "--raft-addr", "0.0.0.0:7401", "--bootstrap", "--insecure"}, `--raft-addr "0.0.0.0:7401": a wildcard needs --raft-advertise-addr HOST:PORT`, 2},
		{"WildcardRaftAdvertiseAddr", append(fresh(), "--raft-advertise-addr", "[::]:7401", "--bootstrap"), `--raft-advertise-addr "[::]:7401": needs a concrete host, not a wildcard`, 2},
		{"RaftAdvertiseAddrWithoutPort", append(fresh(), "--raft-advertise-addr", "10.0.0.1", "--bootstrap"), `--raft-advertise-addr "10.0.0.1": want HOST:PORT`, 2},
		{"RaftAdvertiseAddrPortZero", append(fresh(), "--raft-advertise-addr", "10.0.0.1:0", "--bootstrap"), `--raft-advertise-addr "10.0.0.1:0": needs a fixed port`, 2},
		{"RaftAdvertiseAddrIsGRPCAddr", []string{"controller", "--node-id", "x", "--data-dir", t.TempDir(), "--grpc-addr", "127.0.0.1:7400", "--raft-addr", "127.0.0.1:7401", "--raft-advertise-addr", "127.0.0.1:7400", "--bootstrap", "--insecure"}, "the advertised gRPC and Raft addresses must differ (both are 127.0.0.1:7400)", 2},
		{"WildcardGRPCAddr", []string{"controller", "--node-id", "x", "--data-dir", t.TempDir(), "--grpc-addr", "0.0.0.0:7400", "--raft-addr", testenv.FreeAddr(t), "--bootstrap", "--ca-key-file", filepath.Join(t.TempDir(), "k")}, "--grpc-addr 0.0.0.0:7400 is a wildcard, and the cluster tells agents, the CLI and the other nodes this node's gRPC address: give --grpc-advertise-addr HOST:PORT", 1},
		{"WildcardGRPCAdvertiseAddr", append(fresh(), "--grpc-advertise-addr", "0.0.0.0:7400", "--bootstrap"), `--grpc-advertise-addr "0.0.0.0:7400": needs a concrete host, not a wildcard`, 2},
		{"OtherGRPCAdvertiseAddr", append([]string{"controller", "--data-dir", used.dataDir, "--grpc-advertise-addr", "127.0.0.1:1"}, used.tls...), "--grpc-advertise-addr 127.0.0.1:1 contradicts it", 1},
		{"OtherRaftAdvertiseAddr", append([]string{"controller", "--data-dir", used.dataDir, "--raft-advertise-addr", "127.0.0.1:1"}, used.tls...), "--raft-advertise-addr 127.0.0.1:1 contradicts it", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t0 := time.Now()
			_, errOut, code := run(t, 20*time.Second, c.args...)
			if code != c.code || !strings.Contains(errOut, c.want) || strings.Count(strings.TrimSpace(lastLines(errOut)), "\n") > 0 {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit %d and one line containing %q", code, errOut, c.code, c.want)
			}
			t.Logf("%s: %s", time.Since(t0).Round(time.Millisecond), lastLines(errOut))
		})
	}
}

// lastLines is the error line the CLI prints last, without Raft's own log
// lines above it.
func lastLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
