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
	var v map[string]string // every value a string, as before the zstd fields
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("version -o json is not an object of strings: %v\n%s", err, out)
	}
	if v["zstd"] != wantZstd || !strings.HasPrefix(v["zstd_module"], wantModule) {
		t.Errorf("zstd %q, zstd_module %q; want %s from %s", v["zstd"], v["zstd_module"], wantZstd, wantModule)
	}
	if !strings.HasPrefix(v["go_version"], "go") || v["version"] == "" {
		t.Errorf("version %q, go_version %q", v["version"], v["go_version"])
	}

	code, out, errOut = run(t, "version")
	if code != 0 {
		t.Fatalf("version: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "\nzstd: "+wantZstd+" (") {
		t.Errorf("text output lacks the zstd line for %s:\n%s", wantZstd, out)
	}
	if wantZstd == "pure-go" && !strings.Contains(out, "built without cgo") {
		t.Errorf("a build without cgo does not say so:\n%s", out)
	}

	if code, _, errOut = run(t, "version", "-o", "yaml"); code == 0 || !strings.Contains(errOut, `"yaml"`) {
		t.Errorf("version -o yaml: exit %d, %q; want a refusal naming the format", code, errOut)
	}
}
