package logical

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/tidemark-backup/tidemark/engines"
)

// Name is the engine's name in manifests.
const Name = "logical"

// MetaDatabases is the manifest's engine metadata key naming the databases
// a backup was limited to (comma-separated); absent for a whole-server
// backup. A point-in-time restore cannot roll the binlog of every database
// forward onto such a base.
const MetaDatabases = "logical.databases"

// MetaHistory is the manifest's engine metadata key set to "true" for a
// backup taken with history (BackupParams.History): its system-versioned
// tables hold every row version, which only a target that can write row
// history restores. Absent: their current rows only.
const MetaHistory = "logical.history"

// formatVersion is the version of the stream layout below; Restore rejects
// backups written with a newer one. 2: a system-versioned table's pieces
// may hold its history and period columns (tableMeta.History), which a
// reader of format 1 would load as plain columns and fail on; sequences
// carry their state row (read by format 1 readers as before, without it).
// Restore reads both.
const formatVersion = 2

// Stream names. Every data piece is its own stream, so restore loads pieces
// in parallel and a rerun of a backup re-uploads only changed chunks.
const (
	streamMeta  = "meta"  // metaDoc, written last
	streamUsers = "users" // usersDoc, only with IncludeUsers
)

func schemaStream(db string) string { return "schema/" + db }
func postStream(db string) string   { return "post/" + db }
func dataStream(db, table string, piece int) string {
	return fmt.Sprintf("data/%s/%s/%05d", db, table, piece)
}

// Engine is the logical engine. The zero value is ready to use.
type Engine struct {
	// PieceRows and PieceBytes bound one data piece (from the server's
	// estimates); 0 means 250,000 rows and 64 MiB. Tests make them small.
	PieceRows, PieceBytes int64
	// NoRowChecksums leaves the rows' checksums out of the backup, which
	// then cannot verify a restore: only for measuring what they cost.
	NoRowChecksums bool
}

// New returns the logical engine.
func New() *Engine { return &Engine{} }

var _ engines.Engine = (*Engine)(nil)

// Name implements engines.Engine.
func (*Engine) Name() string { return Name }

// metaDoc is the "meta" stream: everything restore needs to know about the
// data streams without guessing.
type metaDoc struct {
	Format    int         `json:"format"`
	Flavor    string      `json:"flavor"`
	Version   string      `json:"version"`
	Databases []string    `json:"databases"`
	Tables    []tableMeta `json:"tables"`
	Users     bool        `json:"users"`
	// History: the backup was asked for the history of system-versioned
	// tables (BackupParams.History); tableMeta.History says which have it.
	History bool `json:"history,omitempty"`
}

// tableMeta describes one table's data. Columns lists the dumped columns in
// stream order (generated columns are left out); Types holds their
// DATA_TYPE, which decides how each is loaded.
type tableMeta struct {
	DB       string   `json:"db"`
	Name     string   `json:"name"`
	Engine   string   `json:"engine,omitempty"`
	Columns  []string `json:"columns"`
	Types    []string `json:"types"`
	SplitKey string   `json:"split_key,omitempty"`
	Locked   bool     `json:"dumped_under_lock,omitempty"` // non-transactional: dumped while writes were blocked
	// History: a system-versioned table dumped with every row version,
	// its last two columns the period's start and end.
	History bool `json:"history,omitempty"`
	// CurrentOnly: a system-versioned table dumped with its current rows
	// only (a backup without history, or a period in transaction ids).
	// Backups taken before this was recorded leave it false.
	CurrentOnly bool        `json:"current_rows_only,omitempty"`
	Pieces      []pieceMeta `json:"pieces"`
	Rows        int64       `json:"rows"`
	// Checksum is the order-independent checksum of all its rows (the sum
	// of its pieces'), hex; "" before checksums were recorded.
	Checksum string `json:"checksum,omitempty"`
	// SequenceRow is a MariaDB sequence's state row (SELECT * FROM s, read
	// while writes were blocked): its definition and next_not_cached_value
	// and cycle_count. Such a "table" has no pieces.
	SequenceRow *sequenceRow `json:"sequence_row,omitempty"`
	// Sequence is the row's next_not_cached_value alone: all that backups
	// taken before sequence_row held, and what older readers still use.
	Sequence *int64 `json:"sequence_next,omitempty"`
}

// sequenceRow is a sequence's one row as the server returned it: column
// names and decimal integer values, kept as text so that an unsigned
// sequence (MariaDB ≥ 11.5, AS BIGINT UNSIGNED) fits.
type sequenceRow struct {
	Columns []string `json:"columns"`
	Values  []string `json:"values"`
}

type pieceMeta struct {
	Stream string `json:"stream"`
	Rows   int64  `json:"rows"`
	Bytes  int64  `json:"bytes"`
	// Checksum is the rows' order-independent checksum (rowSum, hex); ""
	// in backups taken before it was recorded.
	Checksum string `json:"checksum,omitempty"`
}

// schemaDoc is a "schema/<db>" stream.
type schemaDoc struct {
	Database string     `json:"database"`
	Create   string     `json:"create"` // SHOW CREATE DATABASE
	Tables   []tableDDL `json:"tables"`
}

type tableDDL struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // "table" or "sequence"
	// Create is SHOW CREATE TABLE, or for a sequence SHOW CREATE SEQUENCE
	// (backups taken before sequence_row held SHOW CREATE TABLE, which has
	// the columns of a sequence but none of its options).
	Create string `json:"create"`
}

// postDoc is a "post/<db>" stream: objects created after the data.
type postDoc struct {
	Database string      `json:"database"`
	Views    []objectDDL `json:"views"`
	Routines []objectDDL `json:"routines"`
	Triggers []objectDDL `json:"triggers"`
	Events   []objectDDL `json:"events"`
}

// objectDDL is a stored object with the session settings it was created
// under; its body is parsed with them again at restore.
type objectDDL struct {
	Name      string `json:"name"`
	Type      string `json:"type,omitempty"` // PROCEDURE, FUNCTION, ... for routines
	Table     string `json:"table,omitempty"`
	Create    string `json:"create"`
	SQLMode   string `json:"sql_mode"`
	Charset   string `json:"character_set_client,omitempty"`
	Collation string `json:"collation_connection,omitempty"`
	TimeZone  string `json:"time_zone,omitempty"`
	// Altered is when an event was last created or changed (seconds since
	// the epoch). Restore creates it "at" that time: an event whose
	// schedule has passed since, ON COMPLETION NOT PRESERVE, would
	// otherwise be dropped by the server as soon as it is created.
	Altered int64 `json:"altered,omitempty"`
}

// usersDoc is the "users" stream: one statement per entry.
type usersDoc struct {
	Statements []string `json:"statements"`
}

func writeJSON(sink engines.Sink, name string, md map[string]string, v any) (err error) {
	w, err := sink.Stream(name, md)
	if err != nil {
		return fmt.Errorf("opening stream %s: %w", name, err)
	}
	defer func() {
		if cerr := w.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("closing stream %s: %w", name, cerr)
		}
	}()
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("writing stream %s: %w", name, err)
	}
	return nil
}

func readJSON(r io.Reader, name string, v any) error {
	if err := json.NewDecoder(r).Decode(v); err != nil {
		return fmt.Errorf("reading stream %s: %w", name, err)
	}
	return nil
}

func qi(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

func qname(db, t string) string { return qi(db) + "." + qi(t) }

// systemSchemas are left out unless IncludeSystem is set.
var systemSchemas = map[string]bool{"mysql": true, "sys": true, "information_schema": true, "performance_schema": true}
