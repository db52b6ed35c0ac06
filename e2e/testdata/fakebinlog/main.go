// Command fakebinlog is tidemark with a double of the binlog engine wired in
// (the way cmd/tidemark wires the real one), for the process tests of the
// fleet's binlog stream jobs: the agent, the controllers and the CLI are the
// real code; only the streamer is the double.
//
// The double archives nothing. Each run opens the first DSN and, every
// flush interval, reads the server's binlog position (SHOW MASTER STATUS,
// @@gtid_binlog_pos) and reports it as durable; the last event time is when
// it first saw that position. It logs "fakebinlog: run started" and "...
// run ended" so a test can count the runs in the agent's log.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/agent"
	"github.com/tidemark-backup/tidemark/cli"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

func main() {
	os.Exit(cli.MainWith(cli.Wiring{BinlogStreamer: stream}, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func stream(ctx context.Context, p agent.BinlogStreamParams) (err error) {
	var servers []string
	for _, s := range p.DSNs {
		if d, err := mysqlx.ParseDSN(s); err == nil {
			servers = append(servers, d.Addr())
		}
	}
	p.Logger.Info("fakebinlog: run started", "instance", p.Instance, "servers", strings.Join(servers, ","), "flush", p.Flush)
	defer func() { p.Logger.Info("fakebinlog: run ended", "instance", p.Instance, "err", err) }()
	d, err := mysqlx.ParseDSN(p.DSNs[0])
	if err != nil {
		return err
	}
	db, err := d.Open(nil)
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()
	var (
		last     string
		lastTime time.Time
	)
	t := time.NewTicker(p.Flush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		file, pos, gtid, err := position(ctx, db)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("reading the binlog position of %s: %w", d, err)
		}
		if cur := fmt.Sprintf("%s:%d", file, pos); cur != last {
			last, lastTime = cur, time.Now()
		}
		p.OnWatermark(agent.BinlogWatermark{Instance: p.Instance, GTID: gtid, File: file, Position: pos,
			LastEventTime: lastTime, DurableAt: time.Now()})
	}
}

func position(ctx context.Context, db *sql.DB) (file string, pos uint64, gtid string, err error) {
	rows, err := db.QueryContext(ctx, "SHOW MASTER STATUS")
	if err != nil {
		return "", 0, "", err
	}
	cols, _ := rows.Columns()
	vals := make([]any, len(cols))
	for i := range vals {
		vals[i] = new(sql.RawBytes)
	}
	if rows.Next() {
		if err := rows.Scan(vals...); err != nil {
			_ = rows.Close()
			return "", 0, "", err
		}
		file = string(*vals[0].(*sql.RawBytes))
		_, _ = fmt.Sscan(string(*vals[1].(*sql.RawBytes)), &pos)
	}
	if err := rows.Close(); err != nil {
		return "", 0, "", err
	}
	err = db.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&gtid)
	return file, pos, gtid, err
}
