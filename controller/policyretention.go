package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/retention"
	"github.com/tidemark-backup/tidemark/controller/scheduler"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Policies' retention and copies, run by the leader (policyLoop):
//
//   - every RetentionInterval (and at once when a policy changes) each
//     instance selected by a policy with `retention` is planned with
//     controller/retention and what expires goes through the same
//     MarkBackupsExpired → expire job path as `retention apply`; the same
//     for the copies in each `copies` repository with that copy's own
//     retention. An instance selected by no policy with retention is never
//     expired automatically.
//   - Two policies selecting one instance: a backup expires only when every
//     policy's rules expire it (the union of what they keep is kept), and
//     binlog segments go only before the earliest cutoff of them, so no
//     policy's promise is broken. A policy without `retention` takes no part
//     (it promises nothing about how long backups stay).
//   - every CopyInterval each complete backup of a selected instance that
//     finished since the policy was created (and always the newest one)
//     gets one copy job per copy repository it is not in yet.
//
// Restart safety: everything is recomputed from the catalog at each pass;
// expire and copy job ids are derived from what they act on, so a new
// leader repeating a pass whose entry the old one committed gets
// ErrAlreadyExists and moves on, never a second job. A failed copy job is
// retried with a new derived id (attempt n+1) after a backoff that doubles
// from CopyInterval up to copyRetryMax.

const (
	// copyRetryMax bounds the wait before a failed policy copy is
	// submitted again; the first wait is CopyInterval, doubled per failed
	// attempt (wall clock: job records carry wall time).
	copyRetryMax = time.Hour
)

// kickPolicies makes the policy loop run retention and copies now.
func (s *Server) kickPolicies() {
	select {
	case s.polKick <- struct{}{}:
	default:
	}
}

// policyLoop runs policies' retention and copies while the node leads.
func (s *Server) policyLoop(ctx context.Context) {
	ret := time.NewTicker(s.cfg.RetentionInterval)
	defer ret.Stop()
	cp := time.NewTicker(s.cfg.CopyInterval)
	defer cp.Stop()
	doRet, doCopy := true, true
	for {
		if doCopy {
			if n, err := s.submitPolicyCopies(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("policy copies: a write failed; retrying at the next pass", "err", err)
			} else if n > 0 {
				s.agents.kickAssigner()
			}
		}
		if doRet {
			if jobs, err := s.applyPolicyRetention(ctx, "", ""); err != nil && ctx.Err() == nil {
				s.log.Warn("policy retention: a write failed; retrying at the next pass", "err", err)
			} else if len(jobs) > 0 {
				s.agents.kickAssigner()
			}
		}
		doRet, doCopy = false, false
		select {
		case <-ctx.Done():
			return
		case <-ret.C:
			doRet = true
		case <-cp.C:
			doCopy = true
		case <-s.polKick:
			doRet, doCopy = true, true
		}
	}
}

// ruleSet is one policy's rules for one (instance, repository).
type ruleSet struct {
	policy string
	rules  *v1.RetentionRules
}

// retentionKey is what one merged plan covers: an instance's backups
// (copyRepo "") or its copies in copyRepo.
type retentionKey struct{ instance, copyRepo string }

// policyRuleSets collects, per instance and repository, the rules of every
// policy with retention that selects the instance. With only set, just the
// instances that policy selects (every policy's rules for them still
// count: that is what the leader applies).
func policyRuleSets(r *catalog.Read, policies []*v1.Policy, only string) (map[retentionKey][]ruleSet, error) {
	if only != "" && !slices.ContainsFunc(policies, func(p *v1.Policy) bool { return p.GetName() == only }) {
		return nil, catalog.Errorf(catalog.ErrNotFound, "policy %q not found: see `tidemark policies`", only)
	}
	sel := scheduler.Select(policies, r.Instances())
	out := map[retentionKey][]ruleSet{}
	for _, p := range policies {
		spec := p.GetSpec()
		for _, in := range sel.Selected[p.GetName()] {
			if rr := spec.GetRetention(); rr != nil {
				k := retentionKey{instance: in.GetName()}
				out[k] = append(out[k], ruleSet{policy: p.GetName(), rules: rr})
			}
			for _, c := range spec.GetCopies() {
				if c.GetRetention() == nil {
					continue
				}
				k := retentionKey{instance: in.GetName(), copyRepo: c.GetRepositoryUri()}
				out[k] = append(out[k], ruleSet{policy: p.GetName(), rules: c.GetRetention()})
			}
		}
	}
	if only != "" {
		mine := map[string]bool{}
		for _, in := range sel.Selected[only] {
			mine[in.GetName()] = true
		}
		for k := range out {
			if !mine[k.instance] {
				delete(out, k)
			}
		}
	}
	return out, nil
}

// mergedPlan plans one instance's backups with every rule set and keeps
// what any of them keeps. The last complete backup, pins and each PITR
// window's base are kept by every plan already, so the merge keeps them.
func mergedPlan(backups []*v1.Backup, sets []ruleSet, t time.Time) (*retention.Result, error) {
	var results []*retention.Result
	for _, rs := range sets {
		res, err := retention.Plan(retention.Params{Backups: backups, Rules: rs.rules, Now: t})
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", rs.policy, err)
		}
		results = append(results, res)
	}
	if len(results) == 1 {
		return results[0], nil
	}
	byID := make([]map[string]retention.Verdict, len(results))
	for i, res := range results {
		byID[i] = map[string]retention.Verdict{}
		for _, v := range res.Verdicts {
			byID[i][v.Backup.GetId()] = v
		}
	}
	out := &retention.Result{}
	for _, v := range results[0].Verdicts {
		m := retention.Verdict{Backup: v.Backup, Time: v.Time}
		var expire []string
		for i, rs := range sets {
			w, ok := byID[i][v.Backup.GetId()]
			if !ok {
				continue
			}
			if w.Keep {
				m.Keep = true
				for _, why := range w.Reasons {
					m.Reasons = append(m.Reasons, why+" (policy "+rs.policy+")")
				}
			} else if len(expire) == 0 {
				expire = w.Reasons
			}
		}
		if !m.Keep {
			names := make([]string, len(sets))
			for i, rs := range sets {
				names[i] = rs.policy
			}
			for _, why := range expire {
				m.Reasons = append(m.Reasons, why+" (of every policy: "+strings.Join(names, ", ")+")")
			}
		}
		out.Verdicts = append(out.Verdicts, m)
	}
	// Binlog goes only before every plan's cutoff; a plan that lets none
	// go (zero) keeps all of it.
	for i, res := range results {
		if res.BinlogBefore.IsZero() {
			out.BinlogBefore, out.BinlogReason = time.Time{}, res.BinlogReason+" (policy "+sets[i].policy+")"
			break
		}
		if out.BinlogBefore.IsZero() || res.BinlogBefore.Before(out.BinlogBefore) {
			out.BinlogBefore, out.BinlogReason = res.BinlogBefore, res.BinlogReason+" (policy "+sets[i].policy+")"
		}
	}
	for _, res := range results {
		if res.PITRBase != nil && (out.PITRBase == nil || retention.BackupTime(res.PITRBase).Before(retention.BackupTime(out.PITRBase))) {
			out.PITRBase = res.PITRBase
		}
	}
	return out, nil
}

// planPolicies is the leader's policy retention plan: every (instance,
// repository) some policy's retention covers, or only those of the
// instances policy `only` selects; with instance, only that instance;
// with copyRepo, only the copies there (else only the backups, unless all
// is set: both). policies are the catalog's (nil) or those about to be
// applied.
func planPolicies(r *catalog.Read, policies []*v1.Policy, only, instance, copyRepo string, all bool, t time.Time) ([]*v1.RetentionInstancePlan, []instancePlan, error) {
	if policies == nil {
		policies = r.Policies()
	}
	sets, err := policyRuleSets(r, policies, only)
	if err != nil {
		return nil, nil, err
	}
	if instance != "" {
		if _, err := r.Instance(instance); err != nil {
			return nil, nil, err
		}
	}
	keys := make([]retentionKey, 0, len(sets))
	for k := range sets {
		if (instance != "" && k.instance != instance) || (!all && k.copyRepo != copyRepo) {
			continue
		}
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].instance != keys[j].instance {
			return keys[i].instance < keys[j].instance
		}
		return keys[i].copyRepo < keys[j].copyRepo
	})
	var (
		out []*v1.RetentionInstancePlan
		raw []instancePlan
	)
	for _, k := range keys {
		var backups []*v1.Backup
		for _, b := range r.Backups(k.instance) {
			if k.copyRepo != "" {
				if b = copyAsBackup(b, k.copyRepo); b == nil {
					continue
				}
			}
			backups = append(backups, b)
		}
		res, err := mergedPlan(backups, sets[k], t)
		if err != nil {
			return nil, nil, invalid("instance %s: %v", k.instance, err)
		}
		out = append(out, planMessage(k.instance, res))
		raw = append(raw, instancePlan{instance: k.instance, res: res, copyRepo: k.copyRepo})
	}
	return out, raw, nil
}

// applyPolicyRetention plans the policies' retention (all of it, or the
// instances policy `only` selects, or one instance) and expires what the
// plan expires, with derived job ids. It returns the jobs submitted.
func (s *Server) applyPolicyRetention(ctx context.Context, only, instance string) ([]string, error) {
	t := s.clock().Now()
	r := s.fsm.Store().Read()
	_, raw, err := planPolicies(r, nil, only, instance, "", true, t)
	if err != nil {
		return nil, err
	}
	var (
		jobs []string
		errs []error
	)
	for _, ip := range raw {
		for _, cmd := range expireCommands(r, ip, t, s.cfg.MaxAttempts) {
			cmd.GetJob().Id = policyExpireID(r, ip, cmd)
			resp, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_MarkBackupsExpired{MarkBackupsExpired: cmd}})
			if errors.Is(err, catalog.ErrAlreadyExists) {
				continue // an earlier pass (maybe another leader's) submitted it
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("instance %s: marking %d backups expired: %w", ip.instance, len(cmd.GetBackupIds()), err))
				continue
			}
			j := resp.Value.(*v1.Job)
			jobs = append(jobs, j.GetId())
			s.log.Info("policy retention marked backups expired", "instance", ip.instance, "copies", ip.copyRepo, "job", j.GetId(), "backups", cmd.GetBackupIds())
		}
	}
	return jobs, errors.Join(errs...)
}

// policyExpireID derives an expire job's id from what it expires: the
// instance, the copies' repository, the backups, and the expire jobs that
// marked them before (a re-mark after a failed job gets a new id).
func policyExpireID(r *catalog.Read, ip instancePlan, cmd *v1.MarkBackupsExpired) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00", ip.instance, ip.copyRepo, cmd.GetJob().GetExpire().GetRepositoryUri())
	ids := slices.Clone(cmd.GetBackupIds())
	slices.Sort(ids)
	for _, id := range ids {
		prev := ""
		if b, err := r.Backup(id); err == nil {
			prev = b.GetExpireJobId()
			if ip.copyRepo != "" {
				if c := copyAsBackup(b, ip.copyRepo); c != nil {
					prev = c.GetExpireJobId()
				}
			}
		}
		fmt.Fprintf(h, "%s\x00%s\x00", id, prev)
	}
	return "expire-pol-" + hex.EncodeToString(h.Sum(nil))[:20]
}

// copyJobID is the derived id of attempt n of copying backup to dest.
func copyJobID(backup, dest string, n int) string {
	h := sha256.Sum256([]byte(backup + "\x00" + dest))
	id := "copy-pol-" + hex.EncodeToString(h[:])[:20]
	if n > 0 {
		id += fmt.Sprintf("-r%d", n)
	}
	return id
}

// copyState is the latest policy copy job of backup to dest and the
// attempt number the next one gets.
func copyState(r *catalog.Read, backup, dest string) (last *v1.Job, next int) {
	for n := 0; ; n++ {
		j, err := r.Job(copyJobID(backup, dest, n))
		if err != nil {
			return last, n
		}
		last = j
	}
}

// copyCandidates are the backups of instance a policy created at since
// must copy: complete, not expired, finished at or after since, and always
// the newest complete one.
func copyCandidates(r *catalog.Read, instance string, since time.Time) []*v1.Backup {
	var out []*v1.Backup
	var newest *v1.Backup
	for _, b := range r.Backups(instance) {
		if b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE || b.GetExpiredAt() != nil {
			continue
		}
		if newest == nil || b.GetFinishedAt().AsTime().After(newest.GetFinishedAt().AsTime()) {
			newest = b
		}
		if !b.GetFinishedAt().AsTime().Before(since) {
			out = append(out, b)
		}
	}
	if newest != nil && !slices.Contains(out, newest) {
		out = append(out, newest)
	}
	return out
}

func hasCopy(b *v1.Backup, repo string) bool {
	return slices.ContainsFunc(b.GetCopies(), func(c *v1.BackupCopy) bool { return c.GetRepositoryUri() == repo })
}

// copiesDue are the copy jobs the policies' copies call for now: per
// selected instance, per candidate backup, per copy repository it is not
// in, unless a policy copy job of it is running or succeeded, or the last
// one failed less than its backoff ago (retryMin doubling per attempt, up
// to copyRetryMax, by wallNow). defaultRepo stands for a backup with no
// repository recorded.
func copiesDue(r *catalog.Read, defaultRepo string, wallNow time.Time, retryMin time.Duration, maxAttempts uint32) []*v1.Job {
	policies := r.Policies()
	sel := scheduler.Select(policies, r.Instances())
	var out []*v1.Job
	for _, p := range policies {
		copies := p.GetSpec().GetCopies()
		if len(copies) == 0 {
			continue
		}
		for _, in := range sel.Selected[p.GetName()] {
			for _, b := range copyCandidates(r, in.GetName(), p.GetCreatedAt().AsTime()) {
				src := b.GetRepositoryUri()
				if src == "" {
					src = defaultRepo
				}
				for _, ct := range copies {
					dest := ct.GetRepositoryUri()
					if dest == src || hasCopy(b, dest) {
						continue
					}
					last, next := copyState(r, b.GetId(), dest)
					if last != nil {
						if !catalog.Terminal(last.GetState()) || last.GetState() == v1.JobState_JOB_STATE_SUCCEEDED {
							continue
						}
						wait := min(retryMin<<min(next-1, 10), copyRetryMax)
						if wallNow.Sub(last.GetUpdatedAt().AsTime()) < wait {
							continue
						}
					}
					out = append(out, &v1.Job{
						Id: copyJobID(b.GetId(), dest, next), Kind: v1.JobKind_JOB_KIND_COPY, Instance: b.GetInstance(),
						State: v1.JobState_JOB_STATE_PENDING, Policy: p.GetName(),
						CreatedAt: timestampOf(wallNow), UpdatedAt: timestampOf(wallNow), MaxAttempts: maxAttempts,
						Params: &v1.Job_Copy{Copy: &v1.CopyParams{BackupId: b.GetId(), SourceRepositoryUri: src, DestinationRepositoryUri: dest,
							WithBinlog: p.GetSpec().GetBinlog().GetEnabled()}},
					})
				}
			}
		}
	}
	return out
}

// submitPolicyCopies submits the copy jobs the policies' copies call for
// and returns how many it submitted.
func (s *Server) submitPolicyCopies(ctx context.Context) (int, error) {
	n := 0
	var errs []error
	for _, job := range copiesDue(s.fsm.Store().Read(), s.cfg.Repo, time.Now(), s.cfg.CopyInterval, s.cfg.MaxAttempts) {
		cp := job.GetCopy()
		_, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: job}}})
		if errors.Is(err, catalog.ErrAlreadyExists) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("policy %s: copy of backup %s to %s: %w", job.GetPolicy(), cp.GetBackupId(), cp.GetDestinationRepositoryUri(), err))
			continue
		}
		n++
		s.log.Info("policy copy submitted", "policy", job.GetPolicy(), "job", job.GetId(), "backup", cp.GetBackupId(), "to", cp.GetDestinationRepositoryUri())
	}
	return n, errors.Join(errs...)
}

// copyBehind is the status's CopyBehind: the instance's newest complete
// backup has no copy in one of the policy's copy repositories CopyGrace
// after it finished (by the leader's clock).
func (s *Server) copyBehind(r *catalog.Read, now time.Time) func(p *v1.Policy, instance string) string {
	return func(p *v1.Policy, instance string) string {
		var newest *v1.Backup
		for _, b := range r.Backups(instance) {
			if b.GetStatus() == v1.BackupStatus_BACKUP_STATUS_COMPLETE && b.GetExpiredAt() == nil &&
				(newest == nil || b.GetFinishedAt().AsTime().After(newest.GetFinishedAt().AsTime())) {
				newest = b
			}
		}
		if newest == nil {
			return ""
		}
		age := now.Sub(newest.GetFinishedAt().AsTime())
		if age <= s.cfg.CopyGrace {
			return ""
		}
		var behind []string
		for _, ct := range p.GetSpec().GetCopies() {
			dest := ct.GetRepositoryUri()
			if dest == newest.GetRepositoryUri() || hasCopy(newest, dest) {
				continue
			}
			why := fmt.Sprintf("backup %s (finished %s, %s ago) has no copy in %s", newest.GetId(),
				newest.GetFinishedAt().AsTime().UTC().Format(time.RFC3339), age.Round(time.Second), dest)
			if last, _ := copyState(r, newest.GetId(), dest); last != nil {
				if e := last.GetResult().GetError(); e != "" {
					why += fmt.Sprintf(" (copy job %s: %s)", last.GetId(), e)
				} else {
					why += fmt.Sprintf(" (copy job %s is %s)", last.GetId(), strings.ToLower(strings.TrimPrefix(last.GetState().String(), "JOB_STATE_")))
				}
			}
			behind = append(behind, why)
		}
		return strings.Join(behind, "; ")
	}
}

// retentionPreview says what a policy's retention (with every other
// policy's, as applied) expires at once on being applied: "" when nothing.
func retentionPreview(r *catalog.Read, policies []*v1.Policy, name string, t time.Time) string {
	_, raw, err := planPolicies(r, policies, name, "", "", true, t)
	if err != nil {
		return ""
	}
	var backups, copies int
	instances := map[string]bool{}
	for _, ip := range raw {
		for _, v := range ip.res.Expired() {
			if v.Backup.GetExpiredAt() != nil {
				continue // marked already
			}
			instances[ip.instance] = true
			if ip.copyRepo != "" {
				copies++
			} else {
				backups++
			}
		}
	}
	if backups+copies == 0 {
		return ""
	}
	return fmt.Sprintf("retention expires %d backup(s) and %d copy(ies) of %d instance(s) as soon as applied (`tidemark retention plan --policy %s` then lists them)",
		backups, copies, len(instances), name)
}
