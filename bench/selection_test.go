package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/engines/selection"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// BenchmarkSelection decides the engine of 10,000 instances as the leader
// does: read every instance from the catalog (one read transaction) and
// run engine selection on its capabilities. The budget is 200 ms
// for the whole fleet; the benchmark fails above it.
func BenchmarkSelection(b *testing.B) {
	const fleet = 10000
	st := catalog.New()
	w := st.Write()
	fss := []v1.Filesystem{v1.Filesystem_FILESYSTEM_BTRFS, v1.Filesystem_FILESYSTEM_EXT4, v1.Filesystem_FILESYSTEM_LVM, v1.Filesystem_FILESYSTEM_XFS}
	for i := range fleet {
		c := &v1.Capabilities{
			Flavor: "mariadb", Version: "10.11.19", BinlogEnabled: true, BinlogFormat: "ROW", GtidMode: "ON",
			Datadir: "/var/lib/mysql", Filesystem: fss[i%len(fss)], SnapshotFreeBytes: uint64(i%50) << 30, DataBytes: uint64(i%200) << 28,
			StorageReachable: i%10 != 0, SelectionProbed: true, BackupTool: "mariabackup", BackupToolVersion: "10.11.19",
		}
		if i%3 == 0 {
			c.Flavor, c.Version, c.Plugins, c.BackupAdmin, c.BackupTool, c.BackupToolVersion = "mysql", "8.0.36", []string{"clone"}, i%2 == 0, "xtrabackup", "8.0.35-30"
		}
		if err := w.PutInstance(&v1.Instance{Name: fmt.Sprintf("db-%05d", i), Agent: fmt.Sprintf("host-%05d", i), Capabilities: c}); err != nil {
			b.Fatal(err)
		}
	}
	w.Commit()

	b.ResetTimer()
	var worst time.Duration
	for b.Loop() {
		start := time.Now()
		chosen := map[string]int{}
		for _, in := range st.Read().Instances() {
			d, err := selection.Decide(in.GetCapabilities(), selection.Preferences{})
			if err != nil {
				b.Fatal(err)
			}
			chosen[d.Chosen()]++
		}
		worst = max(worst, time.Since(start))
		if n := chosen["snapshot"] + chosen["clone"] + chosen["mariabackup"] + chosen["logical"]; n != fleet {
			b.Fatalf("%d decisions for %d instances: %v", n, fleet, chosen)
		}
	}
	b.ReportMetric(float64(worst.Microseconds())/1000, "worst-ms/10k-instances")
	if worst > 200*time.Millisecond {
		b.Fatalf("selection for %d instances took %s, over the 200 ms budget", fleet, worst)
	}
}
