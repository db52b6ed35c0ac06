package agent

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

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
