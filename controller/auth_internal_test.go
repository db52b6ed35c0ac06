package controller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/tidemark-backup/tidemark/controller/fsm"
	"github.com/tidemark-backup/tidemark/internal/tlsx"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestAccessTable fails when an RPC of a service the controller serves has
// no entry in the access table (it would be refused to everyone), or when
// an entry names no RPC.
func TestAccessTable(t *testing.T) {
	seen := map[string]bool{}
	for _, fd := range []protoreflect.FileDescriptor{
		v1.File_tidemark_v1_control_proto, v1.File_tidemark_v1_cluster_proto, v1.File_tidemark_v1_agent_proto, v1.File_tidemark_v1_relay_proto,
		healthpb.File_grpc_health_v1_health_proto,
	} {
		for i := range fd.Services().Len() {
			svc := fd.Services().Get(i)
			for j := range svc.Methods().Len() {
				name := "/" + string(svc.FullName()) + "/" + string(svc.Methods().Get(j).Name())
				seen[name] = true
				a, ok := accessTable[name]
				if !ok {
					t.Errorf("%s has no entry in accessTable", name)
					continue
				}
				if a.user == "" && !a.agent && !a.controller && !a.anonymous {
					t.Errorf("%s: its entry lets no one call it", name)
				}
			}
		}
	}
	for name := range accessTable {
		if !seen[name] {
			t.Errorf("accessTable names %s, which no service has", name)
		}
	}
	if len(seen) < 25 {
		t.Fatalf("only %d RPCs found: are the descriptors right?", len(seen))
	}
}

// TestRolesTable: every identity against every RPC, by class, through the
// interceptors' own check: what each may call is written here a second
// time, independently of accessTable.
func TestRolesTable(t *testing.T) {
	ca, err := tlsx.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	self, err := tlsx.Issuing(ca, tlsx.Identity{Kind: tlsx.KindController, Name: "n1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{tls: self, fsm: fsm.New(), id: identity{NodeID: "n1"}}
	as := func(id *tlsx.Identity) context.Context {
		if id == nil {
			return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{}})
		}
		certPEM, _, err := ca.IssueKeyPair(*id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(certPEM)
		leaf, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
			State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf, ca.Cert}}}}})
	}
	classes := map[string][]string{
		"read": {"ListAgents", "ListInstances", "ListBackups", "GetBackup", "ListJobs", "GetJob", "WatchJob", "GetBinlogStatus", "ClusterStatus", "PlanRetention",
			"ListPolicies", "GetPolicy", "GetSchedule", "GetPolicyStatus", "ExplainEngines"},
		// A node's own status is also how agents and nodes probe an address.
		"probe":   {"NodeStatus"},
		"operate": {"SubmitBackup", "SubmitRestore", "CancelJob", "StartBinlogStream", "StopBinlogStream", "SubmitCopy"},
		"administer": {"AddMember", "RemoveMember", "TransferLeadership", "CreateJoinToken", "RevokeAgent", "ListAudit", "TakeSnapshot",
			"PinBackup", "UnpinBackup", "ApplyRetention", "ExpireBackup", "ApplyPolicies", "DeletePolicy"},
		"agent":  {"Connect", "Put", "Get", "Stat", "List", "Delete", "RenewCertificate"},
		"join":   {"Join"},
		"health": {healthpb.Health_Check_FullMethodName, healthpb.Health_Watch_FullMethodName, healthpb.Health_List_FullMethodName},
	}
	// who may call each class: viewer, operator, admin, agent, controller, no certificate.
	allowed := map[string][6]bool{
		"read":       {true, true, true, false, true, false},
		"operate":    {false, true, true, false, true, false},
		"administer": {false, false, true, false, true, false},
		"agent":      {false, false, false, true, false, false},
		"join":       {false, false, false, false, true, true},
		"probe":      {true, true, true, true, true, false},
		"health":     {true, true, true, true, true, true},
	}
	callers := []*tlsx.Identity{
		{Kind: tlsx.KindUser, Name: "v", Role: tlsx.RoleViewer}, {Kind: tlsx.KindUser, Name: "o", Role: tlsx.RoleOperator},
		{Kind: tlsx.KindUser, Name: "a", Role: tlsx.RoleAdmin}, {Kind: tlsx.KindAgent, Name: "db1"}, {Kind: tlsx.KindController, Name: "n2"}, nil,
	}
	covered := map[string]bool{}
	for class, rpcs := range classes {
		for _, rpc := range rpcs {
			full := ""
			if strings.HasPrefix(rpc, "/") {
				full = rpc // a full name: short names collide (Health/List, RelayService/List)
			}
			for m := range accessTable {
				if full == "" && strings.HasSuffix(m, "/"+rpc) && !strings.HasPrefix(m, "/grpc.health.v1.") {
					full = m
				}
			}
			if full == "" {
				t.Fatalf("no RPC %s", rpc)
			}
			covered[full] = true
			for i, who := range callers {
				_, err := s.authorize(as(who), full, nil)
				if got := err == nil; got != allowed[class][i] {
					name := "no certificate"
					if who != nil {
						name = who.String()
					}
					t.Errorf("%s calling %s (%s): allowed %t, want %t (%v)", name, rpc, class, got, allowed[class][i], err)
				}
			}
		}
	}
	for m := range accessTable {
		if !covered[m] {
			t.Errorf("%s is in no class of this test", m)
		}
	}
}
