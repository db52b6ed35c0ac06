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
func (s *streamer) retention(ctx context.Context, ss *sessionState) {
	db, err := openDB(ss.srv.dsn)
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
	cur := -1
	for i, f := range logs {
		if f == ss.curFile {
			cur = i
		}
	}
	if cur < 0 {
		return
	}
	if cur <= 1 && cur < len(logs)-1 {
		s.log.Warn("the server's oldest binlog is close to what is still being archived: if it purges or expires binlogs now, the archive gets a gap",
			"server", ss.srv.dsn.Addr(), "oldest", logs[0], "archiving", ss.curFile, "newest", logs[len(logs)-1])
	}
	if !s.p.PurgeArchived {
		return
	}
	target := cur - s.p.PurgeKeep
	if target <= 0 {
		return
	}
	for _, f := range logs[:target] {
		if !s.fileDone[fileKey(ss.srv.serverID, f)] {
			s.log.Warn("not purging: a binlog before the purge point is not fully archived", "file", f, "purge_to", logs[target])
			return
		}
	}
	if _, err := db.ExecContext(ctx, "PURGE BINARY LOGS TO "+mysqlx.QuoteString(logs[target])); err != nil {
		s.log.Warn("purging archived binlogs failed (the user needs BINLOG ADMIN on MariaDB ≥ 10.5, SUPER or BINLOG_ADMIN on MySQL)", "to", logs[target], "err", errText(err))
		return
	}
	s.log.Info("purged archived binlogs", "server", ss.srv.dsn.Addr(), "to", logs[target], "files", target)
}
