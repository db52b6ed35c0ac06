package yamlx

import (
	"strings"
	"testing"
)

type item struct {
	Name  string `yaml:"name"`
	Count int    `yaml:"count"`
	List  []struct {
		Key string `yaml:"key"`
	} `yaml:"list"`
}

func TestDecodeAll(t *testing.T) {
	docs, err := DecodeAll[item]([]byte("name: a\ncount: 1\n---\n# empty\n---\nname: b\nlist:\n  - key: x\n  - key: y\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 || docs[0].Value.Name != "a" || docs[1].Value.Name != "b" || docs[1].Line != 6 {
		t.Fatalf("docs %+v", docs)
	}
	if l := Line(docs[1].Node, "list", "1", "key"); l != 9 {
		t.Fatalf("line of list[1].key = %d, want 9", l)
	}
	if l := Line(docs[1].Node, "list", "7"); l != 7 {
		t.Fatalf("line of a missing item = %d, want the list's 7", l)
	}
	if !strings.Contains(docs[1].Source, "key: y") {
		t.Fatalf("source %q", docs[1].Source)
	}
}

func TestStrict(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"name: a\ncolour: red\n", "document 1: line 2: unknown key colour"},
		{"name: a\n---\nname: b\ncount: many\n", "document 2: line 4: cannot unmarshal !!str `many` into int"},
		{"name: [\n", "document 1: yaml: line 1"},
		{"- a\n", "document 1: line 1: cannot unmarshal !!seq where a mapping (key: value) is expected"},
		{"name: a\nlist: {key: x}\n", "document 1: line 2: cannot unmarshal !!map where a list is expected"},
		{"name: a\nlist:\n  - 5\n", "document 1: line 3: cannot unmarshal !!int `5` where a mapping (key: value) is expected"},
	} {
		_, err := DecodeAll[item]([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.in, err, c.want)
		}
	}
	var it item
	if err := Decode([]byte("nme: a\n"), &it); err == nil || err.Error() != "line 1: unknown key nme" {
		t.Errorf("Decode: %v", err)
	}
	if err := Decode(nil, &it); err != nil {
		t.Errorf("empty: %v", err)
	}
}
