package metrics

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// readSeries parses path into "name{k=v,...}" → value, labels sorted by
// the parser.
func readSeries(t *testing.T, path string) map[string]float64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("%s: %v\n%s", path, err, b)
	}
	out := map[string]float64{}
	for name, mf := range fams {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			out[name+"{"+strings.Join(ls, ",")+"}"] = m.GetGauge().GetValue()
		}
	}
	return out
}

func TestWriteRunTextfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tidemark.prom")
	t1 := time.Unix(1_800_000_000, 0)
	ok := Run{Job: Job{Kind: "backup", Engine: "logical", Took: 90 * time.Second, LogicalBytes: 1000, StoredBytes: 400, NewBytes: 100, Lock: 20 * time.Millisecond},
		Instance: "db1", End: t1}
	if err := WriteRunTextfile(path, ok); err != nil {
		t.Fatal(err)
	}
	failed := Run{Job: Job{Kind: "backup", Engine: "logical", Err: errors.New("boom"), Took: 5 * time.Second}, Instance: "db1", End: t1.Add(time.Hour)}
	if err := WriteRunTextfile(path, failed); err != nil {
		t.Fatal(err)
	}
	other := Run{Job: Job{Kind: "backup", Engine: "mariabackup", Took: time.Second}, Instance: "db2", End: t1.Add(2 * time.Hour)}
	if err := WriteRunTextfile(path, other); err != nil {
		t.Fatal(err)
	}
	got := readSeries(t, path)
	want := map[string]float64{
		// The failed run replaced the successful one's last-run series...
		"tidemark_standalone_last_run_timestamp_seconds{engine=logical,instance=db1,kind=backup,outcome=failed}": float64(t1.Add(time.Hour).Unix()),
		"tidemark_standalone_last_run_duration_seconds{engine=logical,instance=db1,kind=backup,outcome=failed}":  5,
		// ...but not its last success, bytes and lock time.
		"tidemark_standalone_last_success_timestamp_seconds{instance=db1,kind=backup}":                           float64(t1.Unix()),
		"tidemark_standalone_last_backup_bytes{engine=logical,instance=db1,state=logical}":                       1000,
		"tidemark_standalone_last_backup_bytes{engine=logical,instance=db1,state=stored}":                        400,
		"tidemark_standalone_last_backup_bytes{engine=logical,instance=db1,state=new}":                           100,
		"tidemark_standalone_last_backup_lock_seconds{engine=logical,instance=db1}":                              0.02,
		"tidemark_standalone_last_run_timestamp_seconds{engine=mariabackup,instance=db2,kind=backup,outcome=ok}": float64(t1.Add(2 * time.Hour).Unix()),
		"tidemark_standalone_last_run_duration_seconds{engine=mariabackup,instance=db2,kind=backup,outcome=ok}":  1,
		"tidemark_standalone_last_success_timestamp_seconds{instance=db2,kind=backup}":                           float64(t1.Add(2 * time.Hour).Unix()),
		"tidemark_standalone_last_backup_bytes{engine=mariabackup,instance=db2,state=logical}":                   0,
		"tidemark_standalone_last_backup_bytes{engine=mariabackup,instance=db2,state=stored}":                    0,
		"tidemark_standalone_last_backup_bytes{engine=mariabackup,instance=db2,state=new}":                       0,
		"tidemark_standalone_last_backup_lock_seconds{engine=mariabackup,instance=db2}":                          0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if len(got) != len(want) {
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("unexpected series %s", k)
			}
		}
	}

	// A file tidemark did not write is refused, not replaced.
	foreign := filepath.Join(t.TempDir(), "node.prom")
	if err := os.WriteFile(foreign, []byte("node_custom 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteRunTextfile(foreign, ok); err == nil || !strings.Contains(err.Error(), "node_custom") {
		t.Errorf("foreign metrics file: %v", err)
	}
	garbage := filepath.Join(t.TempDir(), "x.prom")
	if err := os.WriteFile(garbage, []byte("{{{ not metrics\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteRunTextfile(garbage, ok); err == nil || !strings.Contains(err.Error(), "give a file of its own") {
		t.Errorf("garbage metrics file: %v", err)
	}
	if b, _ := os.ReadFile(garbage); string(b) != "{{{ not metrics\n" {
		t.Error("the unreadable file was replaced")
	}
}
