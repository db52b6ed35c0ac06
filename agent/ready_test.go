package agent

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
)

// TestReadiness: an agent's /readyz (issue 14) is 200 only while it is
// registered with a controller and its repository opened at the last
// check; each way of not being ready is 503 naming it, and readiness comes
// back when the cause goes. /healthz stays 200 throughout.
func TestReadiness(t *testing.T) {
	t.Parallel()
	fc := startFake(t)
	cfg := testConfig(t, "db-ready", fc.addr)
	cfg.MySQL = "tidemark@tcp(" + blackHole(t) + ")/"
	cfg.ProbeTimeout = 300 * time.Millisecond
	cfg.Repo = newRepo(t)
	cfg.RepoCheckInterval = 100 * time.Millisecond
	cfg.MetricsAddr = testenv.FreeAddr(t)
	runAgent(t, cfg)

	// /readyz needs no client certificate (a kubelet's probe has none);
	// its reasons are shown only to one of the cluster CA's.
	src := testCA(t).Source(t, testenv.Admin())
	anon := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: src.Roots(), ServerName: tlsx.AgentServerName, MinVersion: tls.VersionTLS13}}}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: src.Roots(), ServerName: tlsx.AgentServerName, MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return src.Current() }}}}
	getWith := func(c *http.Client, url string) (int, string) {
		resp, err := c.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	get := func(path string) (int, string) {
		return getWith(client, "https://"+cfg.MetricsAddr+path)
	}
	wantReady := func(what string, code int, reason string) {
		t.Helper()
		testenv.WaitFor(t, what, 10*time.Second, func() error {
			got, body := get("/readyz")
			if got != code || !strings.Contains(body, reason) {
				return fmt.Errorf("/readyz: %d %q, want %d naming %q", got, body, code, reason)
			}
			if hc, hb := get("/healthz"); hc != 200 {
				return fmt.Errorf("/healthz: %d %q", hc, hb)
			}
			return nil
		})
	}

	fc.next(t, 10*time.Second)
	wantReady("ready once registered with a reachable repository", 200, "")
	if code, body := getWith(anon, "https://"+cfg.MetricsAddr+"/readyz"); code != 200 {
		t.Errorf("/readyz without a client certificate: %d %q", code, body)
	}

	// The repository goes away: not ready, naming it; back when it returns.
	dir := strings.TrimPrefix(cfg.Repo, "file://")
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	wantReady("not ready without the repository", http.StatusServiceUnavailable, "repository file://"+dir+" unreachable")
	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	wantReady("ready with the repository back", 200, "")

	// The controller goes: its session ends, not ready until it registers
	// again (nowhere to: the only controller is gone).
	fc.srv.Stop()
	wantReady("not ready without a controller", http.StatusServiceUnavailable, "not registered with a controller")
}
