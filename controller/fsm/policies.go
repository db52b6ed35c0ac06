package fsm

import (
	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// applyApplyPolicies creates or replaces every policy of the command, all
// or none: the first invalid spec aborts the whole entry. A changed spec
// gets the next version and keeps the one it replaced (without that one's
// own previous); an unchanged spec keeps its version.
func applyApplyPolicies(w *catalog.Write, c *v1.ApplyPolicies) (proto.Message, error) {
	if len(c.GetSpecs()) == 0 {
		return nil, catalog.Errorf(catalog.ErrInvalid, "ApplyPolicies without a policy")
	}
	seen := map[string]bool{}
	for i, spec := range c.GetSpecs() {
		name := spec.GetName()
		if name == "" {
			return nil, catalog.Errorf(catalog.ErrInvalid, "ApplyPolicies: policy %d has no name", i+1)
		}
		if seen[name] {
			return nil, catalog.Errorf(catalog.ErrInvalid, "ApplyPolicies: policy %q given twice", name)
		}
		seen[name] = true
		src := ""
		if i < len(c.GetSources()) {
			src = c.GetSources()[i]
		}
		p := &v1.Policy{Name: name, Version: 1, Spec: spec, Source: src, UpdatedBy: c.GetAppliedBy(),
			UpdatedAt: c.GetAppliedAt(), CreatedAt: c.GetAppliedAt()}
		if old, err := w.Policy(name); err == nil {
			if proto.Equal(old.GetSpec(), spec) {
				continue
			}
			prev := proto.CloneOf(old)
			prev.Previous = nil
			p.Version, p.CreatedAt, p.Previous = old.GetVersion()+1, old.GetCreatedAt(), prev
		}
		if err := w.PutPolicy(p); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// applyDeletePolicy removes a policy; its jobs and skip records stay.
func applyDeletePolicy(w *catalog.Write, c *v1.DeletePolicy) (proto.Message, error) {
	old, err := w.Policy(c.GetName())
	if err != nil {
		return nil, err
	}
	if err := w.DeletePolicy(c.GetName()); err != nil {
		return nil, err
	}
	return old, nil
}

// applyRecordScheduleSkips stores skip records; one whose id exists is
// kept as it was (a new leader may record the same skip again).
func applyRecordScheduleSkips(w *catalog.Write, c *v1.RecordScheduleSkips) (proto.Message, error) {
	for _, s := range c.GetSkips() {
		if s.GetId() == "" || s.GetPolicy() == "" {
			return nil, catalog.Errorf(catalog.ErrInvalid, "a schedule skip needs an id and a policy")
		}
		if _, err := w.ScheduleSkip(s.GetId()); err == nil {
			continue
		}
		if err := w.PutScheduleSkip(s); err != nil {
			return nil, err
		}
	}
	return nil, nil
}
