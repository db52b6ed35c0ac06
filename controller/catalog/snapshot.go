package catalog

import (
	"fmt"
	"unsafe"

	"google.golang.org/protobuf/proto"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Dump returns the whole catalog as one message, each table in key order,
// so equal catalogs dump to equal bytes (with deterministic marshalling).
// The records are shared with the store and must not be changed. Finished
// jobs are in FinishedJobs and backups in BackupRecords, as the bytes the
// store keeps.
func (r *Read) Dump() *v1.CatalogSnapshot {
	fin := make([][]byte, 0, r.fin.byID.Len())
	r.fin.byID.Scan(func(e *fjob) bool {
		fin = append(fin, bytesOf(e.data)) // read only: marshalled into the snapshot
		return true
	})
	bk := make([][]byte, 0, r.bk.byID.Len())
	r.bk.byID.Scan(func(e *bent) bool {
		bk = append(bk, bytesOf(e.data))
		return true
	})
	return &v1.CatalogSnapshot{
		FinishedJobs:    fin,
		Agents:          r.Agents(),
		Instances:       r.Instances(),
		BackupRecords:   bk,
		Jobs:            all[*v1.Job](r, jobsTableName, "id"),
		Members:         r.Members(),
		BinlogStreams:   r.BinlogStreams(),
		JoinTokens:      all[*v1.JoinToken](r, joinTokensTableName, "id"),
		Revocations:     all[*v1.Revocation](r, revocationsTableName, "id"),
		ClusterCa:       r.ClusterCA(),
		Audit:           r.Audit(),
		AccessTokens:    all[*v1.AccessToken](r, accessTokensTable, "id"),
		Policies:        r.Policies(),
		ScheduleSkips:   r.ScheduleSkips(""),
		IdempotencyKeys: r.IdempotencyKeys(),
	}
}

// Load builds a store holding exactly the records of snap, which it takes
// ownership of. The finished jobs of a snapshot written before the
// finished store (in jobs) move to it, as PutJob moves any job.
func Load(snap *v1.CatalogSnapshot) (*Store, error) {
	s := New()
	w := s.Write()
	defer w.Abort()
	put := func(what string, n int, f func(i int) error) error {
		for i := range n {
			if err := f(i); err != nil {
				return fmt.Errorf("loading %s: %w", what, err)
			}
		}
		return nil
	}
	if err := put("agents", len(snap.GetAgents()), func(i int) error { return w.PutAgent(snap.Agents[i]) }); err != nil {
		return nil, err
	}
	if err := put("instances", len(snap.GetInstances()), func(i int) error { return w.PutInstance(snap.Instances[i]) }); err != nil {
		return nil, err
	}
	if err := put("backups", len(snap.GetBackups()), func(i int) error { return w.PutBackup(snap.Backups[i]) }); err != nil {
		return nil, err
	}
	if err := loadBackups(w, snap.GetBackupRecords()); err != nil {
		return nil, err
	}
	snap.BackupRecords = nil
	if err := put("jobs", len(snap.GetJobs()), func(i int) error { return w.PutJob(snap.Jobs[i]) }); err != nil {
		return nil, err
	}
	if err := loadFinished(w, snap.GetFinishedJobs()); err != nil {
		return nil, err
	}
	snap.FinishedJobs = nil
	if err := put("members", len(snap.GetMembers()), func(i int) error { return w.PutMember(snap.Members[i]) }); err != nil {
		return nil, err
	}
	if err := put("binlog streams", len(snap.GetBinlogStreams()), func(i int) error { return w.PutBinlogStream(snap.BinlogStreams[i]) }); err != nil {
		return nil, err
	}
	if err := put("join tokens", len(snap.GetJoinTokens()), func(i int) error { return w.PutJoinToken(snap.JoinTokens[i]) }); err != nil {
		return nil, err
	}
	if err := put("revocations", len(snap.GetRevocations()), func(i int) error { return w.PutRevocation(snap.Revocations[i]) }); err != nil {
		return nil, err
	}
	if err := put("audit records", len(snap.GetAudit()), func(i int) error { return w.PutAudit(snap.Audit[i]) }); err != nil {
		return nil, err
	}
	if err := put("access tokens", len(snap.GetAccessTokens()), func(i int) error { return w.PutAccessToken(snap.AccessTokens[i]) }); err != nil {
		return nil, err
	}
	if err := put("policies", len(snap.GetPolicies()), func(i int) error { return w.PutPolicy(snap.Policies[i]) }); err != nil {
		return nil, err
	}
	if err := put("schedule skips", len(snap.GetScheduleSkips()), func(i int) error { return w.PutScheduleSkip(snap.ScheduleSkips[i]) }); err != nil {
		return nil, err
	}
	if err := put("idempotency keys", len(snap.GetIdempotencyKeys()), func(i int) error { return w.PutIdempotencyKey(snap.IdempotencyKeys[i]) }); err != nil {
		return nil, err
	}
	if ca := snap.GetClusterCa(); ca != nil {
		if err := w.PutClusterCA(ca); err != nil {
			return nil, fmt.Errorf("loading the cluster CA: %w", err)
		}
	}
	w.Commit()
	return s, nil
}

// loadFinished adds a snapshot's finished jobs: each is decoded once, to
// check it and to index it, and kept as the bytes it came as. The list is
// sorted by id (Dump's order), which the id tree appends (another order
// is inserted); a repeated id, or a job that is not finished after all,
// goes through PutJob.
//
// Two passes: the decoding's garbage (every job's sub-messages) comes
// first and the entries and tree nodes, which stay, after it. Allocated
// in turn with the garbage they shared its spans, which stayed part used
// after the collection: 320 MiB of heap in use over the live heap at a
// million jobs (bench/README.md).
func loadFinished(w *Write, list [][]byte) error {
	t := w.finMut()
	vals := make([]fjob, 0, len(list))
	j := &v1.Job{}
	for i, b := range list {
		if err := proto.Unmarshal(b, j); err != nil {
			return fmt.Errorf("loading finished job %d of %d: %w", i+1, len(list), err)
		}
		if _, dup := t.get(j.GetId()); dup || !finished(j) || len(vals) > 0 && j.GetId() <= vals[len(vals)-1].id {
			if err := w.PutJob(proto.CloneOf(j)); err != nil {
				return fmt.Errorf("loading finished job %q: %w", j.GetId(), err)
			}
			continue
		}
		// b is Unmarshal's own copy of the snapshot's bytes, and Load owns
		// snap: the record keeps it without copying, and nothing else
		// writes it. The id is a substring of it, not of j.
		vals = append(vals, t.newFjob(j, unsafe.String(unsafe.SliceData(b), len(b))))
	}
	for i := range vals {
		e := new(fjob)
		*e = vals[i]
		t.load(e)
	}
	return nil
}
