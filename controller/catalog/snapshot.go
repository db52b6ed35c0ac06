package catalog

import (
	"fmt"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Dump returns the whole catalog as one message, each table in key order,
// so equal catalogs dump to equal bytes (with deterministic marshalling).
// The records are shared with the store and must not be changed.
func (r *Read) Dump() *v1.CatalogSnapshot {
	return &v1.CatalogSnapshot{
		Agents:          r.Agents(),
		Instances:       r.Instances(),
		Backups:         all[*v1.Backup](r, backupsTableName, "id"),
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
// ownership of.
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
	if err := put("jobs", len(snap.GetJobs()), func(i int) error { return w.PutJob(snap.Jobs[i]) }); err != nil {
		return nil, err
	}
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
