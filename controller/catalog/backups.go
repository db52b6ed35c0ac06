package catalog

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/hashicorp/go-memdb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

const backupsTableName = "backups"

// backupsTable: one row per backup, keyed by backup id. The ordered
// indexes (keys in order.go) serve the listings newest first (by start
// time; by instance; by status), the jobs a backup refers to (the job
// that wrote it, the expire jobs that marked it or its copies: history
// pruning keeps them), and DELETED records by deletion time (their
// tombstones are pruned oldest first).
func backupsTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: backupsTableName,
		Indexes: map[string]*memdb.IndexSchema{
			"id":      {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Id"}},
			"started": {Name: "started", Indexer: keyIndex{key: backupKey(func(*v1.Backup) []byte { return nil })}},
			"instance": {Name: "instance", Indexer: keyIndex{key: backupKey(func(b *v1.Backup) []byte {
				return appendStr(nil, b.GetInstance())
			})}},
			"status": {Name: "status", Indexer: keyIndex{key: backupKey(func(b *v1.Backup) []byte {
				return appendU32(nil, uint32(b.GetStatus()))
			})}},
			"refs": {Name: "refs", AllowMissing: true, Indexer: multiKeyIndex{keys: func(obj any) [][]byte {
				b := obj.(*v1.Backup)
				var ks [][]byte
				add := func(id string) {
					if id != "" {
						ks = append(ks, appendStr(nil, id))
					}
				}
				add(b.GetJobId())
				add(b.GetExpireJobId())
				for _, c := range b.GetCopies() {
					add(c.GetJobId())
					add(c.GetExpireJobId())
				}
				slices.SortFunc(ks, bytes.Compare)
				return slices.CompactFunc(ks, bytes.Equal)
			}}},
			"deleted": {Name: "deleted", AllowMissing: true, Indexer: keyIndex{key: func(obj any) ([]byte, bool) {
				b := obj.(*v1.Backup)
				if b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_DELETED {
					return nil, false
				}
				return appendTime(nil, b.GetDeletedAt()), true
			}}},
		},
	}
}

// backupKey is an ordered backup index: prefix(b) then the start time.
func backupKey(prefix func(*v1.Backup) []byte) func(any) ([]byte, bool) {
	return func(obj any) ([]byte, bool) {
		b := obj.(*v1.Backup)
		return appendTime(prefix(b), b.GetStartedAt()), true
	}
}

// Backup returns the backup with id, or ErrNotFound.
func (r *Read) Backup(id string) (*v1.Backup, error) {
	obj, _ := r.first(backupsTableName, id, nil)
	if obj == nil {
		return nil, Errorf(ErrNotFound, "backup %q not found", id)
	}
	return obj.(*v1.Backup), nil
}

// Backups returns the backups of instance (every backup when instance is
// empty), newest first: by start time, then id.
func (r *Read) Backups(instance string) []*v1.Backup {
	prefix := []byte(nil)
	index := "started"
	if instance != "" {
		index, prefix = "instance", appendStr(nil, instance)
	}
	it, err := r.txn.ReverseLowerBound(backupsTableName, index, append(slices.Clone(prefix), bytes.Repeat([]byte{0xff}, 9)...))
	if err != nil {
		panic(fmt.Sprintf("catalog: backups walk: %v", err))
	}
	var out []*v1.Backup
	for obj := it.Next(); obj != nil; obj = it.Next() {
		b := obj.(*v1.Backup)
		if instance != "" && b.GetInstance() != instance {
			break
		}
		out = append(out, b)
	}
	return out
}

// BackupFilter selects backups; zero fields match everything.
type BackupFilter struct {
	Instance string
	// Status: only backups in it; UNSPECIFIED for every status but
	// DELETED (the listings' default).
	Status v1.BackupStatus
}

// BackupsPage returns up to limit backups that match f, newest first (start
// time, then id), strictly after `after` (nil: from the newest), and the
// cursor of the next page (nil at the end). A status filter together with
// an instance is applied during the walk, which is bounded (maxScan).
func (r *Read) BackupsPage(f BackupFilter, after *Cursor, limit int) ([]*v1.Backup, *Cursor) {
	src := source{index: "started"}
	switch {
	case f.Instance != "":
		src = source{index: "instance", prefix: appendStr(nil, f.Instance),
			in: func(o any) bool { return o.(*v1.Backup).GetInstance() == f.Instance }}
	case f.Status != v1.BackupStatus_BACKUP_STATUS_UNSPECIFIED:
		src = source{index: "status", prefix: appendU32(nil, uint32(f.Status)),
			in: func(o any) bool { return o.(*v1.Backup).GetStatus() == f.Status }}
	}
	match := func(b *v1.Backup) bool {
		if f.Status == v1.BackupStatus_BACKUP_STATUS_UNSPECIFIED {
			return b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_DELETED
		}
		return b.GetStatus() == f.Status
	}
	return pageScan(memLanes(r, backupsTableName, []source{src}, backupPos, match), backupPos, after, limit)
}

func backupPos(b *v1.Backup) Cursor { return CursorOf(b.GetStartedAt(), b.GetId()) }

// PutBackup creates or replaces a backup. b must not change afterwards.
func (w *Write) PutBackup(b *v1.Backup) error { return w.insert(backupsTableName, b) }
