package policy

import (
	"fmt"
	"slices"
	"strings"
)

// Selector is a parsed label selector: every requirement must hold.
type Selector struct {
	reqs []requirement
}

type op int

const (
	opEq op = iota
	opNotEq
	opIn
	opNotIn
	opExists
	opNotExists
)

type requirement struct {
	key    string
	op     op
	values []string
}

// ParseSelector parses a Kubernetes-style label selector: `k=v` (or
// `k==v`), `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (has the label),
// `!k` (lacks it), joined by commas (AND). The empty selector selects
// everything. Errors name the offending part and its position.
func ParseSelector(s string) (Selector, error) {
	p := &selParser{s: s}
	var sel Selector
	p.space()
	if p.eof() {
		return sel, nil
	}
	for {
		r, err := p.requirement()
		if err != nil {
			return Selector{}, err
		}
		sel.reqs = append(sel.reqs, r)
		p.space()
		if p.eof() {
			return sel, nil
		}
		if !p.take(",") {
			return Selector{}, p.errorf("expected ',' between requirements")
		}
		p.space()
	}
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		v, has := labels[r.key]
		ok := false
		switch r.op {
		case opEq:
			ok = has && v == r.values[0]
		case opNotEq:
			ok = !has || v != r.values[0]
		case opIn:
			ok = has && slices.Contains(r.values, v)
		case opNotIn:
			ok = !has || !slices.Contains(r.values, v)
		case opExists:
			ok = has
		case opNotExists:
			ok = !has
		}
		if !ok {
			return false
		}
	}
	return true
}

// String is the selector in canonical form.
func (s Selector) String() string {
	parts := make([]string, len(s.reqs))
	for i, r := range s.reqs {
		switch r.op {
		case opEq:
			parts[i] = r.key + "=" + r.values[0]
		case opNotEq:
			parts[i] = r.key + "!=" + r.values[0]
		case opIn:
			parts[i] = r.key + " in (" + strings.Join(r.values, ",") + ")"
		case opNotIn:
			parts[i] = r.key + " notin (" + strings.Join(r.values, ",") + ")"
		case opExists:
			parts[i] = r.key
		case opNotExists:
			parts[i] = "!" + r.key
		}
	}
	return strings.Join(parts, ",")
}

type selParser struct {
	s   string
	pos int
}

func (p *selParser) eof() bool { return p.pos >= len(p.s) }

func (p *selParser) space() {
	for !p.eof() && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
}

func (p *selParser) take(tok string) bool {
	if strings.HasPrefix(p.s[p.pos:], tok) {
		p.pos += len(tok)
		return true
	}
	return false
}

func (p *selParser) errorf(format string, args ...any) error {
	return fmt.Errorf("selector %q at column %d: %s", p.s, p.pos+1, fmt.Sprintf(format, args...))
}

// word reads a label key or value: letters, digits, '-', '_', '.', '/'.
func (p *selParser) word(what string) (string, error) {
	start := p.pos
	for !p.eof() {
		c := p.s[p.pos]
		if (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '/' {
			p.pos++
			continue
		}
		break
	}
	if p.pos == start {
		if p.eof() {
			return "", p.errorf("expected a %s, found the end", what)
		}
		return "", p.errorf("expected a %s, found %q", what, p.s[p.pos:p.pos+1])
	}
	return p.s[start:p.pos], nil
}

func (p *selParser) requirement() (requirement, error) {
	if p.take("!") {
		p.space()
		k, err := p.word("label key")
		if err != nil {
			return requirement{}, err
		}
		return requirement{key: k, op: opNotExists}, nil
	}
	k, err := p.word("label key")
	if err != nil {
		return requirement{}, err
	}
	p.space()
	switch {
	case p.eof() || strings.HasPrefix(p.s[p.pos:], ","):
		return requirement{key: k, op: opExists}, nil
	case p.take("!="):
		return p.single(k, opNotEq)
	case p.take("=="), p.take("="):
		return p.single(k, opEq)
	}
	w, err := p.word("operator (=, !=, in, notin)")
	if err != nil {
		return requirement{}, err
	}
	var o op
	switch w {
	case "in":
		o = opIn
	case "notin":
		o = opNotIn
	default:
		p.pos -= len(w)
		return requirement{}, p.errorf("unknown operator %q after key %q: use =, !=, in or notin", w, k)
	}
	p.space()
	if !p.take("(") {
		return requirement{}, p.errorf("expected '(' after %q", w)
	}
	var vals []string
	for {
		p.space()
		v, err := p.word("value")
		if err != nil {
			return requirement{}, err
		}
		vals = append(vals, v)
		p.space()
		if p.take(")") {
			break
		}
		if !p.take(",") {
			return requirement{}, p.errorf("expected ',' or ')' in the value list of %q", k)
		}
	}
	slices.Sort(vals)
	return requirement{key: k, op: o, values: slices.Compact(vals)}, nil
}

func (p *selParser) single(k string, o op) (requirement, error) {
	p.space()
	v, err := p.word("value")
	if err != nil {
		return requirement{}, err
	}
	return requirement{key: k, op: o, values: []string{v}}, nil
}
