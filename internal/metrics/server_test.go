package metrics

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
)

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServePlain(t *testing.T) {
	r := New()
	var ready atomic.Bool
	r.AddReadyCheck("controller", func() error {
		if ready.Load() {
			return nil
		}
		return errors.New("no leader known")
	})
	s, err := Serve(r, ServeParams{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := "http://" + s.Addr()
	c := http.DefaultClient

	if code, body := get(t, c, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	code, body := get(t, c, base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "controller: no leader known") {
		t.Errorf("/readyz while not ready: %d %q, want 503 naming the check and its reason", code, body)
	}
	ready.Store(true)
	if code, body := get(t, c, base+"/readyz"); code != 200 {
		t.Errorf("/readyz when ready: %d %q", code, body)
	}
	if code, _ := get(t, c, base+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without Pprof: %d, want 404", code)
	}

	r.JobDone(Job{Kind: "backup", Engine: "logical", Took: 3 * time.Second, LogicalBytes: 100, StoredBytes: 40, NewBytes: 10, Lock: 20 * time.Millisecond})
	r.JobDone(Job{Kind: "backup", Engine: "no-such-engine", Err: errors.New("x"), Took: time.Second})
	obs := r.StorageObserver("s3")
	obs.Op("get", time.Millisecond, storage.ErrNotFound)
	obs.Retry("put")
	code, body = get(t, c, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	// A zero TextParser panics (no validation scheme): use NewTextParser.
	tp := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := tp.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	want := map[string]map[string]string{
		"tidemark_jobs_total":               {"kind": "backup", "engine": "other", "outcome": "failed"},
		"tidemark_backup_bytes_total":       {"engine": "logical", "state": "new"},
		"tidemark_storage_operations_total": {"backend": "s3", "op": "get", "outcome": "not_found"},
		"tidemark_storage_retries_total":    {"backend": "s3", "op": "put"},
	}
	for name, labels := range want {
		if v := value(fams[name], labels); v < 1 {
			t.Errorf("%s%v = %v, want >= 1", name, labels, v)
		}
	}
	if h := histCount(fams["tidemark_backup_lock_seconds"], map[string]string{"engine": "logical"}); h != 1 {
		t.Errorf("lock histogram count %d, want 1", h)
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("the Go runtime collector is missing")
	}
}

// value is the value of the counter or gauge series of mf with labels.
func value(mf *dto.MetricFamily, labels map[string]string) float64 {
	if mf == nil {
		return -1
	}
	for _, m := range mf.GetMetric() {
		if matches(m.GetLabel(), labels) {
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func histCount(mf *dto.MetricFamily, labels map[string]string) uint64 {
	if mf == nil {
		return 0
	}
	for _, m := range mf.GetMetric() {
		if matches(m.GetLabel(), labels) && m.GetHistogram() != nil {
			return m.GetHistogram().GetSampleCount()
		}
	}
	return 0
}

func matches(have []*dto.LabelPair, want map[string]string) bool {
	n := 0
	for _, l := range have {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

func TestServeAddressInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	_, err = Serve(New(), ServeParams{Addr: l.Addr().String(), Flag: "--metrics-addr"})
	if err == nil {
		t.Fatal("Serve on an address in use succeeded")
	}
	for _, w := range []string{"--metrics-addr", l.Addr().String(), "already in use"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}
	if _, err := Serve(New(), ServeParams{Addr: "nonsense"}); err == nil || !strings.Contains(err.Error(), "HOST:PORT") {
		t.Errorf("bad address: %v", err)
	}
}

// With TLS, /metrics and pprof need a client certificate of the CA;
// health and readiness answer without one (a kubelet probe has none).
func TestServeTLS(t *testing.T) {
	ca, err := tlsx.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	src, err := tlsx.Issuing(ca, tlsx.Identity{Kind: tlsx.KindAgent, Name: "a1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r := New()
	var ready atomic.Bool
	r.AddReadyCheck("agent", func() error {
		if ready.Load() {
			return nil
		}
		return errors.New("repository s3://bucket unreachable")
	})
	authorize := func(req *http.Request) error {
		if req.Header.Get("Authorization") == "Bearer good" {
			return nil
		}
		return errors.New("access token not valid here")
	}
	checkPeer := func(cert *x509.Certificate) error {
		if cert.Subject.CommonName == "revoked" {
			return errors.New("revoked")
		}
		return nil
	}
	s, err := Serve(r, ServeParams{Addr: "127.0.0.1:0", TLS: src.ServerConfig(), Pprof: true, Authorize: authorize, CheckPeer: checkPeer})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := "https://" + s.Addr()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: tlsx.AgentServerName}}}
	if code, _ := get(t, anon, base+"/healthz"); code != 200 {
		t.Errorf("/healthz without a client certificate: %d", code)
	}
	// Not ready: the code for anyone, the reasons for the cluster's callers.
	if code, body := get(t, anon, base+"/readyz"); code != http.StatusServiceUnavailable || strings.Contains(body, "s3://") {
		t.Errorf("/readyz without a client certificate while not ready: %d %q, want 503 without the reasons", code, body)
	}
	ready.Store(true)
	if code, _ := get(t, anon, base+"/readyz"); code != 200 {
		t.Errorf("/readyz without a client certificate: %d", code)
	}
	for _, p := range []string{"/metrics", "/debug/pprof/"} {
		if code, body := get(t, anon, base+p); code != http.StatusUnauthorized || !strings.Contains(body, "client certificate") {
			t.Errorf("%s without a client certificate: %d %q, want 401 saying what is needed", p, code, body)
		}
	}
	// A bearer credential the daemon's Authorize accepts stands in for the
	// certificate; one it refuses is 403 with its reason.
	for tok, want := range map[string]int{"good": 200, "bad": http.StatusForbidden} {
		req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := anon.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != want || (want != 200 && !strings.Contains(string(b), "not valid here")) {
			t.Errorf("/metrics with bearer %q: %d %q, want %d", tok, resp.StatusCode, b, want)
		}
	}
	certPEM, keyPEM, err := ca.IssueKeyPair(tlsx.Identity{Kind: tlsx.KindUser, Name: "prometheus", Role: tlsx.RoleViewer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: tlsx.AgentServerName, Certificates: []tls.Certificate{cert}}}}
	if code, body := get(t, withCert, base+"/metrics"); code != 200 || !strings.Contains(body, "tidemark_jobs_total") {
		t.Errorf("/metrics with a client certificate: %d", code)
	}
	ready.Store(false)
	if code, body := get(t, withCert, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "agent: repository s3://bucket unreachable") {
		t.Errorf("/readyz with a client certificate while not ready: %d %q, want the reasons", code, body)
	}
	if code, _ := get(t, withCert, base+"/debug/pprof/"); code != 200 {
		t.Errorf("/debug/pprof/ with a client certificate: %d", code)
	}
	// A certificate the daemon refuses (revoked) is 403.
	rPEM, rKey, err := ca.IssueKeyPair(tlsx.Identity{Kind: tlsx.KindAgent, Name: "revoked"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rCert, err := tls.X509KeyPair(rPEM, rKey)
	if err != nil {
		t.Fatal(err)
	}
	revoked := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: tlsx.AgentServerName, Certificates: []tls.Certificate{rCert}}}}
	if code, body := get(t, revoked, base+"/metrics"); code != http.StatusForbidden || !strings.Contains(body, "revoked") {
		t.Errorf("/metrics with a refused certificate: %d %q", code, body)
	}
}

func TestNames(t *testing.T) {
	names := New().Names()
	for _, want := range []string{"tidemark_jobs_total", "tidemark_storage_retries_total", "tidemark_lease_expiries_total"} {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			t.Errorf("Names() = %v lacks %s", names, want)
		}
	}
}
