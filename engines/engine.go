package engines

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Sink is where an engine writes a backup. *archive.Backup implements it
// through ArchiveSink; tests may use a five-line fake.
//
// Stream may be called from many goroutines; each returned writer is used by
// one goroutine at a time and must be closed: a stream left open fails the
// backup. The Set* calls may come in any order, at most once each matters
// (the last one wins).
type Sink interface {
	Stream(name string, metadata map[string]string) (io.WriteCloser, error)
	SetServer(*v1.ServerInfo)
	SetConsistency(*v1.ConsistencyPoint)
	SetLockDuration(time.Duration)
	SetEngineMetadata(key, value string)
}

// Source is where an engine reads a backup back from.
type Source interface {
	// Manifest is the backup's manifest (already verified to exist).
	Manifest() *v1.Manifest
	// OpenStream returns one stream's plaintext; every chunk is verified,
	// and damage ends the read with an error naming backup, stream, chunk.
	OpenStream(ctx context.Context, name string) (io.ReadCloser, error)
}

// Progress is what an engine reports while it runs. Callbacks may come from
// several goroutines and must be cheap.
type Progress struct {
	Phase      string // "schema", "data", "indexes", ...
	BytesDone  int64
	BytesTotal int64 // estimate; 0 if unknown
	RowsDone   int64
	TablesDone int
	Tables     int
}

// BackupParams are an engine's inputs for one backup. Fields grow; call
// sites stay stable.
type BackupParams struct {
	DSN       string // go-sql-driver form, without the password an agent read from its config (mysqlx.StripPassword); never logged
	Parallel  int    // worker connections; 0: engine default
	Databases []string
	// IncludeSystem dumps mysql, sys and the schemas the server owns.
	IncludeSystem bool
	// IncludeUsers dumps accounts and grants.
	IncludeUsers bool
	// History: the logical engine dumps system-versioned tables with every
	// row version and its period, which only a target that can write row
	// history (MariaDB ≥ 10.11, secure_timestamp permitting) restores;
	// without it, their current rows only. Physical engines copy the
	// history with the data files either way.
	History  bool
	Sink     Sink
	Progress func(Progress)
}

// BackupResult summarises a backup an engine wrote into its Sink.
type BackupResult struct {
	Tables       int
	Rows         int64
	Files        int // physical engines: files copied (Tables and Rows stay 0)
	LockDuration time.Duration
	Warnings     []string
}

// RestoreParams are an engine's inputs for one restore.
type RestoreParams struct {
	DSN          string
	Parallel     int
	Source       Source
	Databases    []string          // only these (after renaming: by original name)
	Tables       []string          // only these, "db.table"
	RenameDB     map[string]string // original name → new name
	DropExisting bool
	IncludeUsers bool
	// NoBinlog keeps the restore out of the target's binary log
	// (sql_log_bin=0 on every connection), for a target without replicas:
	// faster, and needs the privilege to set sql_log_bin.
	NoBinlog bool
	// Resume goes on with an interrupted restore of the same backup with
	// the same selection and renames: what it recorded as done on the
	// target is skipped, and the target is not refused for holding it.
	Resume   bool
	Progress func(Progress)
}

// RestoreResult summarises a restore.
type RestoreResult struct {
	Tables   int
	Rows     int64
	Warnings []string
}

// VerifyParams name a restore to check: the backup it came from and the
// same selection and renames it was given.
type VerifyParams struct {
	DSN       string
	Parallel  int
	Source    Source
	Databases []string
	Tables    []string
	RenameDB  map[string]string
	Progress  func(Progress)
}

// TableMismatch is one restored table whose rows differ from the backup's.
type TableMismatch struct {
	Table           string // "db.table" in the backup
	Target          string // "db.table" on the target ("" if it is missing)
	WantRows        int64
	WantChecksum    string
	GotRows         int64
	GotChecksum     string
	MissingOnTarget bool
}

func (m TableMismatch) String() string {
	if m.MissingOnTarget {
		return fmt.Sprintf("%s: missing on the target (backup: %d rows, checksum %s)", m.Table, m.WantRows, m.WantChecksum)
	}
	name := m.Table
	if m.Target != m.Table {
		name += " (restored as " + m.Target + ")"
	}
	return fmt.Sprintf("%s: backup %d rows, checksum %s; target %d rows, checksum %s", name, m.WantRows, m.WantChecksum, m.GotRows, m.GotChecksum)
}

// VerifyResult is what a verification compared.
type VerifyResult struct {
	Tables     int
	Rows       int64
	Mismatches []TableMismatch
	Warnings   []string
}

// ErrMismatch is returned (wrapped, naming every table) when a restored
// table's rows differ from what the backup recorded.
var ErrMismatch = errors.New("restored data differs from the backup")

// ErrNothingToResume is returned (wrapped) by a restore with Resume when the
// target holds no record of an interrupted run of it.
var ErrNothingToResume = errors.New("nothing to resume")

// ErrCapability marks a backup that failed because the instance cannot run
// this engine after all: the snapshot volume ran out of space, the backup
// tool is missing or of another series than the server. The job runner
// retries such a backup once with the next usable engine (engine
// selection's fallback); any other failure keeps the engine. Engines wrap
// it together with the cause: fmt.Errorf("%w: ...: %w", ErrCapability, err).
var ErrCapability = errors.New("the instance cannot run this engine")

// Verifier is an engine that can check a restore of its own backups
// against what the backup recorded.
type Verifier interface {
	Verify(ctx context.Context, p VerifyParams) (*VerifyResult, error)
}

// Engine is one way of taking and restoring backups.
type Engine interface {
	// Name is the engine's name as recorded in manifests.
	Name() string
	// Backup writes one backup into p.Sink. It returns only when every
	// stream it opened is closed; an error means the backup is not usable.
	Backup(ctx context.Context, p BackupParams) (*BackupResult, error)
	// Restore reads a backup this engine wrote and applies it to a server.
	Restore(ctx context.Context, p RestoreParams) (*RestoreResult, error)
}

// Cleaner is an engine that keeps state outside the repository while it
// runs (filesystem snapshots, scratch directories): CleanLeftovers removes
// what a killed run of its own left for the server at dsn (never anything
// it did not make, never what a running backup uses) and names it. The
// agent calls it for each instance when it starts. A server the engine
// cannot run on at all is no error: there is nothing of its own to find.
type Cleaner interface {
	CleanLeftovers(ctx context.Context, dsn string) (removed []string, err error)
}
