package fsm

import (
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// defaultPruneBatch bounds the records one PruneCatalog entry removes, so
// that the first pass over a catalog that grew for years does not stall
// every node's apply loop: the leader proposes entries until one reports
// nothing more. Removing a job costs its five index entries and its
// checks: 10,000 per entry blocked the apply loop for seconds on a busy
// 2-core machine (bench/README.md, BenchmarkCatalog), 1,000 for a tenth
// of that.
const defaultPruneBatch = 1000

// applyPruneCatalog removes finished jobs beyond the history bounds and
// DELETED backup records past their tombstone window, oldest first, as of
// the entry's own time: every node removes the same records.
//
// A finished job stays, whatever its age or rank, while
//   - a backup that is not DELETED refers to it (it wrote the backup, or
//     marked it or a copy expired: retention reads whether that expire job
//     failed before it marks the backup again, and `backups` shows the
//     job);
//   - it is the latest run of its (policy, schedule, run key): the
//     scheduler rebuilds from it which runs are done after a leader change,
//     and a pruned one would be run again;
//   - a binlog stream record names it: a stream stopped by hand stays
//     stopped because the scheduler reads that job.
//
// Such jobs still count towards max_jobs: the bound is on the history,
// and kept jobs only ever exceed it by what they protect. A job that is
// not finished is never in the walk at all.
func applyPruneCatalog(w *catalog.Write, c *v1.PruneCatalog) (proto.Message, error) {
	if c.GetAt() == nil {
		return nil, catalog.Errorf(catalog.ErrInvalid, "PruneCatalog without a time")
	}
	if c.GetJobAgeSeconds() < 0 || c.GetTombstoneAgeSeconds() < 0 {
		return nil, catalog.Errorf(catalog.ErrInvalid, "PruneCatalog with a negative age (%ds, %ds)", c.GetJobAgeSeconds(), c.GetTombstoneAgeSeconds())
	}
	batch := int(c.GetBatch())
	if batch == 0 {
		batch = defaultPruneBatch
	}
	at := c.GetAt().AsTime()
	res := &v1.PruneCatalogResult{}

	// Jobs: older than the max_jobs-th newest, or finished before the
	// age cut.
	var rankCut *catalog.Cursor
	if m := int(c.GetMaxJobs()); m > 0 {
		if p, ok := w.NthNewestFinished(m); ok {
			rankCut = &p
		}
	}
	ageCut := int64(-1 << 63)
	if s := c.GetJobAgeSeconds(); s > 0 {
		ageCut = at.Add(-time.Duration(s) * time.Second).UnixNano()
	}
	streamJobs := map[string]bool{}
	for _, s := range w.BinlogStreams() {
		streamJobs[s.GetJobId()] = true
	}
	var jobs []string
	// The walk resumes after the last job the previous entry of the pass
	// judged: the jobs before it were removed or kept, and walking past
	// the kept ones again at every entry made a pass quadratic (at 1M
	// jobs, 90,000 kept ones and 1.7 s for the last entries;
	// bench/README.md). A kept job that may go later (its backup deleted
	// meanwhile) goes at the next pass, which starts from the oldest.
	var from, last *catalog.Cursor
	if c.GetResumeAfterId() != "" {
		from = &catalog.Cursor{At: c.GetResumeAfterNanos(), ID: c.GetResumeAfterId()}
	}
	w.EachFinishedAfter(from, func(f catalog.FinishedJob) bool {
		p := f.Pos
		if p.At >= ageCut && (rankCut == nil || !p.OlderThan(*rankCut)) {
			return false // this one and every later one stays
		}
		if len(jobs) >= batch {
			res.More = true
			return false
		}
		last = &p
		// A backup job whose dead attempts may have left manifests stays
		// until the reconcile sweep has judged them (without its record an
		// orphan is "unknown" and kept for ever), bounded by the age limit
		// alone, so a cluster with the sweep off still forgets it. The
		// walk reads the finished store's index fields only: no job is
		// decoded.
		if f.Unswept && p.At >= ageCut || keepJob(&w.Read, f, streamJobs) {
			return true
		}
		jobs = append(jobs, f.ID)
		return true
	})
	for _, id := range jobs {
		if err := w.DeleteJob(id); err != nil {
			return nil, err
		}
	}
	res.JobsRemoved = uint32(len(jobs))

	// Backup tombstones.
	tombCut := at.Add(-time.Duration(c.GetTombstoneAgeSeconds()) * time.Second).UnixNano()
	var backups []string
	w.EachDeletedBackup(func(b *v1.Backup) bool {
		if !catalog.Before(b.GetDeletedAt(), tombCut) && c.GetTombstoneAgeSeconds() > 0 {
			return false
		}
		if len(jobs)+len(backups) >= batch {
			res.More = true
			return false
		}
		backups = append(backups, b.GetId())
		return true
	})
	for _, id := range backups {
		if err := w.DeleteBackup(id); err != nil {
			return nil, err
		}
	}
	res.BackupsRemoved = uint32(len(backups))
	if res.More && last != nil {
		res.ResumeAfterNanos, res.ResumeAfterId = last.At, last.ID
	}
	if res.JobsRemoved == 0 && res.BackupsRemoved == 0 {
		return res, errUnchanged
	}
	return res, nil
}

// keepJob reports whether a finished job must stay (applyPruneCatalog).
func keepJob(r *catalog.Read, f catalog.FinishedJob, streamJobs map[string]bool) bool {
	if streamJobs[f.ID] || r.JobReferenced(f.ID) {
		return true
	}
	if f.Policy != "" && f.RunKey != "" {
		if r.LatestRunID(f.Policy, f.ScheduleIndex, f.RunKey) == f.ID {
			return true
		}
	}
	return false
}
