package scheduler

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/robfig/cron/v3"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/policy"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Target is one run key of one schedule of a policy: an instance, or a
// `cluster` group whose member is chosen by the schedule's prefer.
type Target struct {
	Policy *v1.Policy
	Index  uint32
	Sched  *v1.PolicySchedule
	Cron   cron.Schedule
	// RunKey is the instance name, or "cluster:<name>" for a group.
	RunKey string
	// Instance is the member that runs it now; Members the whole group
	// (the selected ones), by name.
	Instance *v1.Instance
	Members  []*v1.Instance
}

// Key identifies a target across ticks and leaders.
func (t Target) Key() Key { return Key{Policy: t.Policy.GetName(), Index: t.Index, RunKey: t.RunKey} }

// Key is (policy, schedule index, run key).
type Key struct {
	Policy string
	Index  uint32
	RunKey string
}

func (k Key) String() string { return fmt.Sprintf("%s#%d/%s", k.Policy, k.Index, k.RunKey) }

// Conflict is an instance selected by two policies with backups at one
// priority. The scheduler gives it to the first by name; apply refuses
// one, so a conflict appears only when an instance's labels change later.
type Conflict struct {
	Instance string
	Policies [2]string
}

func (c Conflict) String() string {
	return fmt.Sprintf("instance %s is selected by policies %s and %s, both with backups at the same priority",
		c.Instance, c.Policies[0], c.Policies[1])
}

// Selection is what every policy selects.
type Selection struct {
	// Instances each policy selects, by name.
	Selected map[string][]*v1.Instance
	// Owner is the policy that schedules an instance's backups.
	Owner     map[string]string
	Conflicts []Conflict
}

// Select matches every policy's selector against every instance and
// decides which policy schedules each instance's backups: the highest
// priority, then the first by name (reported as a conflict when the
// priorities are equal).
func Select(policies []*v1.Policy, instances []*v1.Instance) Selection {
	sel := Selection{Selected: map[string][]*v1.Instance{}, Owner: map[string]string{}}
	owner := map[string]*v1.Policy{}
	for _, p := range policies {
		s, err := policy.ParseSelector(p.GetSpec().GetSelector())
		if err != nil {
			continue // validated at apply; a bad one selects nothing
		}
		for _, in := range instances {
			if !s.Matches(in.GetLabels()) {
				continue
			}
			sel.Selected[p.GetName()] = append(sel.Selected[p.GetName()], in)
			if len(p.GetSpec().GetBackups()) == 0 {
				continue
			}
			o := owner[in.GetName()]
			switch {
			case o == nil || p.GetSpec().GetPriority() > o.GetSpec().GetPriority():
				owner[in.GetName()] = p
			case p.GetSpec().GetPriority() == o.GetSpec().GetPriority():
				sel.Conflicts = append(sel.Conflicts, Conflict{Instance: in.GetName(), Policies: [2]string{o.GetName(), p.GetName()}})
			}
		}
	}
	for in, p := range owner {
		sel.Owner[in] = p.GetName()
	}
	return sel
}

// Targets returns every backup target of the policies: per schedule, one
// per selected instance whose backups the policy owns, or one per
// `cluster` group of them.
func Targets(policies []*v1.Policy, sel Selection) []Target {
	var out []Target
	for _, p := range policies {
		groups := map[string][]*v1.Instance{}
		for _, in := range sel.Selected[p.GetName()] {
			if sel.Owner[in.GetName()] != p.GetName() {
				continue
			}
			key := in.GetName()
			if c := in.GetLabels()[catalog.ClusterLabel]; c != "" {
				key = "cluster:" + c
			}
			groups[key] = append(groups[key], in)
		}
		keys := make([]string, 0, len(groups))
		for k := range groups {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, sc := range p.GetSpec().GetBackups() {
			cs, err := policy.ParseSchedule(sc.GetCron())
			if err != nil {
				continue
			}
			for _, k := range keys {
				members := groups[k]
				slices.SortFunc(members, func(a, b *v1.Instance) int { return cmp.Compare(a.GetName(), b.GetName()) })
				out = append(out, Target{Policy: p, Index: uint32(i), Sched: sc, Cron: cs, RunKey: k,
					Instance: Prefer(members, sc.GetPrefer()), Members: members})
			}
		}
	}
	return out
}

// Prefer picks the member of a group a run goes to: the first replica
// (prefer replica) or the first primary (prefer primary) by name, falling
// back to the first member; "any" takes the first.
func Prefer(members []*v1.Instance, prefer string) *v1.Instance {
	for _, m := range members {
		isReplica := m.GetCapabilities().GetIsReplica()
		if (prefer == "replica" && isReplica) || (prefer == "primary" && !isReplica) {
			return m
		}
	}
	return members[0]
}

// StreamTarget is one binlog stream a policy wants: for an instance or a
// `cluster` group (whose stream is started on its primary and follows it).
type StreamTarget struct {
	Policy   *v1.Policy
	RunKey   string
	Instance *v1.Instance
}

// StreamTargets returns one stream per instance or group selected by a
// policy with binlog enabled; where several policies want one, the highest
// priority (then first by name) sets its flush and repository.
func StreamTargets(policies []*v1.Policy, sel Selection) []StreamTarget {
	byKey := map[string]StreamTarget{}
	groups := map[string][]*v1.Instance{}
	for _, p := range policies {
		if !p.GetSpec().GetBinlog().GetEnabled() {
			continue
		}
		for _, in := range sel.Selected[p.GetName()] {
			key := in.GetName()
			if c := in.GetLabels()[catalog.ClusterLabel]; c != "" {
				key = "cluster:" + c
			}
			if !slices.ContainsFunc(groups[key], func(o *v1.Instance) bool { return o.GetName() == in.GetName() }) {
				groups[key] = append(groups[key], in)
			}
			if o, ok := byKey[key]; !ok || p.GetSpec().GetPriority() > o.Policy.GetSpec().GetPriority() {
				byKey[key] = StreamTarget{Policy: p, RunKey: key}
			}
		}
	}
	out := make([]StreamTarget, 0, len(byKey))
	for k, st := range byKey {
		ms := groups[k]
		slices.SortFunc(ms, func(a, b *v1.Instance) int { return cmp.Compare(a.GetName(), b.GetName()) })
		st.Instance = Prefer(ms, "primary")
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b StreamTarget) int { return cmp.Compare(a.RunKey, b.RunKey) })
	return out
}
