package apply

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestServeTLS rolls a TLS target forward through the replication method
// with the source speaking TLS, and proves it from both sides: the source
// counts its TLS logins, and the target's replication status says it
// connected with MASTER_SSL and checked the certificate. Auto turns TLS on
// because the target's DSN uses TLS; an ephemeral certificate is verified
// through the CA file written for the target (a loopback serve address);
// an operator's certificate is verified with its CA, or, without one, is
// used unverified with a warning. Each run starts from an empty target.
// Refusals: a replica that logs in without TLS, a certificate the
// target's CA does not sign, one that does not name the serve host: each
// ends the apply at once with what the target said, leaving no
// replication connection. Not parallel: the refusal sets a package hook.
func TestServeTLS(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "tls-src"})
	src.Exec(t, baseSQL...)
	src.Exec(t, afterBaseSQL...)
	end := record(t, "end", src.DB(t))
	files := snapshotFiles(t, binlogFiles(t, src), "")
	dst, tf := testenv.StartMariaDBTLS(t, testenv.MariaDBOptions{Name: "tls-dst"})
	dsn := fmt.Sprintf("tls_user@tcp(127.0.0.1:%d)/?ssl-mode=verify-ca&ssl-ca=%s", dst.Port, tf.CA)
	// StartMariaDBTLS writes the server's pair, which names 127.0.0.1 and
	// is signed by tf.CA, beside the CA: an operator's certificate.
	srvCert, srvKey := filepath.Join(filepath.Dir(tf.CA), "server.pem"), filepath.Join(filepath.Dir(tf.CA), "server-key.pem")
	reset := func() {
		t.Helper()
		dst.Exec(t, "DROP DATABASE IF EXISTS b")
	}

	for _, c := range []struct {
		name         string
		tls          SourceTLS
		verified     bool
		warning      string
		ephemeralCA  bool
		wantEphemera bool
	}{
		{name: "auto, ephemeral, verified by its CA file", verified: true, wantEphemera: true, ephemeralCA: true},
		{name: "operator's pair and CA", tls: SourceTLS{CertFile: srvCert, KeyFile: srvKey, CAFile: tf.CA}, verified: true},
		{name: "operator's pair without CA", tls: SourceTLS{Mode: TLSOn, CertFile: srvCert, KeyFile: srvKey}, warning: "does not verify"},
	} {
		reset()
		res := apply(t, Params{DSN: dsn, Files: files, Method: MethodReplication, TLS: c.tls})
		sumsEqual(t, c.name, testenv.Checksums(t, dst.DB(t)), end.sums)
		if res.TLS == nil || res.TLS.Sessions < 1 || !strings.HasPrefix(res.TLS.Version, "TLS 1.") {
			t.Fatalf("%s: TLS %+v, want sessions served over TLS", c.name, res.TLS)
		}
		if res.TLS.Verified != c.verified || res.TLS.Ephemeral != c.wantEphemera {
			t.Errorf("%s: TLS %+v, want verified %v, ephemeral %v", c.name, res.TLS, c.verified, c.wantEphemera)
		}
		if c.ephemeralCA && !strings.Contains(res.TLS.CAFile, "tidemark-pitr-tls-") {
			t.Errorf("%s: the target verified with CA file %q, want the ephemeral one", c.name, res.TLS.CAFile)
		}
		if w := strings.Join(res.Warnings, "; "); (c.warning == "" && strings.Contains(w, "does not verify")) || !strings.Contains(w, c.warning) {
			t.Errorf("%s: warnings %q, want %q", c.name, w, c.warning)
		}
		if c.ephemeralCA {
			if m, _ := filepath.Glob(filepath.Join(filepath.Dir(res.TLS.CAFile), "*")); len(m) != 0 {
				t.Errorf("%s: the ephemeral CA file is left behind: %v", c.name, m)
			}
		}
		noPITRConnection(t, dst)
		t.Logf("%s: %+v", c.name, *res.TLS)
	}

	// Off, or a plaintext target DSN: no TLS at all.
	reset()
	res := apply(t, Params{DSN: dst.DSN, Files: files, Method: MethodReplication})
	if res.TLS != nil {
		t.Errorf("plaintext target DSN: TLS %+v, want none", res.TLS)
	}
	reset()
	if res := apply(t, Params{DSN: dsn, Files: files, Method: MethodReplication, TLS: SourceTLS{Mode: TLSOff}}); res.TLS != nil {
		t.Errorf("TLS off: TLS %+v, want none", res.TLS)
	}

	refused := func(name string, p Params, wants ...string) {
		t.Helper()
		reset()
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(time.Minute))
		defer cancel()
		began := time.Now()
		p.DSN, p.Files, p.Method = dsn, files, MethodReplication
		_, err := Apply(ctx, p)
		if err == nil {
			t.Fatalf("%s: the apply succeeded", name)
		}
		for _, w := range wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", name, err, w)
			}
		}
		if took := time.Since(began); took > ioGrace {
			t.Errorf("%s: took %v, not ended at once", name, took)
		}
		noPITRConnection(t, dst)
		if sums := testenv.Checksums(t, dst.DB(t)); len(sums) != 0 {
			t.Errorf("%s: tables on the target: %v", name, sums)
		}
		t.Logf("%s (%v): %v", name, time.Since(began).Round(time.Millisecond), err)
	}
	testHookPlainReplica = true
	refused("a plaintext replica", Params{TLS: SourceTLS{Mode: TLSOn}}, "without TLS", "the target says", "requires TLS")
	testHookPlainReplica = false
	refused("a certificate from another CA", Params{TLS: SourceTLS{CertFile: srvCert, KeyFile: srvKey, CAFile: tf.OtherCA}},
		"over TLS", "the target says", "certificate")
	refused("a certificate that does not name the host", Params{TLS: SourceTLS{CertFile: tf.ClientCert, KeyFile: tf.ClientKey, CAFile: tf.CA}},
		"over TLS", "the target says")
	refused("a CA file the target cannot read", Params{TLS: SourceTLS{CertFile: srvCert, KeyFile: srvKey, CAFile: "/nonexistent/ca.pem"}},
		"over TLS", "the target says", "/nonexistent/ca.pem")
}

// TestServeTLSFallback: the sql method, which opens no replication
// connection, is unaffected by serve TLS: auto falls back to it for a
// target account that may not replicate, over a TLS DSN, and applies.
func TestServeTLSFallback(t *testing.T) {
	t.Parallel()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "tlsfb-src"})
	src.Exec(t, baseSQL...)
	src.Exec(t, afterBaseSQL...)
	end := record(t, "end", src.DB(t))
	files := snapshotFiles(t, binlogFiles(t, src), "")
	dst, tf := testenv.StartMariaDBTLS(t, testenv.MariaDBOptions{Name: "tlsfb-dst"})
	dst.Exec(t, "CREATE USER 'restorer'@'%' IDENTIFIED BY 'pw' REQUIRE SSL",
		"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, BINLOG REPLAY ON *.* TO 'restorer'@'%'")
	dsn := fmt.Sprintf("restorer:pw@tcp(127.0.0.1:%d)/?ssl-mode=verify-ca&ssl-ca=%s", dst.Port, tf.CA)
	res := apply(t, Params{DSN: dsn, Files: files})
	if res.Method != MethodSQL || res.TLS != nil {
		t.Errorf("method %q, TLS %+v; want sql, no replication TLS", res.Method, res.TLS)
	}
	sumsEqual(t, "fallback over TLS", testenv.Checksums(t, dst.DB(t)), end.sums)
}

// TestServeTLSSettings: contradictory settings are refused before
// anything is read or written.
func TestServeTLSSettings(t *testing.T) {
	for _, c := range []struct {
		tls    SourceTLS
		method string
		want   string
	}{
		{SourceTLS{Mode: "maybe"}, "", "unknown serve TLS mode"},
		{SourceTLS{CertFile: "c.pem"}, "", "go together"},
		{SourceTLS{CAFile: "ca.pem"}, "", "give the certificate and key too"},
		{SourceTLS{Mode: TLSOff, CertFile: "c.pem", KeyFile: "k.pem"}, "", "TLS is off"},
		{SourceTLS{Mode: TLSOn}, MethodSQL, "sql method opens no replication connection"},
	} {
		_, err := Apply(context.Background(), Params{DSN: "nobody@tcp(127.0.0.1:1)/", Files: []File{{Name: "x"}}, Method: c.method, TLS: c.tls})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.tls, err, c.want)
		}
	}
	if _, err := newSourceTLS(SourceTLS{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}, "127.0.0.1"); err == nil || !strings.Contains(err.Error(), "/nonexistent/c.pem") {
		t.Errorf("a missing certificate file: %v", err)
	}
}

// TestSourceTLSRemote: an ephemeral certificate for a serve address that
// is not loopback (a target on another host) writes no CA file and tells
// the target to encrypt without verifying; on loopback the certificate
// names the host and is written for the target to verify with.
func TestSourceTLSRemote(t *testing.T) {
	st, err := newSourceTLS(SourceTLS{}, "192.0.2.7")
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	if st.verify || st.caFile != "" || st.tmpDir != "" || !st.ephemeral {
		t.Errorf("remote ephemeral: %+v, want unverified, no CA file", st)
	}
	if got := st.changeMasterTLS(); got != "MASTER_SSL=1, MASTER_SSL_CA='', MASTER_SSL_VERIFY_SERVER_CERT=0" {
		t.Errorf("remote ephemeral: %s", got)
	}
	leaf, err := x509.ParseCertificate(st.cfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != "192.0.2.7" {
		t.Errorf("certificate names %v, want the serve host", leaf.IPAddresses)
	}
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || leaf.PublicKey.(*ecdsa.PublicKey).Curve.Params().Name != "P-256" {
		t.Errorf("ephemeral key %T, want ECDSA P-256", leaf.PublicKey)
	}

	local, err := newSourceTLS(SourceTLS{}, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if !local.verify || !strings.Contains(local.changeMasterTLS(), "MASTER_SSL_VERIFY_SERVER_CERT=1") {
		t.Errorf("loopback ephemeral: %+v %s", local, local.changeMasterTLS())
	}
	local.close()
	if fileExists(local.caFile) {
		t.Errorf("the CA file %s outlives close", local.caFile)
	}
	if (*sourceTLS)(nil).changeMasterTLS() != "MASTER_SSL=0" {
		t.Error("no TLS must say MASTER_SSL=0")
	}
}

func fileExists(p string) bool {
	m, _ := filepath.Glob(p)
	return len(m) > 0
}
