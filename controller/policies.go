package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/policy"
	"github.com/tidemark-backup/tidemark/controller/scheduler"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Policies through the controller: a file of documents is parsed and
// validated on the leader (so the errors name the file's lines), checked
// against the stored policies and the instances (conflicts), its
// repositories opened, and then applied in one ApplyPolicies entry, all or
// none.

// repoCheckTimeout bounds opening one policy repository at apply.
const repoCheckTimeout = 10 * time.Second

func (c *controlService) ApplyPolicies(ctx context.Context, req *v1.ApplyPoliciesRequest) (*v1.ApplyPoliciesResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.ApplyPolicies)
	}
	file := req.GetFileName()
	if file == "" {
		file = "policy"
	}
	parsed, err := policy.Parse(file, []byte(req.GetYaml()))
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	r := s.fsm.Store().Read()
	if err := checkConflicts(r, file, parsed); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.checkPolicyRepos(ctx, file, parsed); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	// What changes, against the stored versions and the instances now.
	merged := mergedPolicies(r, parsed)
	sel := scheduler.Select(merged, r.Instances())
	resp := &v1.ApplyPoliciesResponse{}
	cmd := &v1.ApplyPolicies{AppliedBy: who(ctx), AppliedAt: timestampOf(s.clock().Now())}
	for _, p := range parsed {
		ch := &v1.PolicyChange{Name: p.Spec.GetName(), Action: "create", Version: 1}
		old, err := r.Policy(p.Spec.GetName())
		switch {
		case err == nil && proto.Equal(old.GetSpec(), p.Spec):
			ch.Action, ch.Version = "unchanged", old.GetVersion()
		case err == nil:
			ch.Action, ch.Version = "update", old.GetVersion()+1
			ch.Diff = lineDiff(old.GetSource(), p.Source)
		default:
			ch.Diff = lineDiff("", p.Source)
		}
		for _, in := range sel.Selected[p.Spec.GetName()] {
			ch.Instances = append(ch.Instances, in.GetName())
		}
		if len(ch.Instances) == 0 {
			ch.Warnings = append(ch.Warnings, fmt.Sprintf("%s:%d: policy %s: selector %q selects no instance now (applied anyway: instances that register later with matching labels are covered)",
				file, p.LineOf("selector"), p.Spec.GetName(), p.Spec.GetSelector()))
			if p.Spec.GetRetention() != nil || len(p.Spec.GetCopies()) > 0 {
				ch.Warnings = append(ch.Warnings, fmt.Sprintf("%s:%d: policy %s: its retention and copies apply to no instance until one matches",
					file, p.LineOf("selector"), p.Spec.GetName()))
			}
		}
		if ch.Action != "unchanged" && (p.Spec.GetRetention() != nil || len(p.Spec.GetCopies()) > 0) {
			if why := retentionPreview(r, merged, p.Spec.GetName(), s.clock().Now()); why != "" {
				ch.Warnings = append(ch.Warnings, fmt.Sprintf("%s:%d: policy %s: %s", file, p.LineOf("retention"), p.Spec.GetName(), why))
			}
		}
		resp.Changes = append(resp.Changes, ch)
		cmd.Specs = append(cmd.Specs, p.Spec)
		cmd.Sources = append(cmd.Sources, p.Source)
	}
	if req.GetDryRun() {
		return resp, nil
	}
	if _, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_ApplyPolicies{ApplyPolicies: cmd}}); err != nil {
		return nil, err
	}
	resp.Applied = true
	s.kickScheduler()
	s.log.Info("policies applied", "file", file, "count", len(parsed), "by", cmd.GetAppliedBy())
	return resp, nil
}

// mergedPolicies is the stored policies with the parsed ones in place of
// (or beside) their stored versions, by name.
func mergedPolicies(r *catalog.Read, parsed []policy.Parsed) []*v1.Policy {
	byName := map[string]*v1.Policy{}
	for _, p := range r.Policies() {
		byName[p.GetName()] = p
	}
	for _, p := range parsed {
		np := &v1.Policy{Name: p.Spec.GetName(), Spec: p.Spec}
		if old := byName[np.GetName()]; old != nil {
			np.Version, np.CreatedAt, np.UpdatedAt = old.GetVersion(), old.GetCreatedAt(), old.GetUpdatedAt()
		}
		byName[np.GetName()] = np
	}
	out := make([]*v1.Policy, 0, len(byName))
	for _, p := range byName {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *v1.Policy) int { return cmp.Compare(a.GetName(), b.GetName()) })
	return out
}

// checkConflicts refuses documents that would give an instance backups
// from two policies at one priority (conflicting schedules): each is named
// with the line of its selector. Conflicts only among stored policies (an
// instance's labels changed since) are not this apply's fault and do not
// refuse it; `tidemark status` shows them.
func checkConflicts(r *catalog.Read, file string, parsed []policy.Parsed) error {
	applying := map[string]policy.Parsed{}
	for _, p := range parsed {
		applying[p.Spec.GetName()] = p
	}
	sel := scheduler.Select(mergedPolicies(r, parsed), r.Instances())
	var errs []error
	seen := map[string]bool{}
	for _, c := range sel.Conflicts {
		for _, name := range c.Policies {
			p, ok := applying[name]
			if !ok || seen[name+"/"+c.Instance] {
				continue
			}
			seen[name+"/"+c.Instance] = true
			other := c.Policies[0]
			if other == name {
				other = c.Policies[1]
			}
			errs = append(errs, fmt.Errorf("%s:%d: policy %s: selector: instance %s is also selected by policy %s, both with backups at priority %d: give one a higher priority (it then schedules the instance's backups) or narrow a selector",
				file, p.LineOf("selector"), name, c.Instance, other, p.Spec.GetPriority()))
		}
	}
	return errors.Join(errs...)
}

// checkPolicyRepos opens every repository the documents name, as the
// controller's own credentials allow, and refuses one that cannot be
// opened or holds no Tidemark repository.
func (s *Server) checkPolicyRepos(ctx context.Context, file string, parsed []policy.Parsed) error {
	checked := map[string]error{}
	var errs []error
	check := func(p policy.Parsed, uri string, path ...string) {
		if uri == "" {
			return
		}
		err, done := checked[uri]
		if !done {
			err = openRepo(ctx, uri)
			checked[uri] = err
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: policy %s: %s: %w", file, p.LineOf(path...), p.Spec.GetName(), strings.Join(path, "."), err))
		}
	}
	for _, p := range parsed {
		check(p, p.Spec.GetRepositoryUri(), "repository")
		for i, c := range p.Spec.GetCopies() {
			check(p, c.GetRepositoryUri(), "copies", fmt.Sprint(i), "repository")
		}
	}
	return errors.Join(errs...)
}

// openRepo opens uri and looks for the repository's config object.
func openRepo(ctx context.Context, uri string) error {
	ctx, cancel := context.WithTimeout(ctx, repoCheckTimeout)
	defer cancel()
	st, err := location.Open(ctx, uri, location.Options{})
	if err != nil {
		return fmt.Errorf("the controller cannot open %s: %w", location.Redact(uri), err)
	}
	if c, ok := st.(interface{ Close() error }); ok {
		defer func() { _ = c.Close() }()
	}
	if _, err := st.Stat(ctx, "config"); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("%s holds no Tidemark repository (no config object): create it with `tidemark repo init --repo %s`", location.Redact(uri), location.Redact(uri))
		}
		return fmt.Errorf("the controller cannot read %s: %w", location.Redact(uri), err)
	}
	return nil
}

// lineDiff is a minimal line diff of a against b: common lines with "  ",
// removed with "- ", added with "+ " (longest common subsequence; policy
// documents are small).
func lineDiff(a, b string) string {
	x, y := splitLines(a), splitLines(b)
	n, m := len(x), len(y)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var sb strings.Builder
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && x[i] == y[j]:
			sb.WriteString("  " + x[i] + "\n")
			i, j = i+1, j+1
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			sb.WriteString("- " + x[i] + "\n")
			i++
		default:
			sb.WriteString("+ " + y[j] + "\n")
			j++
		}
	}
	return sb.String()
}

func splitLines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func (c *controlService) ListPolicies(ctx context.Context, req *v1.ListPoliciesRequest) (*v1.ListPoliciesResponse, error) {
	fwd, info, err := c.readPrep(ctx, req.GetStale())
	if fwd {
		return forwardRead(ctx, c.s, req, v1.ControlServiceClient.ListPolicies)
	}
	if err != nil {
		return nil, err
	}
	return &v1.ListPoliciesResponse{Policies: c.s.fsm.Store().Read().Policies(), Read: info}, nil
}

func (c *controlService) GetPolicy(ctx context.Context, req *v1.GetPolicyRequest) (*v1.GetPolicyResponse, error) {
	fwd, info, err := c.readPrep(ctx, req.GetStale())
	if fwd {
		return forwardRead(ctx, c.s, req, v1.ControlServiceClient.GetPolicy)
	}
	if err != nil {
		return nil, err
	}
	r := c.s.fsm.Store().Read()
	p, err := r.Policy(req.GetName())
	if err != nil {
		return nil, catalog.Errorf(catalog.ErrNotFound, "policy %q not found: see `tidemark policies`", req.GetName())
	}
	out := &v1.GetPolicyResponse{Policy: p, Read: info}
	for _, in := range scheduler.Select([]*v1.Policy{p}, r.Instances()).Selected[p.GetName()] {
		out.Instances = append(out.Instances, in.GetName())
	}
	return out, nil
}

func (c *controlService) DeletePolicy(ctx context.Context, req *v1.DeletePolicyRequest) (*v1.DeletePolicyResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.DeletePolicy)
	}
	return keyed(ctx, s, req, replayed("policy", func(v *v1.Policy) *v1.DeletePolicyResponse {
		return &v1.DeletePolicyResponse{Policy: v, Replayed: true}
	}), func(ctx context.Context) (*v1.DeletePolicyResponse, error) {
		if req.GetName() == "" {
			return nil, invalid("name is required")
		}
		resp, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_DeletePolicy{DeletePolicy: &v1.DeletePolicy{Name: req.GetName(), DeletedAt: timestampOf(s.clock().Now())}}})
		if err != nil {
			if errors.Is(err, catalog.ErrNotFound) {
				return nil, catalog.Errorf(catalog.ErrNotFound, "policy %q not found: see `tidemark policies`", req.GetName())
			}
			return nil, err
		}
		s.kickScheduler()
		return &v1.DeletePolicyResponse{Policy: resp.Value.(*v1.Policy)}, nil
	})
}

// GetSchedule is answered by the leader, whose scheduler knows the last
// run of every target.
func (c *controlService) GetSchedule(ctx context.Context, req *v1.GetScheduleRequest) (*v1.GetScheduleResponse, error) {
	s := c.s
	sch := s.currentScheduler()
	if sch == nil {
		if !s.isLeader() {
			return forward(ctx, s, req, v1.ControlServiceClient.GetSchedule)
		}
		return nil, catalog.Errorf(ErrNoLeader, "node %s is taking over the leadership; retry", s.id.NodeID)
	}
	out := &v1.GetScheduleResponse{Runs: sch.Upcoming(req.GetInstance(), int(req.GetPerRunKey()))}
	slices.SortFunc(out.Runs, func(a, b *v1.ScheduledRun) int {
		if c := a.GetDueAt().AsTime().Compare(b.GetDueAt().AsTime()); c != 0 {
			return c
		}
		return cmp.Compare(a.GetRunKey(), b.GetRunKey())
	})
	r := s.fsm.Store().Read()
	for _, sk := range r.ScheduleSkips("") {
		if req.GetInstance() != "" && sk.GetRunKey() != req.GetInstance() {
			if in, err := r.Instance(req.GetInstance()); err != nil || sk.GetRunKey() != "cluster:"+in.GetLabels()[catalog.ClusterLabel] {
				continue
			}
		}
		out.Skipped = append(out.Skipped, sk)
	}
	return out, nil
}

// GetPolicyStatus is answered by the leader (it has the streams' latest
// watermarks); a stale one by the leader when it can be reached, else from
// the local catalog.
func (c *controlService) GetPolicyStatus(ctx context.Context, req *v1.GetPolicyStatusRequest) (*v1.GetPolicyStatusResponse, error) {
	s := c.s
	if req.GetStale() && !s.isLeader() && !wasForwarded(ctx) {
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := forward(fctx, s, req, v1.ControlServiceClient.GetPolicyStatus)
		cancel()
		if err == nil {
			return resp, nil
		}
	}
	fwd, info, err := c.readPrep(ctx, req.GetStale())
	if fwd {
		return forwardRead(ctx, s, req, v1.ControlServiceClient.GetPolicyStatus)
	}
	if err != nil {
		return nil, err
	}
	r := s.fsm.Store().Read()
	if req.GetPolicy() != "" {
		if _, err := r.Policy(req.GetPolicy()); err != nil {
			return nil, catalog.Errorf(catalog.ErrNotFound, "policy %q not found: see `tidemark policies`", req.GetPolicy())
		}
	}
	now := s.clock().Now()
	return &v1.GetPolicyStatusResponse{Policies: s.evaluate(r, now, req.GetPolicy()), EvaluatedAt: timestampOf(now), Read: info}, nil
}

// evaluate is scheduler.Evaluate with the leader's latest watermarks.
func (s *Server) evaluate(r *catalog.Read, now time.Time, only string) []*v1.PolicyStatus {
	return scheduler.Evaluate(r, scheduler.StatusParams{Now: now, Policy: only, Stream: s.agents.streamView, CopyBehind: s.copyBehind(r, now)})
}
