package engines

import (
	"fmt"
	"sort"
	"strings"
)

// Registry names the engines one binary has. It replaces hand-written
// switches in the agent's job runner and the standalone commands: a backup
// names its engine, a manifest records it, and both look it up here.
// Which engine suits an instance is engines/selection's question, answered
// from probed capabilities before a backup starts; "auto" here is the
// registry's default, for a caller with no capabilities to decide from.
//
// A Registry is built once at start and only read afterwards, so it needs
// no lock.
type Registry struct {
	byName map[string]Engine
	dflt   string
}

// NewRegistry returns a registry of es; the first is the default that
// "auto" and "" stand for. Two engines of one name are a programming error.
func NewRegistry(es ...Engine) *Registry {
	r := &Registry{byName: make(map[string]Engine, len(es))}
	for _, e := range es {
		if _, dup := r.byName[e.Name()]; dup {
			panic(fmt.Sprintf("engines: %q registered twice", e.Name()))
		}
		r.byName[e.Name()] = e
		if r.dflt == "" {
			r.dflt = e.Name()
		}
	}
	return r
}

// Get returns the engine called name; "" and "auto" return the default.
// The error names what is available.
func (r *Registry) Get(name string) (Engine, error) {
	if name == "" || name == "auto" {
		name = r.dflt
	}
	if e, ok := r.byName[name]; ok {
		return e, nil
	}
	return nil, fmt.Errorf("engine %q is not available in this tidemark (available: %s)", name, strings.Join(r.Names(), ", "))
}

// All returns the registered engines, sorted by name.
func (r *Registry) All() []Engine {
	out := make([]Engine, 0, len(r.byName))
	for _, n := range r.Names() {
		out = append(out, r.byName[n])
	}
	return out
}

// Names lists the registered engines, sorted.
func (r *Registry) Names() []string {
	out := make([]string, 0, len(r.byName))
	for n := range r.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
