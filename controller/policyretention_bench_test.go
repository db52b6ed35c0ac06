package controller

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// benchFleet is a catalog of 2,000 instances under 20 policies (100 each,
// by a `group` label), each with daily GFS retention and a copy repository
// with its own retention, and 30 daily backups per instance, each copied.
func benchFleet(b *testing.B) (*catalog.Store, time.Time) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	s := catalog.New()
	w := s.Write()
	for p := range 20 {
		spec := &v1.PolicySpec{Name: fmt.Sprintf("p%d", p), Selector: fmt.Sprintf("group=g%d", p),
			Retention: &v1.RetentionRules{KeepLast: 2, KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 6},
			Copies:    []*v1.CopyTarget{{RepositoryUri: "file:///dr", Retention: &v1.RetentionRules{KeepWeekly: 8}}}}
		if err := w.PutPolicy(&v1.Policy{Name: spec.GetName(), Version: 1, Spec: spec, CreatedAt: timestamppb.New(t0)}); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 2000 {
		name := fmt.Sprintf("db%04d", i)
		if err := w.PutInstance(&v1.Instance{Name: name, Labels: map[string]string{"group": fmt.Sprintf("g%d", i%20)}}); err != nil {
			b.Fatal(err)
		}
		for d := range 30 {
			at := t0.Add(time.Duration(d)*24*time.Hour + time.Hour)
			if err := w.PutBackup(&v1.Backup{Id: fmt.Sprintf("%s-%02d", name, d), Instance: name, Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE,
				RepositoryUri: "file:///main", FinishedAt: timestamppb.New(at), Consistency: &v1.ConsistencyPoint{Time: timestamppb.New(at)},
				Copies: []*v1.BackupCopy{{RepositoryUri: "file:///dr"}}}); err != nil {
				b.Fatal(err)
			}
		}
	}
	w.Commit()
	return s, t0.Add(30 * 24 * time.Hour)
}

// BenchmarkPolicyRetentionPass is one pass of the leader's policy
// retention planning (backups and copies) over the fleet.
func BenchmarkPolicyRetentionPass(b *testing.B) {
	s, now := benchFleet(b)
	r := s.Read()
	for b.Loop() {
		_, raw, err := planPolicies(r, nil, "", "", "", true, now)
		if err != nil || len(raw) != 4000 {
			b.Fatalf("%d plans, %v", len(raw), err)
		}
	}
}

// BenchmarkPolicyCopyPass is one pass of the copy scan over the fleet
// (every backup copied already: the steady state).
func BenchmarkPolicyCopyPass(b *testing.B) {
	s, now := benchFleet(b)
	r := s.Read()
	for b.Loop() {
		if jobs := copiesDue(r, "", now, time.Second, 2); len(jobs) != 0 {
			b.Fatalf("%d copy jobs", len(jobs))
		}
	}
}
