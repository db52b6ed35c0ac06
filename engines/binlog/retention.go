package binlog

import (
	"context"
	"time"

	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

// retention compares the server's binlogs with the archive: it warns when the
// server's oldest binlog is about to overtake what is archived (the file
// being streamed is the oldest or next to oldest while newer ones exist, so
// the server's next expiry would remove binlog not yet archived), and with
// PurgeArchived it purges files archived to their end, keeping PurgeKeep of
// them before the one being streamed. Errors are logged: retention never
// stops the stream.
func (s *streamer) retention(ctx context.Context, srv *server, curFile string, fileDone map[string]bool) {
	db, err := openDB(srv.dsn)
	if err != nil {
		return
	}
	defer func() { _ = db.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	logs, err := binaryLogs(ctx, db)
	if err != nil {
		s.log.Warn("retention check: SHOW BINARY LOGS failed", "err", errText(err))
		return
	}
	warn, purgeTo, blocked := retentionAdvice(logs, curFile, s.p.PurgeArchived, s.p.PurgeKeep,
		func(f string) bool { return fileDone[fileKey(srv.serverID, f)] })
	if warn {
		s.log.Warn("the server's oldest binlog is close to what is still being archived: if it purges or expires binlogs now, the archive gets a gap",
			"server", srv.dsn.Addr(), "oldest", logs[0], "archiving", curFile, "newest", logs[len(logs)-1])
	}
	if blocked != "" {
		s.log.Warn("not purging: a binlog before the purge point is not fully archived", "file", blocked, "purge_to", purgeTo)
		return
	}
	if purgeTo == "" {
		return
	}
	if _, err := db.ExecContext(ctx, "PURGE BINARY LOGS TO "+mysqlx.QuoteString(purgeTo)); err != nil {
		s.log.Warn("purging archived binlogs failed (the user needs BINLOG ADMIN on MariaDB ≥ 10.5, SUPER or BINLOG_ADMIN on MySQL)", "to", purgeTo, "err", errText(err))
		return
	}
	s.log.Info("purged archived binlogs", "server", srv.dsn.Addr(), "to", purgeTo)
}

// retentionAdvice decides from the server's binlog list (oldest first) and
// the file being archived: warn when that file is the oldest or next to
// oldest while newer ones exist; with purge, the file to purge up to (keep
// fully archived files stay before cur), or blocked naming a file before it
// that is not archived to its end.
func retentionAdvice(logs []string, cur string, purge bool, keep int, archived func(string) bool) (warn bool, purgeTo, blocked string) {
	i := -1
	for k, f := range logs {
		if f == cur {
			i = k
		}
	}
	if i < 0 {
		return false, "", ""
	}
	warn = i <= 1 && i < len(logs)-1
	if !purge || i-keep <= 0 {
		return warn, "", ""
	}
	purgeTo = logs[i-keep]
	for _, f := range logs[:i-keep] {
		if !archived(f) {
			return warn, purgeTo, f
		}
	}
	return warn, purgeTo, ""
}
