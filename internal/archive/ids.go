package archive

import (
	"encoding/hex"
	"fmt"
	"regexp"
	"time"

	"github.com/tidemark-backup/tidemark/internal/crypto"
)

// newID returns a time-ordered id such as 20261126T174300Z-1f2e3d4c: sorting
// ids sorts backups by start, and the random tail keeps concurrent writers
// apart.
func newID(t time.Time) string {
	return t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(crypto.Random(4))
}

var backupIDRE = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$`)

// ValidBackupID checks a backup id given by a caller: it becomes an object
// key, so only a safe alphabet is allowed.
func ValidBackupID(id string) error {
	if !backupIDRE.MatchString(id) {
		return fmt.Errorf("backup id %q is invalid: use letters, digits, '.', '_' and '-' (at most 128)", id)
	}
	return nil
}

func validID(id string) bool { return backupIDRE.MatchString(id) }
