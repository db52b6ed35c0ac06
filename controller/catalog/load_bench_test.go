package catalog

import (
	"testing"
)

// BenchmarkLoadJobs: loading a snapshot's jobs into a new store (what a
// Raft restore does), per job.
func BenchmarkLoadJobs(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		s := New()
		w := s.Write()
		for i := range 20000 {
			if err := w.PutJob(testJob(i)); err != nil {
				b.Fatal(err)
			}
		}
		w.Commit()
	}
}
