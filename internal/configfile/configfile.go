package configfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Entry is one top-level key of a config file and its value: one scalar,
// a list of scalars (List set), or a mapping of names to scalars (Map
// set). A null value is an entry with no values.
type Entry struct {
	Key    string
	Line   int
	Values []string
	List   bool
	Map    map[string]string
}

// Kind says what the entry holds, for an error about it.
func (e Entry) Kind() string {
	switch {
	case e.Map != nil:
		return "a mapping (key: value pairs)"
	case e.List:
		return "a list"
	}
	return "one value"
}

// Error is a mistake at one place in a config file.
type Error struct {
	Path string
	Line int
	Key  string // "" when the mistake is not in one key
	Msg  string
}

func (e *Error) Error() string {
	switch {
	case e.Key != "":
		return fmt.Sprintf("config file %s: line %d: key %s: %s", e.Path, e.Line, e.Key, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("config file %s: line %d: %s", e.Path, e.Line, e.Msg)
	}
	return fmt.Sprintf("config file %s: %s", e.Path, e.Msg)
}

// Read parses path, a YAML document (JSON is YAML too) whose top level maps
// keys to scalars, lists of scalars or mappings of names to scalars, and
// returns its entries in file order. Anything nested deeper, a key given
// twice or a second document is an *Error naming the line and key; an
// empty file has no entries.
func Read(path string) ([]Entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, nil
	} else if err != nil {
		return nil, &Error{Path: path, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &Error{Path: path, Line: extra.Line, Msg: "a second YAML document (---): give one"}
	}
	top := &doc
	if top.Kind == yaml.DocumentNode && len(top.Content) == 1 {
		top = top.Content[0]
	}
	if top.Kind == yaml.ScalarNode && top.Tag == "!!null" {
		return nil, nil
	}
	if top.Kind != yaml.MappingNode {
		return nil, &Error{Path: path, Line: top.Line, Msg: "expected keys and values (key: value), one per line"}
	}
	var out []Entry
	seen := map[string]int{}
	var errs []error
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			errs = append(errs, &Error{Path: path, Line: k.Line, Msg: "a key must be a plain name"})
			continue
		}
		if line, dup := seen[k.Value]; dup {
			errs = append(errs, &Error{Path: path, Line: k.Line, Key: k.Value, Msg: fmt.Sprintf("given twice (first on line %d)", line)})
			continue
		}
		seen[k.Value] = k.Line
		e := Entry{Key: k.Value, Line: k.Line}
		switch v.Kind {
		case yaml.ScalarNode:
			if v.Tag != "!!null" {
				e.Values = []string{v.Value}
			}
		case yaml.SequenceNode:
			e.List = true
			for _, item := range v.Content {
				if item.Kind != yaml.ScalarNode {
					errs = append(errs, &Error{Path: path, Line: item.Line, Key: k.Value, Msg: "expected a list of plain values"})
					continue
				}
				e.Values = append(e.Values, item.Value)
			}
		case yaml.MappingNode:
			e.Map = map[string]string{}
			for j := 0; j+1 < len(v.Content); j += 2 {
				mk, mv := v.Content[j], v.Content[j+1]
				if mk.Kind != yaml.ScalarNode || mv.Kind != yaml.ScalarNode {
					errs = append(errs, &Error{Path: path, Line: mk.Line, Key: k.Value, Msg: "expected name: value pairs of plain values"})
					continue
				}
				if _, dup := e.Map[mk.Value]; dup {
					errs = append(errs, &Error{Path: path, Line: mk.Line, Key: k.Value, Msg: fmt.Sprintf("%q given twice", mk.Value)})
					continue
				}
				e.Map[mk.Value] = mv.Value
			}
		default:
			errs = append(errs, &Error{Path: path, Line: v.Line, Key: k.Value, Msg: "expected a value"})
			continue
		}
		out = append(out, e)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}
