package catalog

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// testBackup i: instance db(i%3), started at minute i%40 (ties on
// purpose), COMPLETE, DELETED when i%5 == 0, written by job j<i>, marked
// by expire job e<i/4> (shared) when i%2 == 0, with a copy by job c<i>
// when i%7 == 0.
func testBackup(i int) *v1.Backup {
	b := &v1.Backup{Id: fmt.Sprintf("b%03d", i), Instance: fmt.Sprintf("db%d", i%3), Engine: "logical",
		Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE, JobId: fmt.Sprintf("j%03d", i),
		StartedAt:  timestamppb.New(t0.Add(time.Duration(i%40) * time.Minute)),
		FinishedAt: timestamppb.New(t0.Add(time.Duration(i) * time.Hour)),
		Labels:     map[string]string{"z": "1", "a": "2", "m": fmt.Sprint(i)}}
	if i%2 == 0 {
		b.ExpireJobId = fmt.Sprintf("e%03d", i/4)
	}
	if i%7 == 0 {
		b.Copies = []*v1.BackupCopy{{RepositoryUri: "s3://other", JobId: fmt.Sprintf("c%03d", i)}}
	}
	if i%5 == 0 {
		b.Status = v1.BackupStatus_BACKUP_STATUS_DELETED
		b.DeletedAt = timestamppb.New(t0.Add(time.Duration(1000-i) * time.Second))
	}
	return b
}

func putBackups(t *testing.T, s *Store, bs ...*v1.Backup) {
	t.Helper()
	w := s.Write()
	for _, b := range bs {
		if err := w.PutBackup(b); err != nil {
			t.Fatal(err)
		}
	}
	w.Commit()
}

// TestBackupStore: lookups, every listing order and the index walks
// agree with the records put, replacing a record moves it in every index,
// a Read keeps its version, and a delete removes it everywhere.
func TestBackupStore(t *testing.T) {
	s := New()
	var bs []*v1.Backup
	for i := range 120 {
		bs = append(bs, testBackup(i))
	}
	putBackups(t, s, bs...)
	r := s.Read()
	for _, b := range bs {
		got, err := r.Backup(b.GetId())
		if err != nil || !proto.Equal(got, b) {
			t.Fatalf("Backup(%q) = %v, %v; want %v", b.GetId(), got, err, b)
		}
	}
	if _, err := r.Backup("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a missing backup: %v, want ErrNotFound", err)
	}
	newestFirst := func(instance string) []string {
		var sel []*v1.Backup
		for _, b := range bs {
			if instance == "" || b.GetInstance() == instance {
				sel = append(sel, b)
			}
		}
		slices.SortFunc(sel, func(a, b *v1.Backup) int {
			pa, pb := backupPos(a), backupPos(b)
			if pa.OlderThan(pb) {
				return 1
			}
			return -1
		})
		var out []string
		for _, b := range sel {
			out = append(out, b.GetId())
		}
		return out
	}
	for _, in := range []string{"", "db1", "db9"} {
		if got, want := bids(r.Backups(in)), newestFirst(in); !slices.Equal(got, want) {
			t.Fatalf("Backups(%q) = %v, want %v", in, got, want)
		}
	}
	// Deleted records oldest deletion first: i descending.
	var del []string
	r.EachDeletedBackup(func(b *v1.Backup) bool { del = append(del, b.GetId()); return true })
	if want := []string{"b115", "b110", "b105"}; len(del) != 24 || !slices.Equal(del[:3], want) {
		t.Fatalf("deleted walk: %v", del)
	}
	// References: the writer, a shared expire job (b004..b007 share
	// e001; b004 is not deleted), copies; DELETED records do not count.
	for ref, want := range map[string]bool{"j001": true, "j005": false, "e001": true, "e000": true, "c007": true, "c035": false, "x": false} {
		if got := r.JobReferenced(ref); got != want {
			t.Errorf("JobReferenced(%q) = %v, want %v", ref, got, want)
		}
	}
	last := r.LastCompleteBackups()
	if len(last) != 3 || last["db2"] != t0.Add(119*time.Hour).UnixNano() || last["db1"] != t0.Add(118*time.Hour).UnixNano() {
		t.Fatalf("last complete: %v", last)
	}

	// Replace b001 (instance, status, refs change) and delete b002; the
	// earlier Read keeps its version.
	b1 := proto.CloneOf(bs[1])
	b1.Instance, b1.Status, b1.JobId = "db9", v1.BackupStatus_BACKUP_STATUS_DELETED, "j999"
	b1.DeletedAt = timestamppb.New(t0)
	w := s.Write()
	if err := w.PutBackup(b1); err != nil {
		t.Fatal(err)
	}
	if err := w.DeleteBackup("b002"); err != nil {
		t.Fatal(err)
	}
	if err := w.DeleteBackup("b002"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting twice: %v, want ErrNotFound", err)
	}
	w.Commit()
	if got, _ := r.Backup("b001"); got.GetInstance() != "db1" || len(r.Backups("db9")) != 0 || !r.JobReferenced("j001") {
		t.Fatal("a Read saw a later commit")
	}
	n := s.Read()
	if _, err := n.Backup("b002"); !errors.Is(err, ErrNotFound) || n.BackupCount() != 119 {
		t.Fatalf("after the delete: %v, %d records", err, n.BackupCount())
	}
	if got := bids(n.Backups("db9")); !slices.Equal(got, []string{"b001"}) || slices.Contains(bids(n.Backups("db1")), "b001") {
		t.Fatalf("the instance index after a replace: db9 %v", got)
	}
	// e000 marked b000 (DELETED) and b002 (gone).
	if n.JobReferenced("j001") || n.JobReferenced("j999") || !n.JobReferenced("e001") || n.JobReferenced("e000") {
		t.Fatal("the refs index after a replace")
	}
	del = del[:0]
	n.EachDeletedBackup(func(b *v1.Backup) bool { del = append(del, b.GetId()); return len(del) < 2 })
	if !slices.Equal(del, []string{"b001", "b115"}) {
		t.Fatalf("deleted walk after a replace: %v", del)
	}
	if err := s.Write().PutBackup(&v1.Backup{Instance: "db1"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a backup without an id: %v, want ErrInvalid", err)
	}
}

// TestBackupSnapshot: a dump carries the records as bytes sorted by id; a
// loaded dump dumps the same bytes; a snapshot from before the backup
// store (records in backups) loads into it and dumps the same; and
// another node putting the same records in another order, with detours,
// dumps the same bytes.
func TestBackupSnapshot(t *testing.T) {
	var bs []*v1.Backup
	for i := range 200 {
		bs = append(bs, testBackup(i))
	}
	a := New()
	putBackups(t, a, bs...)
	dump := a.Read().Dump()
	if len(dump.GetBackupRecords()) != 200 || len(dump.GetBackups()) != 0 {
		t.Fatalf("dump: %d records, %d in the old field", len(dump.GetBackupRecords()), len(dump.GetBackups()))
	}
	want := dumpBytes(t, a)
	b := loadDump(t, want)
	if string(dumpBytes(t, b)) != string(want) {
		t.Fatal("a loaded dump dumps different bytes")
	}
	if got := b.Read().Backups("db2"); len(got) != len(a.Read().Backups("db2")) || !b.Read().JobReferenced("e001") {
		t.Fatal("a loaded dump lost its indexes")
	}

	old := proto.CloneOf(dump)
	old.BackupRecords = nil
	old.Backups = slices.Clone(bs)
	ob, _ := proto.MarshalOptions{Deterministic: true}.Marshal(old)
	if c := loadDump(t, ob); string(dumpBytes(t, c)) != string(want) || c.Read().BackupCount() != 200 {
		t.Fatal("an old snapshot, loaded, dumps differently from the catalog it was taken of")
	}

	d := New()
	for k := 0; k < len(bs); k += 17 {
		w := d.Write()
		for i := min(len(bs), k+17) - 1; i >= k; i-- {
			r := proto.CloneOf(bs[i])
			r.Status = v1.BackupStatus_BACKUP_STATUS_RUNNING
			if err := w.PutBackup(r); err != nil {
				t.Fatal(err)
			}
			if err := w.PutBackup(bs[i]); err != nil {
				t.Fatal(err)
			}
		}
		w.Commit()
	}
	if string(dumpBytes(t, d)) != string(want) {
		t.Fatal("the same backups put in another order dump differently")
	}

	// A corrupt record is an error naming it, not a panic.
	bad := proto.CloneOf(dump)
	bad.BackupRecords = [][]byte{bad.BackupRecords[0], {0xff, 0xff}}
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), "backup record 2 of 2") {
		t.Fatalf("a corrupt record: %v", err)
	}
}

// TestBackupConcurrentReads: while a writer replaces backups (their
// status, instance and references change) together with a finished job
// in the same transactions, every Read and Snapshot sees all N backups
// once in every index, and the backup and the job of one commit together.
// Run with -race it also checks that readers of a published version never
// touch what the writer changes.
func TestBackupConcurrentReads(t *testing.T) {
	const n = 100
	s := New()
	var bs []*v1.Backup
	for i := range n {
		bs = append(bs, testBackup(i))
	}
	putBackups(t, s, bs...)
	marker := func(step int) (*v1.Backup, *v1.Job) {
		b := testBackup(n)
		b.Id, b.Labels = "marker", map[string]string{"step": fmt.Sprint(step)}
		j := finishedJob(1000, v1.JobState_JOB_STATE_SUCCEEDED)
		j.Id, j.Reason = "marker", fmt.Sprint(step)
		return b, j
	}
	stop := make(chan struct{})
	done := make(chan error, 3)
	for r := range 3 {
		go func() {
			for reads := 0; ; reads++ {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				rd := s.Read()
				if r == 2 {
					rd = s.Snapshot().Read()
				}
				var byID []string
				rd.EachBackup(func(b *v1.Backup) { byID = append(byID, b.GetId()) })
				all := bids(rd.Backups(""))
				var perInstance int
				for _, in := range []string{"db0", "db1", "db2", "db9"} {
					perInstance += len(rd.Backups(in))
				}
				if rd.BackupCount() != len(byID) || len(all) != len(byID) || perInstance != len(byID) || len(byID) < n {
					done <- fmt.Errorf("read %d: %d by id, %d by start, %d by instance, count %d", reads, len(byID), len(all), perInstance, rd.BackupCount())
					return
				}
				if b, err := rd.Backup("marker"); err == nil {
					j, err := rd.Job("marker")
					if err != nil || j.GetReason() != b.GetLabels()["step"] {
						done <- fmt.Errorf("read %d: backup of step %s with job %v: %w", reads, b.GetLabels()["step"], j.GetReason(), err)
						return
					}
				}
			}
		}()
	}
	for step := range 300 {
		w := s.Write()
		for k := range 5 {
			b := proto.CloneOf(bs[(step*5+k)%n])
			b.Instance = []string{"db9", "db0", "db1"}[step%3]
			b.Status = []v1.BackupStatus{v1.BackupStatus_BACKUP_STATUS_DELETED, v1.BackupStatus_BACKUP_STATUS_COMPLETE}[step%2]
			b.JobId = fmt.Sprintf("j-step%d", step)
			if err := w.PutBackup(b); err != nil {
				t.Fatal(err)
			}
		}
		mb, mj := marker(step)
		if err := w.PutBackup(mb); err != nil {
			t.Fatal(err)
		}
		if err := w.PutJob(mj); err != nil {
			t.Fatal(err)
		}
		w.Commit()
	}
	close(stop)
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func bids(bs []*v1.Backup) []string {
	out := make([]string, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.GetId())
	}
	return out
}

// dumpBytes is s's snapshot, marshalled deterministically.
func dumpBytes(t *testing.T, s *Store) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s.Read().Dump())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// loadDump is a store loaded from dumpBytes' output.
func loadDump(t *testing.T, b []byte) *Store {
	t.Helper()
	snap := &v1.CatalogSnapshot{}
	if err := proto.Unmarshal(b, snap); err != nil {
		t.Fatal(err)
	}
	s, err := Load(snap)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
