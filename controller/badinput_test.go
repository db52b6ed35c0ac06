package controller_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

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
	bare := grpc.NewServer() // gRPC, but no controller services
	go func() { _ = bare.Serve(lis) }()
	defer bare.Stop()

	// A data dir that belongs to node u1.
	used := newNode(t, "u1")
	used.start(true, "--bootstrap")
	used.Kill()

	// A node that is still trying to join: it serves, but knows no cluster.
	lonely := newNode(t, "l1")
	lonely.start(true, "--join", testenv.FreeAddr(t), "--join-timeout", "1m")

	fresh := func() []string {
		return []string{"controller", "--node-id", "x1", "--data-dir", filepath.Join(t.TempDir(), "d"), "--grpc-addr", testenv.FreeAddr(t), "--raft-addr", testenv.FreeAddr(t)}
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"NeitherBootstrapNorJoin", fresh(), "is new: give --bootstrap to start a new cluster, or --join GRPC_ADDR"},
		{"BootstrapAndJoin", append(fresh(), "--bootstrap", "--join", srv.Addr()), "give --bootstrap (start a new cluster) or --join ADDR (join an existing one), not both"},
		{"NoIdentityOnNewDir", []string{"controller", "--data-dir", t.TempDir(), "--bootstrap"}, "a new node needs --node-id, --grpc-addr, --raft-addr"},
		{"JoinNothing", append(fresh(), "--join", testenv.FreeAddr(t), "--join-timeout", "1s"), "could not join the cluster via 127.0.0.1:"},
		{"JoinNodeWithoutCluster", append(fresh(), "--join", lonely.grpcAddr, "--join-timeout", "1s"), "cannot add this node: it is not part of a bootstrapped cluster, or its cluster has no leader"},
		{"JoinHTTPServer", append(fresh(), "--join", strings.TrimPrefix(httpSrv.URL, "http://")), "not a tidemark controller: it does not speak gRPC"},
		{"JoinRaftPort", append(fresh(), "--join", raftAddr), "not a tidemark controller: it does not speak gRPC"},
		{"JoinOtherGRPC", append(fresh(), "--join", lis.Addr().String()), "not a tidemark controller: it serves gRPC but not the controller API"},
		{"OtherNodeID", []string{"controller", "--data-dir", used.dataDir, "--node-id", "u2"}, "belongs to node u1"},
		{"WildcardRaftAddr", []string{"controller", "--node-id", "x", "--data-dir", t.TempDir(), "--grpc-addr", testenv.FreeAddr(t), "--raft-addr", "0.0.0.0:7401", "--bootstrap"}, "needs a concrete host"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t0 := time.Now()
			_, errOut, code := run(t, 20*time.Second, c.args...)
			if code != 1 || !strings.Contains(errOut, c.want) || strings.Count(strings.TrimSpace(lastLines(errOut)), "\n") > 0 {
				t.Fatalf("exit %d, stderr:\n%s\nwant one line containing %q", code, errOut, c.want)
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
