package controller_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/controller/client"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestRetentionInProcess drives retention through a controller and a fake
// agent: backups a day apart, one pinned; the plan explains each verdict;
// applying it marks the expired ones and hands the agent one expire job
// naming them with their fences; the job's success makes them DELETED,
// and the pinned one and the last one stay whatever the rules say.
func TestRetentionInProcess(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 12, 10, 12, 0, 0, 0, time.UTC)}
	srv, c := startInProcess(t, func(cfg *controller.Config) { cfg.Clock = clk })
	ctx := context.Background()
	a, err := connectAgent(t, []string{srv.Addr()}, "db1")
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()

	var ids []string
	for i := range 5 {
		job := submitBackup(t, c, "db1")
		asg := a.assignment(5 * time.Second)
		at := clk.Now().Add(time.Duration(i-5) * 24 * time.Hour)
		bid := asg.GetJob().GetBackup().GetBackupId()
		seq := a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: &v1.JobResultReport{
			JobId: job.GetId(), Lease: asg.GetLease(), Ok: true, BackupId: bid, ManifestKey: "manifests/" + bid, RepositoryUri: "file:///backups",
			Manifest: &v1.Manifest{BackupId: bid, Instance: "db1", Engine: "logical", Fence: asg.GetLease(),
				StartedAt: timestamppb.New(at), FinishedAt: timestamppb.New(at.Add(time.Minute)),
				Consistency: &v1.ConsistencyPoint{Time: timestamppb.New(at)}},
		}}})
		if m := a.answer(seq); m.GetAck() == nil {
			t.Fatalf("result of %s: %v", bid, m)
		}
		ids = append(ids, bid)
	}
	// ids: oldest first.
	t.Run("Copy", func(t *testing.T) {
		_, err := c.Control.SubmitCopy(ctx, &v1.SubmitCopyRequest{BackupId: ids[4], DestinationRepositoryUri: "file:///backups"})
		wantCode(t, err, codes.InvalidArgument, "is in file:///backups already")
		_, err = c.Control.SubmitCopy(ctx, &v1.SubmitCopyRequest{BackupId: ids[4], DestinationRepositoryUri: "s3://u:p@b/x"})
		wantCode(t, err, codes.InvalidArgument, "credentials in the URI are not accepted")
		r, err := c.Control.SubmitCopy(ctx, &v1.SubmitCopyRequest{BackupId: ids[4], DestinationRepositoryUri: "s3://second/copies", WithBinlog: true})
		if err != nil {
			t.Fatal(err)
		}
		asg := a.assignment(5 * time.Second)
		cp := asg.GetJob().GetCopy()
		if asg.GetJob().GetId() != r.GetJob().GetId() || cp.GetSourceRepositoryUri() != "file:///backups" || !cp.GetWithBinlog() {
			t.Fatalf("copy assignment = %v", asg.GetJob())
		}
		seq := a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: &v1.JobResultReport{JobId: asg.GetJob().GetId(), Lease: asg.GetLease(), Ok: true, BackupId: ids[4]}}})
		if m := a.answer(seq); m.GetAck() == nil {
			t.Fatalf("copy result: %v", m)
		}
		b, err := c.Control.GetBackup(ctx, &v1.GetBackupRequest{Id: ids[4]})
		if err != nil || len(b.GetBackup().GetCopies()) != 1 || b.GetBackup().GetCopies()[0].GetRepositoryUri() != "s3://second/copies" ||
			b.GetBackup().GetCopies()[0].GetJobId() != asg.GetJob().GetId() {
			t.Fatalf("copies after the job: %v, %v", b.GetBackup().GetCopies(), err)
		}
	})
	pinned, err := c.Control.PinBackup(ctx, &v1.PinBackupRequest{BackupId: ids[1], Reason: "audit 2026"})
	if err != nil {
		t.Fatal(err)
	}
	if p := pinned.GetBackup().GetPin(); p.GetReason() != "audit 2026" || p.GetBy() == "" || !p.GetAt().AsTime().Equal(clk.Now()) {
		t.Fatalf("pin = %v (want the reason, who, and the leader's clock)", p)
	}
	_, err = c.Control.PinBackup(ctx, &v1.PinBackupRequest{BackupId: "nope"})
	wantCode(t, err, codes.NotFound, `backup "nope" not found`)
	_, err = c.Control.PlanRetention(ctx, &v1.PlanRetentionRequest{Rules: &v1.RetentionRules{}})
	wantCode(t, err, codes.InvalidArgument, "no retention rule")

	rules := &v1.RetentionRules{KeepLast: 1, PitrWindow: durationpb.New(36 * time.Hour)}
	plan, err := c.Control.PlanRetention(ctx, &v1.PlanRetentionRequest{Instance: "db1", Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.GetPlans()) != 1 {
		t.Fatalf("plans = %v", plan)
	}
	p := plan.GetPlans()[0]
	// 36 h back from the newest (1 day old) reaches ids[3] (2 days old) as the base.
	want := map[string]string{
		ids[4]: "keep: last complete backup", ids[3]: "keep: base of PITR window",
		ids[1]: "keep: pinned (audit 2026)", ids[2]: "expire: outside every rule", ids[0]: "expire: outside every rule",
	}
	for _, v := range p.GetBackups() {
		w := want[v.GetBackupId()]
		if !slices.ContainsFunc(v.GetReasons(), func(r string) bool { return strings.HasPrefix(r, w) }) || v.GetKeep() != strings.HasPrefix(w, "keep") {
			t.Errorf("%s: keep=%v %q, want %q", v.GetBackupId(), v.GetKeep(), v.GetReasons(), w)
		}
	}
	if p.GetPitrBaseBackupId() != ids[3] {
		t.Errorf("PITR base %s, want %s", p.GetPitrBaseBackupId(), ids[3])
	}
	// Planning changed nothing.
	if b, _ := c.Control.GetBackup(ctx, &v1.GetBackupRequest{Id: ids[0]}); b.GetBackup().GetExpiredAt() != nil {
		t.Fatal("PlanRetention marked a backup")
	}

	applied, err := c.Control.ApplyRetention(ctx, &v1.ApplyRetentionRequest{Instance: "db1", Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	if len(applied.GetJobIds()) != 1 {
		t.Fatalf("expire jobs = %v", applied.GetJobIds())
	}
	asg := a.assignment(5 * time.Second)
	ep := asg.GetJob().GetExpire()
	if asg.GetJob().GetKind() != v1.JobKind_JOB_KIND_EXPIRE || ep == nil || len(ep.GetBackups()) != 2 {
		t.Fatalf("expire assignment = %v", asg.GetJob())
	}
	var targets []string
	for _, tg := range ep.GetBackups() {
		targets = append(targets, tg.GetBackupId())
		if tg.GetFence() == nil {
			t.Errorf("target %s has no fence", tg.GetBackupId())
		}
	}
	slices.Sort(targets)
	wantTargets := []string{ids[0], ids[2]}
	slices.Sort(wantTargets)
	if !slices.Equal(targets, wantTargets) {
		t.Fatalf("expire targets %v, want %v", targets, wantTargets)
	}
	// Marked, not yet deleted: a restore of it is refused, a pin too.
	_, err = c.Control.PinBackup(ctx, &v1.PinBackupRequest{BackupId: ids[0]})
	wantCode(t, err, codes.FailedPrecondition, "marked expired")
	// Applying again while the job runs submits nothing new.
	again, err := c.Control.ApplyRetention(ctx, &v1.ApplyRetentionRequest{Instance: "db1", Rules: rules})
	if err != nil || len(again.GetJobIds()) != 0 {
		t.Fatalf("second apply: %v, %v", again.GetJobIds(), err)
	}
	seq := a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: &v1.JobResultReport{JobId: asg.GetJob().GetId(), Lease: asg.GetLease(), Ok: true}}})
	if m := a.answer(seq); m.GetAck() == nil {
		t.Fatalf("expire result: %v", m)
	}
	waitJobState(t, c, asg.GetJob().GetId(), v1.JobState_JOB_STATE_SUCCEEDED, 5*time.Second)
	for _, id := range ids {
		b, err := c.Control.GetBackup(ctx, &v1.GetBackupRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		gone := id == ids[0] || id == ids[2]
		if (b.GetBackup().GetStatus() == v1.BackupStatus_BACKUP_STATUS_DELETED) != gone {
			t.Errorf("%s: status %s", id, b.GetBackup().GetStatus())
		}
	}
	list, err := c.Control.ListBackups(ctx, &v1.ListBackupsRequest{Instance: "db1"})
	if err != nil || len(list.GetBackups()) != 3 {
		t.Fatalf("backups listed after expiry: %d, %v", len(list.GetBackups()), err)
	}

	// By hand: the last complete backup is refused, a pinned one too.
	_, err = c.Control.ExpireBackup(ctx, &v1.ExpireBackupRequest{BackupId: ids[4]})
	wantCode(t, err, codes.FailedPrecondition, "is the last complete backup of instance")
	_, err = c.Control.ExpireBackup(ctx, &v1.ExpireBackupRequest{BackupId: ids[1]})
	wantCode(t, err, codes.FailedPrecondition, "is pinned (audit 2026)")
	byHand, err := c.Control.ExpireBackup(ctx, &v1.ExpireBackupRequest{BackupId: ids[3], Reason: "bad data"})
	if err != nil {
		t.Fatal(err)
	}
	asg = a.assignment(5 * time.Second)
	if asg.GetJob().GetId() != byHand.GetJob().GetId() || len(asg.GetJob().GetExpire().GetBackups()) != 1 {
		t.Fatalf("hand expiry assignment = %v", asg.GetJob())
	}
	if b, _ := c.Control.GetBackup(ctx, &v1.GetBackupRequest{Id: ids[3]}); !strings.HasPrefix(b.GetBackup().GetExpireReason(), "expire: by ") ||
		!strings.HasSuffix(b.GetBackup().GetExpireReason(), "(bad data)") {
		t.Errorf("hand expiry reason %q", b.GetBackup().GetExpireReason())
	}
	seq = a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: &v1.JobResultReport{JobId: asg.GetJob().GetId(), Lease: asg.GetLease(), Ok: true}}})
	if m := a.answer(seq); m.GetAck() == nil {
		t.Fatalf("expire result: %v", m)
	}

	// Unpinned and a week later: only the last complete backup and the
	// window's base remain kept.
	if _, err := c.Control.UnpinBackup(ctx, &v1.UnpinBackupRequest{BackupId: ids[1]}); err != nil {
		t.Fatal(err)
	}
	clk.set(clk.Now().Add(7 * 24 * time.Hour))
	plan, err = c.Control.PlanRetention(ctx, &v1.PlanRetentionRequest{Instance: "db1", Rules: rules, Consistent: true})
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, v := range plan.GetPlans()[0].GetBackups() {
		if v.GetKeep() {
			keep = append(keep, v.GetBackupId())
		}
	}
	if !slices.Equal(keep, []string{ids[4]}) {
		t.Errorf("a week later kept %v, want only the last %s (also the base: no backup inside the window)", keep, ids[4])
	}
}

// TestRetentionMonthInProcess is the simulated month through the
// controller: a backup every 12 hours of a test clock the leader reads
// (never the FSM), retention applied after each with the expire jobs run
// by a fake agent. At every step the last complete backup and the pinned
// one stay; at the end exactly the GFS set of every backup ever taken is
// left, the rest DELETED.
func TestRetentionMonthInProcess(t *testing.T) {
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	clk := &testClock{t: start}
	srv, c := startInProcess(t, func(cfg *controller.Config) { cfg.Clock = clk })
	ctx := context.Background()
	a, err := connectAgent(t, []string{srv.Addr()}, "db1")
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	rules := &v1.RetentionRules{KeepLast: 2, KeepDaily: 5, KeepWeekly: 3, KeepMonthly: 2, PitrWindow: durationpb.New(36 * time.Hour)}
	type taken struct {
		id string
		at time.Time
	}
	var all []taken
	var pinned string
	for n := 0; n < 62; n++ {
		at := clk.Now()
		bid := fakeBackup(t, c, a, at)
		all = append(all, taken{bid, at})
		if n == 9 {
			pinned = bid
			if _, err := c.Control.PinBackup(ctx, &v1.PinBackupRequest{BackupId: bid, Reason: "legal hold"}); err != nil {
				t.Fatal(err)
			}
		}
		clk.set(at.Add(12 * time.Hour))
		r, err := c.Control.ApplyRetention(ctx, &v1.ApplyRetentionRequest{Instance: "db1", Rules: rules})
		if err != nil {
			t.Fatalf("step %d: %v", n, err)
		}
		for range r.GetJobIds() {
			asg := a.assignment(5 * time.Second)
			for _, tg := range asg.GetJob().GetExpire().GetBackups() {
				if tg.GetBackupId() == bid || tg.GetBackupId() == pinned {
					t.Fatalf("step %d: the expire job deletes %s (last %s, pinned %s)", n, tg.GetBackupId(), bid, pinned)
				}
			}
			seq := a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: &v1.JobResultReport{JobId: asg.GetJob().GetId(), Lease: asg.GetLease(), Ok: true}}})
			if m := a.answer(seq); m.GetAck() == nil {
				t.Fatalf("expire result: %v", m)
			}
		}
	}
	// What the rules keep out of every backup taken, computed here by
	// grouping: the newest per bucket, the newest buckets first.
	now := clk.Now()
	want := map[string]bool{all[len(all)-1].id: true, all[len(all)-2].id: true, pinned: true}
	for _, g := range []struct {
		n   int
		key func(time.Time) string
	}{
		{5, func(t time.Time) string { return t.Format("2006-01-02") }},
		{3, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprint(y, w) }},
		{2, func(t time.Time) string { return t.Format("2006-01") }},
	} {
		var keys []string
		newest := map[string]string{}
		for i := len(all) - 1; i >= 0; i-- {
			k := g.key(all[i].at)
			if _, ok := newest[k]; !ok {
				newest[k] = all[i].id
				keys = append(keys, k)
			}
		}
		for _, k := range keys[:g.n] {
			want[newest[k]] = true
		}
	}
	cutoff := now.Add(-36 * time.Hour)
	for i := len(all) - 1; i >= 0; i-- {
		want[all[i].id] = true
		if !all[i].at.After(cutoff) {
			break // the window's base
		}
	}
	list, err := c.Control.ListBackups(ctx, &v1.ListBackupsRequest{Instance: "db1"})
	if err != nil {
		t.Fatal(err)
	}
	var got, wantIDs []string
	for _, b := range list.GetBackups() {
		got = append(got, b.GetId())
	}
	for id := range want {
		wantIDs = append(wantIDs, id)
	}
	slices.Sort(got)
	slices.Sort(wantIDs)
	if !slices.Equal(got, wantIDs) {
		t.Errorf("after a month, the catalog lists %d backups %v\nthe rules keep %d: %v", len(got), got, len(wantIDs), wantIDs)
	}
	deleted, err := c.Control.ListBackups(ctx, &v1.ListBackupsRequest{Instance: "db1", Status: v1.BackupStatus_BACKUP_STATUS_DELETED})
	if err != nil || len(deleted.GetBackups())+len(got) != len(all) {
		t.Errorf("%d deleted + %d kept, %d taken (%v)", len(deleted.GetBackups()), len(got), len(all), err)
	}
	t.Logf("after 31 days: %d of %d backups kept", len(got), len(all))
}

// fakeBackup runs one backup job of db1 through fake agent a, consistent
// at at, and returns the backup id.
func fakeBackup(t *testing.T, c *client.Conn, a *fakeAgent, at time.Time) string {
	t.Helper()
	job := submitBackup(t, c, "db1")
	asg := a.assignment(5 * time.Second)
	bid := asg.GetJob().GetBackup().GetBackupId()
	seq := a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: &v1.JobResultReport{
		JobId: job.GetId(), Lease: asg.GetLease(), Ok: true, BackupId: bid, ManifestKey: "manifests/" + bid, RepositoryUri: "file:///backups",
		Manifest: &v1.Manifest{BackupId: bid, Instance: "db1", Engine: "logical", Fence: asg.GetLease(),
			StartedAt: timestamppb.New(at), FinishedAt: timestamppb.New(at.Add(time.Minute)), Consistency: &v1.ConsistencyPoint{Time: timestamppb.New(at)}},
	}}})
	if m := a.answer(seq); m.GetAck() == nil {
		t.Fatalf("result of %s: %v", bid, m)
	}
	return bid
}

// finishJob reports the next assignment of a as succeeded and returns it.
func finishJob(t *testing.T, a *fakeAgent) *v1.JobAssignment {
	t.Helper()
	asg := a.assignment(5 * time.Second)
	seq := a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: &v1.JobResultReport{JobId: asg.GetJob().GetId(), Lease: asg.GetLease(), Ok: true}}})
	if m := a.answer(seq); m.GetAck() == nil {
		t.Fatalf("result of %s: %v", asg.GetJob().GetId(), m)
	}
	return asg
}

// TestCopyRetentionInProcess: the copies in a second repository follow
// their own rules: applying keep-last 1 there sends the agent an expire job
// of copies in that repository, after which the older copies leave the
// catalog and every backup stays complete.
func TestCopyRetentionInProcess(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 12, 10, 0, 0, 0, 0, time.UTC)}
	srv, c := startInProcess(t, func(cfg *controller.Config) { cfg.Clock = clk })
	ctx := context.Background()
	a, err := connectAgent(t, []string{srv.Addr()}, "db1")
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	const second = "s3://dr-site/copies"
	var ids []string
	for i := range 3 {
		id := fakeBackup(t, c, a, clk.Now().Add(time.Duration(i-3)*time.Hour))
		ids = append(ids, id)
		if _, err := c.Control.SubmitCopy(ctx, &v1.SubmitCopyRequest{BackupId: id, DestinationRepositoryUri: second}); err != nil {
			t.Fatal(err)
		}
		finishJob(t, a)
	}
	rules := &v1.RetentionRules{KeepLast: 1}
	plan, err := c.Control.PlanRetention(ctx, &v1.PlanRetentionRequest{Instance: "db1", Rules: rules, CopyRepositoryUri: second})
	if err != nil || len(plan.GetPlans()) != 1 || len(plan.GetPlans()[0].GetBackups()) != 3 {
		t.Fatalf("plan of the copies: %v, %v", plan, err)
	}
	applied, err := c.Control.ApplyRetention(ctx, &v1.ApplyRetentionRequest{Instance: "db1", Rules: rules, CopyRepositoryUri: second})
	if err != nil || len(applied.GetJobIds()) != 1 {
		t.Fatalf("apply to the copies: %v, %v", applied, err)
	}
	asg := finishJob(t, a)
	ep := asg.GetJob().GetExpire()
	if !ep.GetCopies() || ep.GetRepositoryUri() != second || len(ep.GetBackups()) != 2 {
		t.Fatalf("expire job of copies: %v", asg.GetJob())
	}
	waitJobState(t, c, asg.GetJob().GetId(), v1.JobState_JOB_STATE_SUCCEEDED, 5*time.Second)
	for i, id := range ids {
		b, err := c.Control.GetBackup(ctx, &v1.GetBackupRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		if b.GetBackup().GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE || (len(b.GetBackup().GetCopies()) == 1) != (i == 2) {
			t.Errorf("backup %d after the copies' expiry: %v", i, b.GetBackup())
		}
	}
}

// TestFailedExpiryIsRetried: an expire job that fails leaves its backups
// marked; the next apply hands them to a new job, which deletes them.
func TestFailedExpiryIsRetried(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 12, 10, 0, 0, 0, 0, time.UTC)}
	srv, c := startInProcess(t, func(cfg *controller.Config) { cfg.Clock = clk })
	ctx := context.Background()
	a, err := connectAgent(t, []string{srv.Addr()}, "db1")
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	for i := range 3 {
		fakeBackup(t, c, a, clk.Now().Add(time.Duration(i-3)*time.Hour))
	}
	rules := &v1.RetentionRules{KeepLast: 1}
	if r, err := c.Control.ApplyRetention(ctx, &v1.ApplyRetentionRequest{Instance: "db1", Rules: rules}); err != nil || len(r.GetJobIds()) != 1 {
		t.Fatalf("apply: %v, %v", r, err)
	}
	asg := a.assignment(5 * time.Second)
	seq := a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: &v1.JobResultReport{
		JobId: asg.GetJob().GetId(), Lease: asg.GetLease(), Error: "repository unreachable"}}})
	if m := a.answer(seq); m.GetAck() == nil {
		t.Fatalf("failure report: %v", m)
	}
	waitJobState(t, c, asg.GetJob().GetId(), v1.JobState_JOB_STATE_FAILED, 5*time.Second)
	r, err := c.Control.ApplyRetention(ctx, &v1.ApplyRetentionRequest{Instance: "db1", Rules: rules})
	if err != nil || len(r.GetJobIds()) != 1 || r.GetJobIds()[0] == asg.GetJob().GetId() {
		t.Fatalf("apply after the failure: %v, %v", r, err)
	}
	again := finishJob(t, a)
	if len(again.GetJob().GetExpire().GetBackups()) != 2 {
		t.Fatalf("the new job takes %v", again.GetJob().GetExpire().GetBackups())
	}
	waitJobState(t, c, again.GetJob().GetId(), v1.JobState_JOB_STATE_SUCCEEDED, 5*time.Second)
	list, err := c.Control.ListBackups(ctx, &v1.ListBackupsRequest{Instance: "db1"})
	if err != nil || len(list.GetBackups()) != 1 {
		t.Fatalf("backups left: %v, %v", list.GetBackups(), err)
	}
}
