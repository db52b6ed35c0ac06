package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// toTimeLayouts are the forms --to-time accepts. Without an offset the
// value is UTC: a restore target must not depend on the time zone of the
// machine the command runs on.
var toTimeLayouts = []struct {
	layout string
	utc    bool
}{
	{time.DateTime, true},                   // 2026-12-03 10:00:00 (UTC)
	{"2006-01-02 15:04:05.999999999", true}, // with fractions (UTC)
	{"2006-01-02 15:04:05Z07:00", false},    // 2026-12-03 10:00:00+02:00
	{"2006-01-02 15:04:05.999999999Z07:00", false},
	{"2006-01-02 15:04:05 Z07:00", false}, // 2026-12-03 10:00:00 +02:00
	{time.RFC3339Nano, false},             // 2026-12-03T10:00:00Z
	{"2006-01-02T15:04:05", true},         // 2026-12-03T10:00:00 (UTC)
}

// parseToTime reads --to-time: 'YYYY-MM-DD HH:MM:SS', UTC unless the value
// carries an offset (or is RFC 3339).
func parseToTime(s string) (time.Time, error) {
	v := strings.TrimSpace(s)
	for _, l := range toTimeLayouts {
		var (
			t   time.Time
			err error
		)
		if l.utc {
			t, err = time.ParseInLocation(l.layout, v, time.UTC)
		} else {
			t, err = time.Parse(l.layout, v)
		}
		if err == nil {
			return t, nil
		}
	}
	return time.Time{}, &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--to-time %q: expected 'YYYY-MM-DD HH:MM:SS' (UTC), or with an offset "+
		"('2026-12-03 10:00:00+02:00'), or RFC 3339 ('2026-12-03T10:00:00Z')", s)}
}

// parseToPosition reads --to-position FILE:POS[@SERVER_ID]; the server id
// picks between same-named files of two servers (a failover).
func parseToPosition(s string) (*v1.BinlogPosition, error) {
	at, server, hasServer := strings.Cut(strings.TrimSpace(s), "@")
	file, pos, ok := strings.Cut(at, ":")
	n, err := strconv.ParseUint(pos, 10, 64)
	if !ok || file == "" || err != nil {
		return nil, &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--to-position %q: expected FILE:POS or FILE:POS@SERVER_ID, e.g. mysql-bin.000042:1234", s)}
	}
	if n < 4 {
		return nil, &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--to-position %q: a binlog event starts at position 4 or later", s)}
	}
	var id uint64
	if hasServer {
		if id, err = strconv.ParseUint(server, 10, 32); err != nil || id == 0 {
			return nil, &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--to-position %q: %q after @ is not a server id (1 to 4294967295)", s, server)}
		}
	}
	return &v1.BinlogPosition{File: file, Position: n, ServerId: uint32(id)}, nil
}

// positionString prints a BinlogPosition as --to-position takes it.
func positionString(p *v1.BinlogPosition) string {
	s := fmt.Sprintf("%s:%d", p.GetFile(), p.GetPosition())
	if p.GetServerId() != 0 {
		s += fmt.Sprintf("@%d", p.GetServerId())
	}
	return s
}

// pitrTarget reads the point-in-time flags into params: exactly one of
// them, or none (a plain restore). It reports whether one was given.
func pitrTarget(p *v1.RestoreParams, toTime, toGTID, toPosition string) (bool, error) {
	n := 0
	for _, v := range []string{toTime, toGTID, toPosition} {
		if v != "" {
			n++
		}
	}
	switch {
	case n == 0:
		return false, nil
	case n > 1:
		return false, &UserError{Code: ExitUsage, Msg: "give one of --to-time, --to-gtid and --to-position: the point to restore to"}
	}
	switch {
	case toTime != "":
		t, err := parseToTime(toTime)
		if err != nil {
			return false, err
		}
		p.StopAt = &v1.RestoreParams_StopAtTime{StopAtTime: timestamppb.New(t)}
	case toGTID != "":
		if !controller.ValidGTID(toGTID) {
			return false, &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--to-gtid %q: expected a MariaDB GTID position such as 0-1-100 (domain-server-sequence, one per domain, comma-separated) or a MySQL GTID set such as 3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77", toGTID)}
		}
		p.StopAt = &v1.RestoreParams_StopAtGtidSet{StopAtGtidSet: strings.TrimSpace(toGTID)}
	default:
		pos, err := parseToPosition(toPosition)
		if err != nil {
			return false, err
		}
		p.StopAt = &v1.RestoreParams_StopAtPosition{StopAtPosition: pos}
	}
	return true, nil
}

// pitrDescription says what a point-in-time restore job restores, for the
// line printed when it is submitted.
func pitrDescription(p *v1.RestoreParams) string {
	var to string
	switch st := p.GetStopAt().(type) {
	case *v1.RestoreParams_StopAtTime:
		to = "time " + st.StopAtTime.AsTime().UTC().Format(time.RFC3339)
	case *v1.RestoreParams_StopAtGtidSet:
		to = "GTID " + st.StopAtGtidSet
	case *v1.RestoreParams_StopAtPosition:
		to = "position " + positionString(st.StopAtPosition)
	}
	return fmt.Sprintf("instance %s to %s from backup %s", p.GetSourceInstance(), to, p.GetBackupId())
}
