package cli

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestVersionZstd: `tidemark version` names the zstd implementation this
// build links (wantZstd comes from a cgo or !cgo test file), in JSON and in
// text, so an operator can tell a CGO_ENABLED=0 build from the cgo one.
func TestVersionZstd(t *testing.T) {
	code, out, errOut := run(t, "version", "-o", "json")
	if code != 0 {
		t.Fatalf("version -o json: exit %d: %s", code, errOut)
	}
	var v struct {
		Version   string `json:"version"`
		GoVersion string `json:"go_version"`
		Zstd      struct {
			Implementation string `json:"implementation"`
			Module         string `json:"module"`
			Cgo            *bool  `json:"cgo"`
		} `json:"zstd"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("version -o json is not JSON: %v\n%s", err, out)
	}
	if v.Zstd.Implementation != wantZstd || v.Zstd.Cgo == nil || *v.Zstd.Cgo != wantCgo || v.Zstd.Module == "" {
		t.Errorf("zstd = %+v (cgo %v), want %s with cgo=%v and a module", v.Zstd, v.Zstd.Cgo, wantZstd, wantCgo)
	}
	if !strings.HasPrefix(v.GoVersion, "go") || v.Version == "" {
		t.Errorf("version %q, go_version %q", v.Version, v.GoVersion)
	}

	code, out, errOut = run(t, "version")
	if code != 0 {
		t.Fatalf("version: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "\nzstd: "+wantZstd+" (") {
		t.Errorf("text output lacks the zstd line for %s:\n%s", wantZstd, out)
	}
	if !wantCgo && !strings.Contains(out, "built without cgo") {
		t.Errorf("a build without cgo does not say so:\n%s", out)
	}

	if code, _, errOut = run(t, "version", "-o", "yaml"); code == 0 || !strings.Contains(errOut, `"yaml"`) {
		t.Errorf("version -o yaml: exit %d, %q; want a refusal naming the format", code, errOut)
	}
}
