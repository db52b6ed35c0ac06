package fsm

import (
	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// applyRecordBackup creates or replaces a backup record as given. Backups
// that jobs write are recorded by UpdateJobState instead, in the same entry
// as the job's success.
func applyRecordBackup(w *catalog.Write, c *v1.RecordBackup) (proto.Message, error) {
	b := c.GetBackup()
	if err := checkBackup(b); err != nil {
		return nil, err
	}
	if err := w.PutBackup(b); err != nil {
		return nil, err
	}
	return b, nil
}

func checkBackup(b *v1.Backup) error {
	if b.GetId() == "" || b.GetInstance() == "" {
		return catalog.Errorf(catalog.ErrInvalid, "a backup record needs an id and an instance")
	}
	if b.GetStatus() == v1.BackupStatus_BACKUP_STATUS_UNSPECIFIED {
		return catalog.Errorf(catalog.ErrInvalid, "backup %q has no status", b.GetId())
	}
	return nil
}
