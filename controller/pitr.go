package controller

import (
	"path"
	"regexp"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

var (
	// MariaDB: domain-server-sequence, comma-separated, one per domain.
	mariaGTIDRE = regexp.MustCompile(`^\d+-\d+-\d+(,\d+-\d+-\d+)*$`)
	// MySQL: uuid:interval[:interval...], comma-separated.
	mysqlGTIDRE = regexp.MustCompile(`^(?i)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(:\d+(-\d+)?)+(,[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(:\d+(-\d+)?)+)*$`)
)

// ValidGTID reports whether s is a MariaDB GTID position (0-1-100,1-2-7)
// or a MySQL GTID set (uuid:1-100).
func ValidGTID(s string) bool {
	s = strings.ReplaceAll(strings.TrimSpace(s), " ", "")
	s = strings.ReplaceAll(s, "\n", "")
	return mariaGTIDRE.MatchString(s) || mysqlGTIDRE.MatchString(s)
}

// checkStopAt validates a point-in-time target, one message per mistake.
func checkStopAt(p *v1.RestoreParams) error {
	switch st := p.GetStopAt().(type) {
	case *v1.RestoreParams_StopAtTime:
		if st.StopAtTime == nil || !st.StopAtTime.IsValid() || st.StopAtTime.AsTime().IsZero() || st.StopAtTime.AsTime().Unix() <= 0 {
			return invalid("stop_at_time is not a valid time")
		}
	case *v1.RestoreParams_StopAtGtidSet:
		if !ValidGTID(st.StopAtGtidSet) {
			return invalid("stop_at_gtid_set %q: expected a MariaDB GTID position such as 0-1-100 (domain-server-sequence, comma-separated per domain) or a MySQL GTID set such as 3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77", st.StopAtGtidSet)
		}
	case *v1.RestoreParams_StopAtPosition:
		pos := st.StopAtPosition
		if pos.GetFile() == "" || strings.ContainsAny(pos.GetFile(), "/: ") {
			return invalid("stop_at_position: file %q: expected a binlog file name such as mysql-bin.000042", pos.GetFile())
		}
		if pos.GetPosition() < 4 {
			return invalid("stop_at_position: position %d in %s: a binlog event starts at offset 4 or later", pos.GetPosition(), pos.GetFile())
		}
	}
	return nil
}

// pitrParams completes a point-in-time restore's params: the source
// instance (the backup's, by default) and, without a backup id, the base
// backup: the newest complete backup of the source consistent at or before
// the target time, or simply the newest one for a GTID or position target
// (the engine's plan then says whether the archive reaches the target from
// it). A named backup consistent after the target time is refused.
// logicalEngine is the one engine whose backups load into a running
// server; every other (snapshot, mariabackup) writes a datadir.
const logicalEngine = "logical"

func pitrParams(r *catalog.Read, p *v1.RestoreParams) (*v1.RestoreParams, error) {
	if err := checkStopAt(p); err != nil {
		return nil, err
	}
	p = proto.CloneOf(p)
	var target time.Time
	if t := p.GetStopAtTime(); t != nil {
		target = t.AsTime()
	}
	if p.GetBackupId() != "" {
		b, err := completeBackup(r, p.GetBackupId())
		if err != nil {
			return nil, err
		}
		if p.SourceInstance == "" {
			p.SourceInstance = b.GetInstance()
		}
		if at := backupPoint(b); !target.IsZero() && at.After(target) {
			return nil, catalog.Errorf(catalog.ErrConflict, "backup %s is consistent at %s, after the target time %s: name an older backup (tidemark backups --instance %s) or omit --from-backup",
				b.GetId(), at.UTC().Format(time.RFC3339), target.UTC().Format(time.RFC3339), b.GetInstance())
		}
		return p, nil
	}
	if p.GetSourceInstance() == "" {
		return nil, invalid("a point-in-time restore needs the source instance (--instance) or a base backup (--from-backup)")
	}
	if _, err := r.Instance(p.GetSourceInstance()); err != nil {
		return nil, catalog.Errorf(catalog.ErrNotFound, "instance %q not found: see `tidemark instances`", p.GetSourceInstance())
	}
	for _, b := range r.Backups(p.GetSourceInstance()) { // newest first
		if b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE || b.GetExpiredAt() != nil {
			continue // marked expired: its manifest is being deleted
		}
		if !target.IsZero() && backupPoint(b).After(target) {
			continue
		}
		// A datadir restore needs a physical base, a restore onto a
		// running server a logical one.
		if (p.GetTargetDatadir() != "") != (b.GetEngine() != "" && b.GetEngine() != logicalEngine) {
			continue
		}
		p.BackupId = b.GetId()
		return p, nil
	}
	kind := "logical"
	if p.GetTargetDatadir() != "" {
		kind = "physical (a datadir restore starts from a snapshot or mariabackup backup)"
	}
	if !target.IsZero() {
		return nil, catalog.Errorf(catalog.ErrNotFound, "instance %q has no complete %s backup consistent at or before %s: a point-in-time restore starts from one (take backups ahead of time, or pick a later --to-time)",
			p.GetSourceInstance(), kind, target.UTC().Format(time.RFC3339))
	}
	return nil, catalog.Errorf(catalog.ErrNotFound, "instance %q has no complete %s backup: a point-in-time restore starts from one", p.GetSourceInstance(), kind)
}

// backupPoint is when a backup is consistent: its consistency point's
// time, else when it finished; the zero time when the record has neither
// (then it is taken as before any target).
func backupPoint(b *v1.Backup) time.Time {
	if t := b.GetConsistency().GetTime(); t != nil {
		return t.AsTime()
	}
	if t := b.GetFinishedAt(); t != nil {
		return t.AsTime()
	}
	return time.Time{}
}

func completeBackup(r *catalog.Read, id string) (*v1.Backup, error) {
	b, err := r.Backup(id)
	if err != nil {
		return nil, catalog.Errorf(catalog.ErrNotFound, "backup %s is not in the catalog: see `tidemark backups`", id)
	}
	if b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE {
		return nil, catalog.Errorf(catalog.ErrConflict, "backup %s is %s, not complete: only a complete backup can be restored",
			b.GetId(), strings.ToLower(strings.TrimPrefix(b.GetStatus().String(), "BACKUP_STATUS_")))
	}
	return b, nil
}

// checkDatadir refuses a restore whose target does not suit the backup: a
// physical backup restores only into a new datadir on the agent's host, a
// logical one only onto the instance's running server.
func checkDatadir(b *v1.Backup, p *v1.RestoreParams) error {
	// A record without an engine predates engines other than logical.
	physical := b.GetEngine() != "" && b.GetEngine() != logicalEngine
	switch {
	case p.GetTargetDatadir() != "" && !path.IsAbs(p.GetTargetDatadir()):
		return invalid("params.target_datadir %q: an absolute path on the agent's host is required", p.GetTargetDatadir())
	case physical && p.GetTargetDatadir() == "":
		return catalog.Errorf(catalog.ErrConflict, "backup %s is a physical (%s) backup: it restores into a new datadir on the agent's host, not onto the running server; give --to-datadir DIR", b.GetId(), b.GetEngine())
	case !physical && p.GetTargetDatadir() != "":
		return catalog.Errorf(catalog.ErrConflict, "backup %s is a %s backup: it restores onto the instance's running server, not into a datadir; leave out --to-datadir", b.GetId(), b.GetEngine())
	case p.GetTargetDatadir() != "" && p.GetNoBinlog():
		return invalid("params.no_binlog: a restore into a datadir writes the server's files, not through its binlog; leave out --no-binlog")
	case p.GetVerify() && (physical || p.GetStopAt() != nil):
		return invalid("params.verify: only a logical restore without a stop point is compared with its backup's row checksums")
	}
	return nil
}

// checkServeTLS refuses serve TLS settings that cannot apply: without a
// stop point there is no roll-forward; the agent reads the certificate and
// key on its host, so relative paths would depend on its working
// directory. The agent checks the files themselves.
func checkServeTLS(p *v1.RestoreParams) error {
	cert, key, ca := p.GetServeTlsCertFile(), p.GetServeTlsKeyFile(), p.GetServeTlsCaFile()
	set := p.GetServeTls() != v1.ServeTLS_SERVE_TLS_UNSPECIFIED || cert != "" || key != "" || ca != ""
	switch {
	case set && p.GetStopAt() == nil:
		return invalid("params.serve_tls*: TLS of the roll-forward's replication connection applies to a point-in-time restore only; give a stop point or leave out --serve-tls*")
	case (cert == "") != (key == ""):
		return invalid("params.serve_tls_cert_file and serve_tls_key_file go together: give both, or neither for an ephemeral pair")
	case ca != "" && cert == "":
		return invalid("params.serve_tls_ca_file names the CA that signed serve_tls_cert_file: give the certificate and key too")
	case p.GetServeTls() == v1.ServeTLS_SERVE_TLS_OFF && cert != "":
		return invalid("params.serve_tls is off but a certificate is given: drop it, or turn TLS on")
	}
	for _, f := range []struct{ name, path string }{{"serve_tls_cert_file", cert}, {"serve_tls_key_file", key}, {"serve_tls_ca_file", ca}} {
		if f.path != "" && !path.IsAbs(f.path) {
			return invalid("params.%s %q: an absolute path is required (the certificate and key on the agent's host, the CA on the target's)", f.name, f.path)
		}
	}
	return nil
}
