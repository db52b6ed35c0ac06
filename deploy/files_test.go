package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tidemark-backup/tidemark/agent"
	"github.com/tidemark-backup/tidemark/cli"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	"github.com/tidemark-backup/tidemark/internal/version"
)

// TestSystemdUnits runs `systemd-analyze verify` on both units, the agent's
// with its drop-ins, and fails on any complaint (verify exits 0 on an
// unknown key; it only warns). The binary path is pointed at a stand-in,
// since verify refuses an ExecStart that does not exist. systemd-analyze
// comes with Debian's systemd package, which `make deps` installs: without
// it the test skips outside CI and fails under CI=true, like every other
// missing dependency (the units are not run, only analysed).
func TestSystemdUnits(t *testing.T) {
	sa := testenv.RequireBinary(t, "systemd-analyze", "apt-get install -y systemd (or make deps)")
	dir := t.TempDir()
	stub := filepath.Join(dir, "tidemark")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	place := func(src, dst string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte("/usr/local/bin/tidemark"), []byte(stub))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	place("systemd/tidemark-controller.service", filepath.Join(dir, "tidemark-controller.service"))
	place("systemd/tidemark-agent.service", filepath.Join(dir, "tidemark-agent.service"))
	// systemd's own exposure score (0 best, 10 worst), offline, of the base units (the snapshot drop-in runs the agent as
	// root): measured
	// 1.5 for the controller and 3.0 for the agent (no system call filter:
	// its children inherit it; /proc visible: a restore looks for servers
	// using its directory). A unit that loosens its sandbox fails here.
	for unit, max := range map[string]int{"tidemark-controller.service": 20, "tidemark-agent.service": 35} {
		cmd := exec.Command(sa, "security", "--offline=true", fmt.Sprintf("--threshold=%d", max), filepath.Join(dir, unit))
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
		out, err := cmd.CombinedOutput()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		last := lines[len(lines)-1]
		if err != nil && strings.Contains(string(out), "unrecognized option") {
			t.Logf("systemd-analyze security: this systemd has no --offline/--threshold (since 250): exposure not checked")
			break
		}
		if err != nil {
			t.Errorf("systemd-analyze security %s: %v; above %d.%d: %s", unit, err, max/10, max%10, last)
		} else {
			t.Log(last)
		}
	}
	// The drop-ins are verified with the agent's unit.
	place("systemd/agent-join.conf", filepath.Join(dir, "tidemark-agent.service.d", "join.conf"))
	place("systemd/agent-snapshot.conf", filepath.Join(dir, "tidemark-agent.service.d", "snapshot.conf"))
	for _, unit := range []string{"tidemark-controller.service", "tidemark-agent.service"} {
		cmd := exec.Command(sa, "verify", filepath.Join(dir, unit))
		// Drop-ins are found next to the unit on the search path.
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
		}
	}
	// The hardening the issue asks for is there, in the base units.
	for _, unit := range []string{"tidemark-controller.service", "tidemark-agent.service"} {
		b, err := os.ReadFile(filepath.Join("systemd", unit))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"User=tidemark", "ProtectSystem=strict", "ProtectHome=yes", "NoNewPrivileges=yes",
			"PrivateTmp=yes", "StateDirectory=tidemark", "Restart=on-failure"} {
			if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).Match(b) {
				t.Errorf("%s lacks %s", unit, want)
			}
		}
	}
}

// TestExampleConfigs: the agent example loads with the agent's own loader
// (which refuses unknown keys) and validates; every key of the controller
// example is a `tidemark controller` flag (the controller's config file,
// one key per flag with '_' for '-', is being added on the ops-cli branch).
func TestExampleConfigs(t *testing.T) {
	cfg := agent.DefaultConfig()
	if err := cfg.LoadFile("examples/agent.yaml"); err != nil {
		t.Fatalf("examples/agent.yaml: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("examples/agent.yaml does not validate: %v", err)
	}
	if len(cfg.Controllers) != 3 || cfg.TLS.Cert == "" || cfg.Repo == "" {
		t.Errorf("examples/agent.yaml loaded as controllers %v, cert %q, repo %q", cfg.Controllers, cfg.TLS.Cert, cfg.Repo)
	}

	b, err := os.ReadFile("examples/controller.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]any
	if err := yaml.Unmarshal(b, &keys); err != nil {
		t.Fatalf("examples/controller.yaml: %v", err)
	}
	var ctl = root()
	for _, c := range ctl.Commands() {
		if c.Name() == "controller" {
			ctl = c
		}
	}
	for k := range keys {
		flag := strings.ReplaceAll(k, "_", "-")
		switch {
		case ctl.Flags().Lookup(flag) != nil || ctl.InheritedFlags().Lookup(flag) != nil:
		case pendingFlags["controller --"+flag] != "":
			t.Logf("controller.yaml key %s: flag --%s is not in this binary yet (branch %s)", k, flag, pendingFlags["controller --"+flag])
		default:
			t.Errorf("examples/controller.yaml: key %s is no `tidemark controller` flag (--%s)", k, flag)
		}
	}
	if len(keys) < 10 {
		t.Errorf("examples/controller.yaml has %d keys; parsed wrong?", len(keys))
	}
}

// TestDockerfile: the image is built from ./cmd/tidemark with cgo (libzstd),
// stamps the version variables that exist, uses the go.mod Go version, runs
// as a non-root user, and checks `tidemark version` says libzstd in the
// form the command prints. Docker is not run here (no daemon, no registry).
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	_ = version.Version // the -X targets below exist (compile-time)
	_ = version.Commit
	for _, want := range []string{
		"CGO_ENABLED=1",
		"./cmd/tidemark",
		"-X github.com/tidemark-backup/tidemark/internal/version.Version=",
		"-X github.com/tidemark-backup/tidemark/internal/version.Commit=",
		"gcc",
		"COPY --from=build /out/tidemark /usr/local/bin/tidemark",
		`ENTRYPOINT ["/usr/local/bin/tidemark"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVer := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if goVer == nil || !strings.Contains(df, "ARG GO_VERSION="+string(goVer[1])+"\n") {
		t.Errorf("Dockerfile's GO_VERSION is not go.mod's go %s", goVer)
	}
	user := regexp.MustCompile(`(?m)^USER (\S+)$`).FindAllStringSubmatch(df, -1)
	if len(user) == 0 {
		t.Error("Dockerfile has no USER: the image would run as root")
	}
	for _, u := range user {
		if u[1] == "root" || u[1] == "0" || strings.HasPrefix(u[1], "0:") {
			t.Errorf("Dockerfile runs as %s", u[1])
		}
	}
	// The build stage's check matches what `tidemark version` prints.
	check := regexp.MustCompile(`grep -q '(\^zstd: [^']*)'`).FindStringSubmatch(df)
	if check == nil {
		t.Fatal("Dockerfile does not check the zstd implementation of the binary it built")
	}
	if !strings.Contains(check[1], archive.ZstdLibzstd) {
		t.Errorf("Dockerfile checks %q, not %s", check[1], archive.ZstdLibzstd)
	}
	if archive.ZstdImplementation().Name == archive.ZstdLibzstd {
		var out bytes.Buffer
		r := cli.NewRoot(strings.NewReader(""), &out, &out)
		r.SetArgs([]string{"version"})
		if err := r.Execute(); err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)` + check[1]).MatchString(out.String()) {
			t.Errorf("the Dockerfile's check %q does not match `tidemark version`:\n%s", check[1], out.String())
		}
	}
}
