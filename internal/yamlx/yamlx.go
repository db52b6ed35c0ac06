package yamlx

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// unknownKeyRE matches yaml's message for a key the Go type lacks; it names
// our Go type, which means nothing to the operator.
var unknownKeyRE = regexp.MustCompile(`field (\S+) not found in type \S+`)

// Go type names in yaml's type errors, said in YAML's words instead.
var (
	listTypeRE    = regexp.MustCompile(`into \[\][\w.*]+`)
	mappingTypeRE = regexp.MustCompile(`into (map\[[^\]]+\][\w.*]+|\*?[a-z]\w*\.[A-Za-z]\w*|struct \{.*\})`)
)

// Clean rewrites a yaml decoding error for the operator: "line 3: unknown
// key foo" instead of yaml's "field foo not found in type main.doc", "where
// a list is expected" instead of "into []main.item", all the type errors
// of a document joined with "; ". Other errors pass through unchanged.
func Clean(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		m = unknownKeyRE.ReplaceAllString(m, "unknown key $1")
		m = listTypeRE.ReplaceAllString(m, "where a list is expected")
		msgs[i] = mappingTypeRE.ReplaceAllString(m, "where a mapping (key: value) is expected")
	}
	return errors.New(strings.Join(msgs, "; "))
}

// Decode decodes the single document data into v, refusing unknown keys.
// An empty document sets nothing.
func Decode(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return Clean(err)
	}
	return nil
}

// Document is one decoded document of a stream: its value, its node tree
// (for the line of a key, Line) and its text re-encoded on its own.
type Document[T any] struct {
	Value T
	Node  *yaml.Node
	// Line is the document's first line in the stream.
	Line int
	// Source is the document alone, as YAML (comments kept where yaml
	// keeps them).
	Source string
}

// DecodeAll decodes every document of a `---` separated stream into a new
// T, refusing unknown keys and wrong types (the error names the line).
// Empty documents are dropped.
func DecodeAll[T any](data []byte) ([]Document[T], error) {
	typed := yaml.NewDecoder(bytes.NewReader(data))
	typed.KnownFields(true)
	nodes := yaml.NewDecoder(bytes.NewReader(data))
	var out []Document[T]
	for i := 1; ; i++ {
		var n yaml.Node
		err := nodes.Decode(&n)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		var v T
		if err := typed.Decode(&v); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("document %d: %w", i, Clean(err))
		}
		if len(n.Content) == 0 || (n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null") {
			continue
		}
		src, err := yaml.Marshal(&n)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		out = append(out, Document[T]{Value: v, Node: &n, Line: n.Content[0].Line, Source: string(src)})
	}
}

// Line returns the line of the value at path in a document's tree: map
// keys by name, sequence items by their decimal index ("backups", "0",
// "schedule"). It returns the line of the deepest part of path that
// exists, so a missing key still points near its place.
func Line(n *yaml.Node, path ...string) int {
	if n == nil {
		return 0
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					next = n.Content[i+1]
					line = n.Content[i].Line
					break
				}
			}
		case yaml.SequenceNode:
			if k, err := strconv.Atoi(p); err == nil && k >= 0 && k < len(n.Content) {
				next = n.Content[k]
				line = next.Line
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}
