package cli

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"
)

// jsonRuns records, for the whole package run, every command path that a
// test ran through run() with -o json, that succeeded and whose stdout
// parsed as JSON (one document, or JSON lines). TestMain then checks that
// every printing command of the tree is among them: a command added
// without a test of its JSON fails the package, as does -o json output
// that does not parse (at the run that printed it).
var jsonRuns sync.Map

// jsonElsewhere are the printing commands whose -o json a test of another
// package runs and parses, because they need what this package's tests do
// not start (several controller processes), each with that test.
var jsonElsewhere = map[string]string{
	"tidemark cluster transfer-leadership": "controller/handoff_test.go TestLeadershipHandOff (three controller processes)",
	"tidemark cluster remove-member":       "controller/cluster_test.go TestCluster (three controller processes)",
}

// wantsJSON reports whether args ask for -o json.
func wantsJSON(args []string) bool {
	for i, a := range args {
		switch a {
		case "-o", "--output":
			if i+1 < len(args) && args[i+1] == "json" {
				return true
			}
		case "-o=json", "--output=json", "-ojson":
			return true
		}
	}
	return false
}

// parsesAsJSON checks out is one JSON document or JSON lines.
func parsesAsJSON(out string) error {
	out = strings.TrimSpace(out)
	if out == "" {
		return fmt.Errorf("nothing on stdout")
	}
	var v any
	if json.Unmarshal([]byte(out), &v) == nil {
		return nil
	}
	for i, l := range strings.Split(out, "\n") {
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			return fmt.Errorf("line %d %q: %w", i+1, l, err)
		}
	}
	return nil
}

// recordJSON is called by run for every command it runs: a successful
// -o json run must print JSON, and counts for the command's path.
func recordJSON(t *testing.T, args []string, code int, out string) {
	t.Helper()
	if code != 0 || !wantsJSON(args) {
		return
	}
	c, _, err := NewRoot(strings.NewReader(""), io.Discard, io.Discard).Find(args)
	if err != nil || c == nil {
		return
	}
	if err := parsesAsJSON(out); err != nil {
		t.Errorf("tidemark %s: exit 0 but stdout is not JSON: %v", strings.Join(args, " "), err)
		return
	}
	jsonRuns.Store(c.CommandPath(), true)
}

// printingCommands lists every runnable, visible command that takes
// -o/--output (TestEveryPrintingCommandTakesOutput checks that this is
// every command not in noOutput).
func printingCommands() []string {
	var out []string
	walkTree(NewRoot(strings.NewReader(""), io.Discard, io.Discard), func(c *cobra.Command) {
		if c.Runnable() && !c.Hidden && c.Flags().Lookup("output") != nil {
			out = append(out, c.CommandPath())
		}
	})
	sort.Strings(out)
	return out
}

// TestMain runs the package's tests, then, when the whole package ran
// (no -run, -skip or -short, every test passed), fails unless every
// printing command's -o json output was parsed by some test.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	whole := flag.Lookup("test.run").Value.String() == "" && flag.Lookup("test.skip").Value.String() == "" && !testing.Short()
	if code != 0 || !whole {
		os.Exit(code)
	}
	var missing []string
	for _, p := range printingCommands() {
		if _, ok := jsonRuns.Load(p); !ok && jsonElsewhere[p] == "" {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: no test of this package ran these commands with -o json and parsed what they printed (add one, e.g. to TestFleetJSON):\n  %s\n",
			strings.Join(missing, "\n  "))
		os.Exit(1)
	}
	os.Exit(code)
}
