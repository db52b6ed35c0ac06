package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/tlsx"
)

func validConfig() Config {
	c := DefaultConfig()
	c.Name = "db-1"
	c.Controllers = []string{"ctl-1:7070", "[::1]:7070"}
	c.MySQL = "backup:secret@tcp(127.0.0.1:3306)/"
	c.TLS = tlsx.Files{CA: "ca.pem", Cert: "cert.pem", Key: "key.pem"}
	return c
}

func TestValidate(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		change func(*Config)
		want   []string
	}{
		{"no controller", func(c *Config) { c.Controllers = nil }, []string{"--controller: at least one"}},
		{"bad controller", func(c *Config) { c.Controllers = []string{"ctl-1", "ctl-2:http"} },
			[]string{`--controller "ctl-1": expected host:port`, `--controller "ctl-2:http": port must be a number`}},
		{"bad name", func(c *Config) { c.Name = "db 1" }, []string{`--name "db 1"`}},
		{"empty name", func(c *Config) { c.Name = "" }, []string{`--name ""`}},
		{"bad label", func(c *Config) { c.Labels = map[string]string{"": "x", "ok": "a,b"} },
			[]string{`--labels: key ""`, `--labels: value of "ok"`}},
		{"nothing to back up", func(c *Config) { c.MySQL = "" }, []string{"--mysql: a DSN (or instances in --config) is required"}},
		{"bad dsn", func(c *Config) { c.MySQL = "backup:secret@127.0.0.1" }, []string{"--mysql: invalid MySQL DSN"}},
		{"instance clash", func(c *Config) { c.Instances = map[string]string{"db-1": "u@tcp(h:1)/", "bad name": "x@tcp(h:1)/"} },
			[]string{`instances: "db-1" is the name of the --mysql instance`, `instances: name "bad name"`}},
		{"bad repo", func(c *Config) { c.Repo = "relative/path" }, []string{"--repo: storage URI"}},
		{"both secrets", func(c *Config) { c.Repo = "file:///r"; c.KeyFile = keyFile; c.PassphraseFile = keyFile },
			[]string{"give one, not both"}},
		{"key without repo", func(c *Config) { c.KeyFile = keyFile }, []string{"--key-file: needs --repo"}},
		{"missing key file", func(c *Config) { c.Repo = "file:///r"; c.KeyFile = "/nonexistent/key" }, []string{"--key-file: stat /nonexistent/key"}},
		{"no TLS", func(c *Config) { c.TLS = tlsx.Files{} }, []string{"no TLS credential: give --credentials DIR"}},
		{"insecure remote", func(c *Config) { c.TLS = tlsx.Files{}; c.Insecure = true },
			[]string{"--insecure (plaintext) is only allowed on loopback addresses, and --controller ctl-1:7070 is not loopback"}},
		{"insecure and TLS", func(c *Config) { c.Insecure = true }, []string{"both given"}},
		{"join token without files", func(c *Config) { c.TLS = tlsx.Files{}; c.JoinToken = "tmjoin1.a.b.c" }, []string{"--join-token needs --credentials DIR"}},
		{"negative parallel", func(c *Config) { c.Parallel = -2 }, []string{"--parallel -2"}},
		{"timers", func(c *Config) { c.HeartbeatInterval = 0; c.BackoffMin = time.Second; c.BackoffMax = time.Millisecond },
			[]string{"heartbeat_interval 0s: must be positive", "backoff_max 1ms: must be at least backoff_min (1s)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.change(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Errorf("%d messages, want %d:\n%v", len(lines), len(tc.want), err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing %q in:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("password in message: %v", err)
			}
		})
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	yml := write("agent.yaml", `
controllers: [ctl-1:7070, ctl-2:7070]
name: db-7
labels: {dc: eu}
instances:
  db-7/main: "u:p@tcp(127.0.0.1:3306)/"
  db-7/reports: "u:p@unix(/run/mysqld/reports.sock)/"
heartbeat_interval: 2s
parallel: 4
tls_ca: /etc/tidemark/ca.pem
tls_cert: /etc/tidemark/cert.pem
tls_key: /etc/tidemark/key.pem
metrics_addr: 127.0.0.1:9464
pprof: true
`)
	c := DefaultConfig()
	c.Repo = "file:///kept"
	if err := c.LoadFile(yml); err != nil {
		t.Fatal(err)
	}
	if len(c.Controllers) != 2 || c.Name != "db-7" || c.Labels["dc"] != "eu" || len(c.Instances) != 2 ||
		c.HeartbeatInterval != 2*time.Second || c.Parallel != 4 || c.Repo != "file:///kept" || c.BackoffMax != DefaultConfig().BackoffMax ||
		c.TLS != (tlsx.Files{CA: "/etc/tidemark/ca.pem", Cert: "/etc/tidemark/cert.pem", Key: "/etc/tidemark/key.pem"}) {
		t.Fatalf("config %+v", c)
	}
	if c.MetricsAddr != "127.0.0.1:9464" || !c.Pprof {
		t.Fatalf("metrics_addr/pprof not loaded: %q %v", c.MetricsAddr, c.Pprof)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := c
	bad.MetricsAddr = "9464"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "metrics_addr") {
		t.Errorf("metrics_addr without a host: %v", err)
	}
	bad.MetricsAddr, bad.Pprof = "", true
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "--pprof needs --metrics-addr") {
		t.Errorf("pprof without metrics_addr: %v", err)
	}
	if names := c.instanceNames(); strings.Join(names, ",") != "db-7/main,db-7/reports" {
		t.Fatalf("instances %v", names)
	}
	if v := c.LogValue().String(); strings.Contains(v, ":p@") {
		t.Fatalf("password in log value: %s", v)
	}

	js := write("agent.json", `{"controllers": ["ctl:1"], "mysql": "u@tcp(h:1)/", "backoff_max": "1m"}`)
	c = DefaultConfig()
	if err := c.LoadFile(js); err != nil || c.BackoffMax != time.Minute || c.MySQL != "u@tcp(h:1)/" {
		t.Fatalf("json: %v %+v", err, c)
	}

	for name, body := range map[string]string{
		"typo.yaml":     "controller: [a:1]\n",
		"typo.json":     `{"controller": ["a:1"]}`,
		"duration.yaml": "heartbeat_interval: soon\n",
	} {
		c := DefaultConfig()
		err := c.LoadFile(write(name, body))
		if err == nil {
			t.Errorf("%s accepted", name)
			continue
		}
		t.Logf("%s: %v", name, err)
		if !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
	}
	if err := (&Config{}).LoadFile(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestParseLabels(t *testing.T) {
	l, err := ParseLabels(" dc=eu, tier = gold ,,")
	if err != nil || len(l) != 2 || l["dc"] != "eu" || l["tier"] != "gold" {
		t.Fatalf("%v %v", l, err)
	}
	for _, bad := range []string{"dc", "dc=eu,dc=us"} {
		if _, err := ParseLabels(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestLoadFileWrongKinds: a value of the wrong kind is refused with the
// file, its line and its key.
func TestLoadFileWrongKinds(t *testing.T) {
	dir := t.TempDir()
	for body, want := range map[string]string{
		"name: db7\nparallel: many\n":         `line 2: key parallel: "many": expected a whole number`,
		"\nlabels: [a, b]\n":                  "line 2: key labels: expected name: value pairs, got a list",
		"name: [a, b]\n":                      "line 1: key name: expected one value, got a list",
		"insecure: maybe\n":                   `line 1: key insecure: "maybe": expected true or false`,
		"controllers:\n  a: b\n":              "line 1: key controllers: expected a list, got a mapping",
		"instances:\n  x: [a]\n":              "line 2: key instances: expected name: value pairs of plain values",
		"name: a\nname: b\n":                  "line 2: key name: given twice (first on line 1)",
		"name: a\nlabels: {x: 1}\nrepoo: b\n": `line 3: unknown key "repoo"`,
	} {
		p := filepath.Join(dir, "agent.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		c := DefaultConfig()
		if err := c.LoadFile(p); err == nil || !strings.Contains(err.Error(), "config file "+p+": "+want) {
			t.Errorf("%q: %v; want %q", body, err, want)
		}
	}
	// Empty values set nothing; a comma-separated string is a list.
	p := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(p, []byte("name: \"\"\nheartbeat_interval:\ncontrollers: a:1, b:2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	if err := c.LoadFile(p); err != nil || c.Name != DefaultConfig().Name || c.HeartbeatInterval != DefaultConfig().HeartbeatInterval ||
		strings.Join(c.Controllers, ",") != "a:1,b:2" {
		t.Errorf("empty values: %v %+v", err, c)
	}
}
