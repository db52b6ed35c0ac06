package scheduler

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/policy"
	"github.com/tidemark-backup/tidemark/engines/binlog/gtid"
	"github.com/tidemark-backup/tidemark/engines/selection"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// StatusParams are the inputs of Evaluate besides the catalog.
type StatusParams struct {
	Now time.Time
	// Only this policy; empty: every one.
	Policy string
	// Stream returns the leader's latest view of a stream record (its
	// in-memory watermark, newer than the committed one); nil uses the
	// committed record.
	Stream func(rec *v1.BinlogStream, j *v1.Job) *v1.BinlogStream
	// CopyBehind says why an instance's copies under a policy are behind
	// ("" when they are not). The copy engine plugs in here; nil: copies
	// are not checked.
	CopyBehind func(p *v1.Policy, instance string) string
}

// Unmet-reason prefixes, so alerts can tell the kinds apart.
const (
	ReasonNoBackup = "no backup"
	ReasonFailed   = "last scheduled backup failed"
	ReasonNoStream = "no binlog stream"
	ReasonRPO      = "RPO"
	// ReasonStreamFailing: the stream's runs fail (the agent retries); a
	// gap follows only if the server purges what was not archived.
	ReasonStreamFailing = "binlog stream failing"
	// ReasonBinlogGap: the archive records a stretch of binlog it lacks,
	// newer than every full backup, so point-in-time restore cannot reach
	// past it.
	ReasonBinlogGap  = "binlog gap"
	ReasonConflict   = "conflict"
	ReasonCopyBehind = "copy behind"
	ReasonEngine     = "engine"
)

// Evaluate says, per policy, which selected instances meet it and why the
// others do not:
//   - backups: a complete backup of the instance (or of its `cluster`
//     group, whose runs go to one member) finished within two periods of
//     each schedule (plus the window's day when it has one), once the
//     policy has existed that long; the latest scheduled run failed;
//   - binlog: no stream running (or stopped by hand); RPO (now - last
//     durable event) above rpo_target; the stream's runs failing; a gap
//     the stream's archive records (binlog purged before it was archived)
//     that no complete full backup of the instance or its group is at or
//     after (a backup after the gap restores point-in-time coverage from
//     it on);
//   - copies: through CopyBehind;
//   - engine: a schedule names an engine the instance's last probe
//     refuses (its scheduled runs would fail).
func Evaluate(r *catalog.Read, p StatusParams) []*v1.PolicyStatus {
	now := p.Now
	policies := r.Policies()
	instances := r.Instances()
	sel := Select(policies, instances)
	conflicts := map[string]string{}
	for _, c := range sel.Conflicts {
		conflicts[c.Instance] = c.String()
	}
	streams := map[string]*v1.Job{}
	clusterStreams := map[string]*v1.Job{}
	for _, j := range r.ActiveJobs() {
		if j.GetKind() == v1.JobKind_JOB_KIND_BINLOG_STREAM {
			streams[j.GetInstance()] = j
			if c := j.GetBinlogStream().GetCluster(); c != "" {
				clusterStreams[c] = j
			}
		}
	}
	// One pass over the instances and each policy's jobs, not one per
	// selected instance: the cost stays linear in the fleet.
	clusters := map[string][]*v1.Instance{}
	for _, in := range instances {
		if c := in.GetLabels()[catalog.ClusterLabel]; c != "" {
			clusters[c] = append(clusters[c], in)
		}
	}
	lastComplete := map[string]time.Time{}
	lastBackupOf := func(name string) time.Time {
		if t, ok := lastComplete[name]; ok {
			return t
		}
		var last time.Time
		for _, b := range r.Backups(name) {
			if b.GetStatus() == v1.BackupStatus_BACKUP_STATUS_COMPLETE && b.GetFinishedAt().AsTime().After(last) {
				last = b.GetFinishedAt().AsTime()
			}
		}
		lastComplete[name] = last
		return last
	}
	var out []*v1.PolicyStatus
	for _, pol := range policies {
		if p.Policy != "" && pol.GetName() != p.Policy {
			continue
		}
		spec := pol.GetSpec()
		ps := &v1.PolicyStatus{Policy: pol.GetName(), Version: pol.GetVersion()}
		latest := latestRuns(r, pol.GetName())
		for _, in := range sel.Selected[pol.GetName()] {
			st := &v1.PolicyInstanceStatus{Instance: in.GetName()}
			group := []*v1.Instance{in}
			if c := in.GetLabels()[catalog.ClusterLabel]; c != "" {
				group = clusters[c]
			}
			var lastBackup time.Time
			for _, m := range group {
				if t := lastBackupOf(m.GetName()); t.After(lastBackup) {
					lastBackup = t
				}
			}
			if !lastBackup.IsZero() {
				st.LastBackup = timestamppb.New(lastBackup)
			}
			if c := conflicts[in.GetName()]; c != "" {
				st.Reasons = append(st.Reasons, ReasonConflict+": "+c)
			}
			if sel.Owner[in.GetName()] == pol.GetName() {
				st.Reasons = append(st.Reasons, backupReasons(pol, in, latest, lastBackup, now)...)
			}
			if spec.GetBinlog().GetEnabled() {
				st.Reasons = append(st.Reasons, streamReasons(r, p, pol, in, streams, clusterStreams, st, now)...)
			}
			if p.CopyBehind != nil && len(spec.GetCopies()) > 0 {
				if why := p.CopyBehind(pol, in.GetName()); why != "" {
					st.Reasons = append(st.Reasons, ReasonCopyBehind+": "+why)
				}
			}
			st.Met = len(st.Reasons) == 0
			if st.Met {
				ps.Met++
			} else {
				ps.Unmet++
			}
			ps.Instances = append(ps.Instances, st)
		}
		slices.SortFunc(ps.Instances, func(a, b *v1.PolicyInstanceStatus) int { return cmp.Compare(a.GetInstance(), b.GetInstance()) })
		out = append(out, ps)
	}
	return out
}

// latestRuns is the latest finished scheduled backup job of a policy per
// (schedule index, run key): whether the last run that ended failed.
func latestRuns(r *catalog.Read, policy string) map[Key]*v1.Job {
	out := map[Key]*v1.Job{}
	finishedBackup := func(k v1.JobKind, s v1.JobState) bool { return k == v1.JobKind_JOB_KIND_BACKUP && catalog.Terminal(s) }
	for _, j := range r.LatestRunsOf(policy, finishedBackup) {
		out[Key{Policy: policy, Index: j.GetScheduleIndex(), RunKey: j.GetRunKey()}] = j
	}
	return out
}

func backupReasons(pol *v1.Policy, in *v1.Instance, latestRuns map[Key]*v1.Job, lastBackup, now time.Time) []string {
	var out []string
	runKey := in.GetName()
	if c := in.GetLabels()[catalog.ClusterLabel]; c != "" {
		runKey = "cluster:" + c
	}
	since := pol.GetCreatedAt().AsTime()
	for i, sc := range pol.GetSpec().GetBackups() {
		cs, err := policy.ParseSchedule(sc.GetCron())
		if err != nil {
			continue
		}
		allowed := 2 * policy.Period(cs, now)
		if pol.GetSpec().GetWindow() != "" {
			allowed += 24 * time.Hour
		}
		if now.Sub(since) > allowed && now.Sub(lastBackup) > allowed {
			last := "never"
			if !lastBackup.IsZero() {
				last = "the last at " + lastBackup.UTC().Format(time.RFC3339)
			}
			out = append(out, fmt.Sprintf("%s within %s (schedule %d %q; %s)", ReasonNoBackup, allowed, i, sc.GetCron(), last))
		}
		if why := engineReason(pol, i, sc, in); why != "" {
			out = append(out, why)
		}
		latest := latestRuns[Key{Policy: pol.GetName(), Index: uint32(i), RunKey: runKey}]
		if latest != nil && latest.GetState() == v1.JobState_JOB_STATE_FAILED {
			why := latest.GetResult().GetError()
			if why == "" {
				why = latest.GetReason()
			}
			out = append(out, fmt.Sprintf("%s: job %s (scheduled for %s): %s", ReasonFailed, latest.GetId(),
				latest.GetScheduledFor().AsTime().UTC().Format(time.RFC3339), why))
		}
	}
	return out
}

// engineReason says why schedule i of pol cannot back in up: it names an
// engine the instance's last probe refuses. An auto schedule always has
// logical (portable or not), and an instance not probed yet is no
// verdict: both give "".
func engineReason(pol *v1.Policy, i int, sc *v1.PolicySchedule, in *v1.Instance) string {
	e := sc.GetEngine()
	if e == "" || e == "auto" || in.GetCapabilities().GetFlavor() == "" {
		return ""
	}
	d, err := selection.Decide(in.GetCapabilities(), selection.Preferences{Engines: []string{e}, Portable: pol.GetSpec().GetPortable()})
	if err != nil {
		return fmt.Sprintf("%s: schedule %d %q: %v", ReasonEngine, i, sc.GetCron(), err)
	}
	if v, _ := d.Verdict(e); !v.OK {
		return fmt.Sprintf("%s: schedule %d %q names %s, which %s cannot run: %s (tidemark engines explain %s --policy %s)",
			ReasonEngine, i, sc.GetCron(), e, in.GetName(), v.Reason, in.GetName(), pol.GetName())
	}
	return ""
}

func streamReasons(r *catalog.Read, p StatusParams, pol *v1.Policy, in *v1.Instance, streams, clusterStreams map[string]*v1.Job,
	st *v1.PolicyInstanceStatus, now time.Time) []string {
	j := streams[in.GetName()]
	if c := in.GetLabels()[catalog.ClusterLabel]; c != "" && j == nil {
		j = clusterStreams[c]
	}
	if j == nil {
		if rec, err := r.BinlogStream(in.GetName()); err == nil {
			if old, err := r.Job(rec.GetJobId()); err == nil && StoppedByHand(old, pol) {
				return []string{fmt.Sprintf("%s: job %s was stopped (%s); `tidemark binlog start --instance %s` starts it again, or a new version of the policy does",
					ReasonNoStream, old.GetId(), old.GetReason(), in.GetName())}
			}
		}
		return []string{ReasonNoStream + " running"}
	}
	rec, err := r.BinlogStream(j.GetInstance())
	if err != nil {
		rec = &v1.BinlogStream{Instance: j.GetInstance(), JobId: j.GetId()}
	}
	if p.Stream != nil {
		rec = p.Stream(rec, j)
	}
	var out []string
	target := pol.GetSpec().GetBinlog().GetRpoTarget().AsDuration()
	if ev := rec.GetWatermark().GetLastEventTime(); ev != nil {
		rpo := max(now.Sub(ev.AsTime()), 0)
		st.Rpo = durationpb.New(rpo)
		if target > 0 && rpo > target {
			out = append(out, fmt.Sprintf("%s %s above the target %s (stream %s)", ReasonRPO, rpo.Round(time.Second), target, j.GetId()))
		}
	} else if age := now.Sub(j.GetCreatedAt().AsTime()); target > 0 && age > target {
		out = append(out, fmt.Sprintf("%s unknown: stream %s has made nothing durable in %s (target %s)", ReasonRPO, j.GetId(), age.Round(time.Second), target))
	}
	if rec.GetFailures() > 0 {
		out = append(out, fmt.Sprintf("%s (%d failed run(s) in a row): %s", ReasonStreamFailing, rec.GetFailures(), strings.TrimSpace(rec.GetLastError())))
	}
	for _, g := range rec.GetGaps() {
		if !gapCovered(r, in, g) {
			out = append(out, fmt.Sprintf("%s in stream %s: %s; point-in-time restore cannot cross it until a full backup taken after it completes",
				ReasonBinlogGap, rec.GetInstance(), GapText(g)))
		}
	}
	return out
}

// GapText describes a binlog gap for status lines and alerts: the missing
// range, its server times, when it was detected and why.
func GapText(g *v1.BinlogGap) string {
	var b strings.Builder
	fmt.Fprintf(&b, "binlog after %s up to %s is not archived", g.GetAfter(), g.GetBefore())
	if g.GetFromTime() != nil && g.GetToTime() != nil {
		fmt.Fprintf(&b, " (events from %s to %s)", rfc3339(g.GetFromTime()), rfc3339(g.GetToTime()))
	}
	if d := g.GetDetectedAt(); d != nil {
		fmt.Fprintf(&b, ", detected at %s", rfc3339(d))
	} else if d := g.GetRecordedAt(); d != nil {
		fmt.Fprintf(&b, ", recorded at %s", rfc3339(d))
	}
	if g.GetReason() != "" {
		b.WriteString(": " + g.GetReason())
	}
	return b.String()
}

func rfc3339(t *timestamppb.Timestamp) string { return t.AsTime().UTC().Format(time.RFC3339) }

// gapCovered says whether a complete full backup of in or of its `cluster`
// group is at or after the end of gap g, so point-in-time restore from that
// backup on does not cross the gap. Compared by GTID position when both
// have a MariaDB one (every domain of the gap's end included), else by
// server time (the backup's consistency point against the first archived
// event after the gap), else by the controller's times (the backup's start
// against when the gap was detected or recorded).
func gapCovered(r *catalog.Read, in *v1.Instance, g *v1.BinlogGap) bool {
	end, gerr := gtid.ParsePosition(g.GetBeforeGtid())
	for _, m := range r.Group(in) {
		for _, b := range r.Backups(m.GetName()) {
			if b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE || b.GetEngine() == "binlog" {
				continue
			}
			c := b.GetConsistency()
			if gerr == nil && len(end) > 0 && c.GetGtidSet() != "" {
				if pos, err := gtid.ParsePosition(c.GetGtidSet()); err == nil {
					if !end.Beyond(pos) {
						return true
					}
					continue
				}
			}
			if c.GetTime() != nil && g.GetToTime() != nil {
				if !c.GetTime().AsTime().Before(g.GetToTime().AsTime()) {
					return true
				}
				continue
			}
			at := g.GetDetectedAt()
			if at == nil {
				at = g.GetRecordedAt()
			}
			if at != nil && b.GetStartedAt() != nil && !b.GetStartedAt().AsTime().Before(at.AsTime()) {
				return true
			}
		}
	}
	return false
}
