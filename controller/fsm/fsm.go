package fsm

import (
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// FSM implements raft.FSM over a catalog.Store.
//
// Raft calls Apply, Snapshot and Restore from one goroutine, never
// concurrently with each other; Persist of a snapshot runs concurrently with
// later Applies, which is why it works on a frozen copy of the store. Reads
// may run at any time through Store.
type FSM struct {
	mu    sync.RWMutex
	store *catalog.Store
}

// New returns an FSM over an empty catalog.
func New() *FSM { return &FSM{store: catalog.New()} }

// Store returns the current catalog. Restore replaces it, so callers fetch
// it per read instead of keeping it.
func (f *FSM) Store() *catalog.Store {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.store
}

// Response is what Apply returns for every command: raft hands it back to
// the leader that proposed the entry (ApplyFuture.Response). Err is a
// business error wrapping a catalog sentinel; the entry is still in the log
// and every node rejects it the same way.
type Response struct {
	// The changed record (a job, an agent, ...) as stored; not to be
	// modified.
	Value proto.Message
	// The command changed nothing because it was already applied (a
	// repeated job result, or a replayed idempotency key).
	Unchanged bool
	// Replayed: Value is the result an earlier entry recorded for the
	// command's idempotency key; this entry applied nothing.
	Replayed bool
	Err      error
}

// entry is what an applier may use of the log entry besides the command:
// its index and term are the same on every node.
type entry struct {
	Index, Term uint64
}

// Apply applies one committed log entry. Bytes that are not a Command stop
// the node: applying anything else would fork the replicas.
func (f *FSM) Apply(l *raft.Log) any {
	cmd := &v1.Command{}
	if err := proto.Unmarshal(l.Data, cmd); err != nil {
		panic(fmt.Sprintf("fsm: log entry %d (term %d) is not a tidemark.v1.Command: %v", l.Index, l.Term, err))
	}
	w := f.Store().Write()
	val, err := dispatch(w, entry{Index: l.Index, Term: l.Term}, cmd)
	replayed := errors.Is(err, errReplayed)
	unchanged := errors.Is(err, errUnchanged) || replayed
	if err != nil && !unchanged {
		w.Abort()
		return &Response{Err: err}
	}
	w.Commit()
	return &Response{Value: val, Unchanged: unchanged, Replayed: replayed}
}

// errUnchanged is returned by an applier that found its change already made.
var errUnchanged = errors.New("unchanged")

// dispatch calls the one applier of the command's arm. An arm without an
// applier panics: a node must not skip an entry that others apply (a test
// keeps every arm covered).
func dispatch(w *catalog.Write, e entry, cmd *v1.Command) (proto.Message, error) {
	switch c := cmd.GetCmd().(type) {
	case *v1.Command_RegisterAgent:
		return applyRegisterAgent(w, c.RegisterAgent)
	case *v1.Command_UpsertInstance:
		return applyUpsertInstance(w, c.UpsertInstance)
	case *v1.Command_SubmitJob:
		return applySubmitJob(w, c.SubmitJob)
	case *v1.Command_AssignJob:
		return applyAssignJob(w, e, c.AssignJob)
	case *v1.Command_UpdateJobState:
		return applyUpdateJobState(w, c.UpdateJobState)
	case *v1.Command_ExpireLease:
		return applyExpireLease(w, c.ExpireLease)
	case *v1.Command_RecordBackup:
		return applyRecordBackup(w, c.RecordBackup)
	case *v1.Command_UpsertMember:
		return applyUpsertMember(w, c.UpsertMember)
	case *v1.Command_RemoveMember:
		return applyRemoveMember(w, c.RemoveMember)
	case *v1.Command_RecordWatermarks:
		return applyRecordWatermarks(w, c.RecordWatermarks)
	case *v1.Command_CreateJoinToken:
		return applyCreateJoinToken(w, c.CreateJoinToken)
	case *v1.Command_ConsumeJoinToken:
		return applyConsumeJoinToken(w, c.ConsumeJoinToken)
	case *v1.Command_RevokeAgent:
		return applyRevokeAgent(w, c.RevokeAgent)
	case *v1.Command_SetClusterCa:
		return applySetClusterCA(w, c.SetClusterCa)
	case *v1.Command_RecordAudit:
		return applyRecordAudit(w, c.RecordAudit)
	case *v1.Command_CreateAccessToken:
		return applyCreateAccessToken(w, c.CreateAccessToken)
	case *v1.Command_PinBackup:
		return applyPinBackup(w, c.PinBackup)
	case *v1.Command_UnpinBackup:
		return applyUnpinBackup(w, c.UnpinBackup)
	case *v1.Command_MarkBackupsExpired:
		return applyMarkBackupsExpired(w, c.MarkBackupsExpired)
	case *v1.Command_FinishExpiry:
		return applyFinishExpiry(w, c.FinishExpiry)
	case *v1.Command_RecordBackupCopy:
		return applyRecordBackupCopy(w, c.RecordBackupCopy)
	case *v1.Command_ApplyPolicies:
		return applyApplyPolicies(w, c.ApplyPolicies)
	case *v1.Command_DeletePolicy:
		return applyDeletePolicy(w, c.DeletePolicy)
	case *v1.Command_RecordScheduleSkips:
		return applyRecordScheduleSkips(w, c.RecordScheduleSkips)
	case *v1.Command_RecordEngineDecision:
		return applyRecordEngineDecision(w, c.RecordEngineDecision)
	case *v1.Command_FinishReconcile:
		return applyFinishReconcile(w, c.FinishReconcile)
	case *v1.Command_AttemptStopped:
		return applyAttemptStopped(w, c.AttemptStopped)
	case *v1.Command_PruneCatalog:
		return applyPruneCatalog(w, c.PruneCatalog)
	case *v1.Command_Idempotent:
		return applyIdempotent(w, e, c.Idempotent)
	case *v1.Command_MarkBinlogGapsAlerted:
		return applyMarkBinlogGapsAlerted(w, c.MarkBinlogGapsAlerted)
	default:
		panic(fmt.Sprintf("fsm: command %T has no applier (entry %d)", c, e.Index))
	}
}

// Snapshot freezes the catalog; Persist writes it while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{store: f.Store().Snapshot()}, nil
}

// Restore replaces the whole catalog with a persisted snapshot.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer func() { _ = rc.Close() }()
	s, err := load(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.store = s
	f.mu.Unlock()
	// Decoding took about three times the snapshot's size on top of the
	// catalog (the bytes read, the decoded message, each job decoded once
	// to index it), all garbage now that load returned: hand it back to
	// the OS at once instead of carrying it as resident memory
	// (BenchmarkCatalog: a leader restored from a 68 MiB snapshot sat at
	// 745 MiB RSS for a heap of 264 MiB). Restores are rare (start, a
	// snapshot installed by the leader).
	debug.FreeOSMemory()
	return nil
}

// load decodes a persisted snapshot into a new store.
func load(rc io.Reader) (*catalog.Store, error) {
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("reading catalog snapshot: %w", err)
	}
	snap := &v1.CatalogSnapshot{}
	if err := proto.Unmarshal(b, snap); err != nil {
		return nil, fmt.Errorf("decoding catalog snapshot: %w", err)
	}
	s, err := catalog.Load(snap)
	if err != nil {
		return nil, fmt.Errorf("restoring catalog snapshot: %w", err)
	}
	return s, nil
}

type snapshot struct {
	store *catalog.Store
}

// Persist writes the catalog as one deterministic CatalogSnapshot message:
// equal catalogs give equal bytes.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	b, err := Marshal(s.store)
	if err == nil {
		_, err = sink.Write(b)
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persisting catalog snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) Release() {}

// Marshal encodes a whole catalog the way a snapshot stores it.
func Marshal(s *catalog.Store) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(s.Read().Dump())
}

// Encode encodes a command for raft.Apply.
func Encode(cmd *v1.Command) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(cmd)
}
