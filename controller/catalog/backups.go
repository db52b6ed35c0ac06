package catalog

import (
	"cmp"
	"slices"

	"github.com/hashicorp/go-memdb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

const backupsTableName = "backups"

// backupsTable: one row per backup, keyed by backup id, indexed by instance.
func backupsTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: backupsTableName,
		Indexes: map[string]*memdb.IndexSchema{
			"id":       {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Id"}},
			"instance": {Name: "instance", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "Instance"}},
		},
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
	var bs []*v1.Backup
	if instance == "" {
		bs = all[*v1.Backup](r, backupsTableName, "id")
	} else {
		bs = all[*v1.Backup](r, backupsTableName, "instance", instance)
	}
	slices.SortStableFunc(bs, func(a, b *v1.Backup) int {
		if c := b.GetStartedAt().AsTime().Compare(a.GetStartedAt().AsTime()); c != 0 {
			return c
		}
		return cmp.Compare(b.GetId(), a.GetId())
	})
	return bs
}

// PutBackup creates or replaces a backup. b must not change afterwards.
func (w *Write) PutBackup(b *v1.Backup) error { return w.insert(backupsTableName, b) }
