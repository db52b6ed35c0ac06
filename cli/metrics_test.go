package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestBackupMetricsTextfile: a standalone backup records its run in
// --metrics-textfile; a failed one records the failure and keeps the last
// success; through a controller the flag is refused.
func TestBackupMetricsTextfile(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "cli-textfile"})
	testenv.LoadSample(t, src.DB(t), "shop", 300)
	repo := "file://" + filepath.Join(t.TempDir(), "repo")
	t.Setenv("TIDEMARK_REPO", "")
	t.Setenv("TIDEMARK_KEY_FILE", "")
	t.Setenv("TIDEMARK_PASSPHRASE_FILE", "")
	if code, _, errs := run(t, "repo", "init", "--repo", repo); code != 0 {
		t.Fatalf("init: %s", errs)
	}
	prom := filepath.Join(t.TempDir(), "tidemark.prom")
	if code, _, errs := run(t, "backup", "--mysql", src.DSN, "--repo", repo, "--instance", "db1", "--metrics-textfile", prom); code != 0 {
		t.Fatalf("backup: %s", errs)
	}
	down := fmt.Sprintf("root@tcp(127.0.0.1:%d)/", freeClosedPort(t))
	if code, _, _ := run(t, "backup", "--mysql", down, "--repo", repo, "--instance", "db1", "--metrics-textfile", prom); code == 0 {
		t.Fatal("a backup of a server that is down succeeded")
	}
	b, err := os.ReadFile(prom)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	series := func(name string, labels map[string]string) float64 {
		for _, m := range fams[name].GetMetric() {
			n := 0
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] == l.GetValue() {
					n++
				}
			}
			if n == len(labels) {
				return m.GetGauge().GetValue()
			}
		}
		return -1
	}
	if v := series("tidemark_standalone_last_run_timestamp_seconds", map[string]string{"kind": "backup", "instance": "db1", "outcome": "failed"}); v <= 0 {
		t.Errorf("the failed run is not the last run: %v\n%s", v, b)
	}
	if v := series("tidemark_standalone_last_run_timestamp_seconds", map[string]string{"outcome": "ok"}); v != -1 {
		t.Errorf("the successful run's last-run series is still there\n%s", b)
	}
	if v := series("tidemark_standalone_last_success_timestamp_seconds", map[string]string{"kind": "backup", "instance": "db1"}); v <= 0 {
		t.Errorf("the last success was lost\n%s", b)
	}
	if v := series("tidemark_standalone_last_backup_bytes", map[string]string{"instance": "db1", "engine": "logical", "state": "logical"}); v <= 0 {
		t.Errorf("the last backup's size is missing\n%s", b)
	}
	if code, _, errs := run(t, "backup", "--instance", "db1", "--controller", "127.0.0.1:1", "--metrics-textfile", prom); code == 0 || !strings.Contains(errs, "--metrics-textfile is for a standalone backup") {
		t.Errorf("through a controller: %d %q", code, errs)
	}
}
