package apply

import "github.com/tidemark-backup/tidemark/engines/binlog/gtid"

// The roll-forward's names for the shared GTID types (package gtid).
type (
	GTID     = gtid.GTID
	Position = gtid.Position
)

// ParseGTID parses "domain-server-seq".
func ParseGTID(s string) (GTID, error) { return gtid.Parse(s) }

// ParsePosition parses "0-1-100,1-2-7" (empty: no position).
func ParsePosition(s string) (Position, error) { return gtid.ParsePosition(s) }
