package configfile

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func write(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRead(t *testing.T) {
	p := write(t, "c.yaml", "# comment\na: 1\nb: [x, \"y\"]\nc:\n  k: v\nd:\n")
	got, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{Key: "a", Line: 2, Values: []string{"1"}},
		{Key: "b", Line: 3, Values: []string{"x", "y"}, List: true},
		{Key: "c", Line: 4, Map: map[string]string{"k": "v"}},
		{Key: "d", Line: 6},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	// JSON is YAML; lines count the same way.
	got, err = Read(write(t, "c.json", "{\n  \"a\": 5,\n  \"b\": [\"x\"]\n}\n"))
	if err != nil || len(got) != 2 || got[0].Line != 2 || got[1].Values[0] != "x" {
		t.Fatalf("json: %+v %v", got, err)
	}
	for _, empty := range []string{"", "# nothing\n", "---\n"} {
		if got, err := Read(write(t, "e.yaml", empty)); err != nil || len(got) != 0 {
			t.Errorf("%q: %+v %v", empty, got, err)
		}
	}
}

func TestReadBadInput(t *testing.T) {
	for body, want := range map[string]string{
		"a: 1\na: 2\n":         "line 2: key a: given twice (first on line 1)",
		"- a\n- b\n":           "line 1: expected keys and values",
		"a: 1\n---\nb: 2\n":    "line 2: a second YAML document",
		"a: [[1]]\n":           "line 1: key a: expected a list of plain values",
		"a:\n  b:\n    c: 1\n": "line 2: key a: expected name: value pairs of plain values",
		"a:\n  b: 1\n  b: 2\n": `line 3: key a: "b" given twice`,
		"a: 1\n  b: 2\n":       "line 2: mapping values are not allowed",
		"[a, b]: 1\n":          "line 1: a key must be a plain name",
	} {
		p := write(t, "bad.yaml", body)
		_, err := Read(p)
		if err == nil || !strings.Contains(err.Error(), "config file "+p) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want %q", body, err, want)
		}
	}
	if _, err := Read(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}
