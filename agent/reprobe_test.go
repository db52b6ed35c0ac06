package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestChanged: what a periodic re-probe reports to the controller. The
// time of the probe never counts, data size and free space only beyond a
// tenth, anything else always.
func TestChanged(t *testing.T) {
	base := func() *probed {
		return &probed{instances: []*v1.Instance{{Name: "db1", Server: &v1.ServerInfo{Flavor: "mariadb", Version: "10.11.19"},
			Capabilities: &v1.Capabilities{Flavor: "mariadb", Version: "10.11.19", Filesystem: v1.Filesystem_FILESYSTEM_BTRFS,
				DataBytes: 1000, SnapshotFreeBytes: 5000, ProbedAt: timestamppb.Now(), BackupTool: "mariabackup", BackupToolVersion: "10.11.19"}}}}
	}
	mod := func(f func(c *v1.Capabilities, in *v1.Instance)) *probed {
		p := base()
		p.instances[0] = proto.CloneOf(p.instances[0])
		f(p.instances[0].Capabilities, p.instances[0])
		return p
	}
	for _, tc := range []struct {
		name string
		cur  *probed
		want bool
	}{
		{"same", base(), false},
		{"probed later", mod(func(c *v1.Capabilities, _ *v1.Instance) { c.ProbedAt = timestamppb.New(c.ProbedAt.AsTime().Add(600e9)) }), false},
		{"data grew 5%", mod(func(c *v1.Capabilities, _ *v1.Instance) { c.DataBytes = 1050 }), false},
		{"data grew 20%", mod(func(c *v1.Capabilities, _ *v1.Instance) { c.DataBytes = 1200 }), true},
		{"free space halved", mod(func(c *v1.Capabilities, _ *v1.Instance) { c.SnapshotFreeBytes = 2500 }), true},
		{"datadir moved to ext4", mod(func(c *v1.Capabilities, _ *v1.Instance) { c.Filesystem = v1.Filesystem_FILESYSTEM_EXT4 }), true},
		{"clone plugin installed", mod(func(c *v1.Capabilities, _ *v1.Instance) { c.Plugins = []string{"clone"} }), true},
		{"tool upgraded", mod(func(c *v1.Capabilities, _ *v1.Instance) { c.BackupToolVersion = "11.4.2" }), true},
		{"server upgraded", mod(func(_ *v1.Capabilities, in *v1.Instance) { in.Server.Version = "10.11.20" }), true},
	} {
		if got := changed(base(), tc.cur); got != tc.want {
			t.Errorf("%s: changed = %v, want %v", tc.name, got, tc.want)
		}
	}
	if !changed(nil, base()) {
		t.Error("no earlier report: must report")
	}
}

// TestReprobe: a connected agent probes again every ReprobeInterval and
// reports on its live stream only what changed: here the host's
// mariabackup is replaced by one of another series.
func TestReprobe(t *testing.T) {
	real, err := exec.LookPath("mariabackup")
	if err != nil {
		if testenv.CI() {
			t.Fatal("mariabackup is not installed (apt-get install mariadb-backup)")
		}
		t.Skip("mariabackup is not installed (apt-get install mariadb-backup)")
	}
	bin := t.TempDir()
	upgraded := filepath.Join(bin, "upgraded")
	script := fmt.Sprintf("#!/bin/sh\nif [ -e %s ]; then echo 'mariabackup based on MariaDB server 11.4.2-MariaDB' >&2; exit 0; fi\nexec %s \"$@\"\n", upgraded, real)
	if err := os.WriteFile(filepath.Join(bin, "mariabackup"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))

	m := testenv.StartMariaDB(t)
	fc := startFake(t)
	cfg := testConfig(t, "db-1", fc.addr)
	cfg.MySQL = m.DSN
	cfg.ReprobeInterval = 200 * time.Millisecond
	runAgent(t, cfg)
	s := fc.next(t, 10*time.Second)
	if v := s.reg.GetInstances()[0].GetCapabilities().GetBackupToolVersion(); !strings.HasPrefix(v, "10.11.") {
		t.Fatalf("registered with mariabackup %q", v)
	}
	select {
	case r := <-s.reprobes:
		t.Fatalf("re-probe reported with nothing changed: %v", r.AgentMessage)
	case <-time.After(testenv.Wait(time.Second)):
	}

	if err := os.WriteFile(upgraded, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := s.await(t, s.reprobes, 10*time.Second, "a re-probe report", func(*v1.AgentMessage) bool { return true })
	reg := r.GetRegister()
	if reg.GetName() != "db-1" || len(reg.GetInstances()) != 1 || reg.GetInstances()[0].GetCapabilities().GetBackupToolVersion() != "11.4.2" {
		t.Fatalf("re-probe report %v", reg)
	}
}
