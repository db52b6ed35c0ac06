package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// The idempotency window: a key is remembered this long after the entry
// that recorded it, and at most this many keys are kept (the oldest go
// first). A day covers any client's retries (Stripe keeps keys 24 h); the
// count bounds the snapshot (a record is about 1 KiB: 10 MiB at most).
const (
	IdempotencyWindow  = 24 * time.Hour
	IdempotencyMaxKeys = 10000
)

// maxKeys is IdempotencyMaxKeys; a test lowers it.
var maxKeys = IdempotencyMaxKeys

// errReplayed is returned by applyIdempotent for a key it already holds
// with the same request: the recorded result, nothing applied.
var errReplayed = errors.New("replayed")

// LiveKey reports whether rec still guards its key at time t (the time of
// the entry or request that looks it up).
func LiveKey(rec *v1.IdempotencyRecord, t time.Time) bool {
	return rec != nil && !rec.GetRecordedAt().AsTime().Before(t.Add(-IdempotencyWindow))
}

// KeyMismatch is the error for a key reused with another request.
func KeyMismatch(rec *v1.IdempotencyRecord) error {
	return catalog.Errorf(catalog.ErrInvalid, "idempotency key %q was first used at %s for %s with other parameters or by another caller: a key names one request; send a new key for a new request",
		rec.GetKey(), rec.GetRecordedAt().AsTime().UTC().Format(time.RFC3339), rec.GetMethod())
}

// Replay returns the result recorded with rec.
func Replay(rec *v1.IdempotencyRecord) (proto.Message, error) {
	if rec.GetResult() == nil {
		return nil, nil
	}
	m, err := rec.GetResult().UnmarshalNew()
	if err != nil {
		return nil, fmt.Errorf("idempotency key %q: decoding the recorded result: %w", rec.GetKey(), err)
	}
	return m, nil
}

// applyIdempotent applies a command under a client's idempotency key: see
// the Idempotent message for the rules.
func applyIdempotent(w *catalog.Write, e entry, c *v1.Idempotent) (proto.Message, error) {
	switch {
	case c.GetKey() == "":
		return nil, catalog.Errorf(catalog.ErrInvalid, "Idempotent command without a key")
	case c.GetRecordedAt() == nil:
		return nil, catalog.Errorf(catalog.ErrInvalid, "Idempotent command for key %q without recorded_at", c.GetKey())
	case c.GetCmd() == nil || c.GetCmd().GetCmd() == nil:
		return nil, catalog.Errorf(catalog.ErrInvalid, "Idempotent command for key %q carries no command", c.GetKey())
	}
	if _, nested := c.GetCmd().GetCmd().(*v1.Command_Idempotent); nested {
		return nil, catalog.Errorf(catalog.ErrInvalid, "Idempotent command for key %q wraps another Idempotent command", c.GetKey())
	}
	at := c.GetRecordedAt().AsTime()
	if err := pruneKeys(w, at, maxKeys-1); err != nil {
		return nil, err
	}
	if rec, err := w.IdempotencyKey(c.GetKey()); err == nil && LiveKey(rec, at) {
		if !bytes.Equal(rec.GetFingerprint(), c.GetFingerprint()) {
			return nil, KeyMismatch(rec)
		}
		val, err := Replay(rec)
		if err != nil {
			return nil, err
		}
		return val, errReplayed
	}
	val, err := dispatch(w, e, c.GetCmd())
	if err != nil && !errors.Is(err, errUnchanged) {
		return nil, err
	}
	rec := &v1.IdempotencyRecord{
		Key: c.GetKey(), Fingerprint: c.GetFingerprint(), Method: c.GetMethod(),
		RecordedAt: timestamppb.New(at), LogIndex: e.Index,
	}
	if val != nil {
		// Deterministic, as the snapshot: every node stores the same bytes.
		rec.Result = &anypb.Any{}
		if aerr := anypb.MarshalFrom(rec.Result, val, proto.MarshalOptions{Deterministic: true}); aerr != nil {
			return nil, fmt.Errorf("idempotency key %q: encoding the result: %w", c.GetKey(), aerr)
		}
	}
	if perr := w.PutIdempotencyKey(rec); perr != nil {
		return nil, perr
	}
	return val, err
}

// pruneKeys deletes the keys recorded before at minus the window, then the
// oldest until at most keep remain, oldest (lowest log index) first. It
// goes by the entry's own time, so every node prunes the same keys; it
// stops at the first record it keeps, so a write costs what it prunes.
func pruneKeys(w *catalog.Write, at time.Time, keep int) error {
	for {
		rec := w.OldestIdempotencyKey()
		if rec == nil || (w.IdempotencyKeyCount() <= keep && LiveKey(rec, at)) {
			return nil
		}
		if err := w.DeleteIdempotencyKey(rec.GetKey()); err != nil {
			return err
		}
	}
}
