package fsm

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// keyed wraps cmd under key, with the fingerprint fp, stamped at t0+at.
func keyed(key, fp string, at time.Duration, cmd *v1.Command) *v1.Command {
	return &v1.Command{Cmd: &v1.Command_Idempotent{Idempotent: &v1.Idempotent{
		Key: key, Fingerprint: []byte(fp), Method: "/tidemark.v1.ControlService/SubmitBackup", RecordedAt: ts(at), Cmd: cmd,
	}}}
}

// cancelCmd cancels job id at t0+at.
func TestIdempotentReplaysTheFirstResult(t *testing.T) {
	n := newNode(t)
	n.ok(register("db1", "db1"))
	first := n.apply(keyed("k1", "fp-a", 0, submitBackup("j1", "db1", 0)))
	if first.Err != nil || first.Replayed || first.Value.(*v1.Job).GetId() != "j1" {
		t.Fatalf("first keyed submit: %+v", first)
	}
	// The retry carries another job id (the leader stamps a new one per
	// attempt) and would be refused as a second backup of db1: the key
	// returns the first job instead, and applies nothing.
	again := n.apply(keyed("k1", "fp-a", time.Minute, submitBackup("j2", "db1", time.Minute)))
	if again.Err != nil || !again.Replayed || again.Value.(*v1.Job).GetId() != "j1" {
		t.Fatalf("retried keyed submit: %+v", again)
	}
	if _, err := n.fsm.Store().Read().Job("j2"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("the retry made job j2: %v", err)
	}
	// The same key with another request is refused, naming the key.
	n.fails(keyed("k1", "fp-b", time.Minute, submitBackup("j3", "db1", time.Minute)), catalog.ErrInvalid, `idempotency key "k1" was first used at 2026-01-02T03:04:05Z for /tidemark.v1.ControlService/SubmitBackup with other parameters`)
	// A refused command records nothing: its key may act on a retry.
	n.fails(keyed("k2", "fp-c", time.Minute, submitBackup("j4", "db1", time.Minute)), catalog.ErrConflict, "already has backup job j1")
	if _, err := n.fsm.Store().Read().IdempotencyKey("k2"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("a refused command recorded its key: %v", err)
	}
	n.ok(cancelCmd("j1", 2*time.Minute))
	if v := n.ok(keyed("k2", "fp-c", 3*time.Minute, submitBackup("j4", "db1", 3*time.Minute))); v.(*v1.Job).GetId() != "j4" {
		t.Fatalf("k2 after the conflict cleared: %v", v)
	}
	// A nested Idempotent is refused.
	n.fails(keyed("k3", "x", 0, keyed("k4", "y", 0, register("db2", "db2"))), catalog.ErrInvalid, "wraps another Idempotent")
}

func TestIdempotencyWindow(t *testing.T) {
	n := newNode(t)
	n.ok(register("db1", "db1", "db2"))
	n.ok(keyed("old", "fp", 0, submitBackup("j1", "db1", 0)))
	n.ok(cancelCmd("j1", time.Minute))
	n.ok(keyed("new", "fp2", 23*time.Hour, submitBackup("j2", "db2", 23*time.Hour)))
	n.ok(cancelCmd("j2", 23*time.Hour))
	// 24 h after it was recorded (by the entries' own times) the key is
	// forgotten: the same key acts again, and the old record is pruned.
	r := n.apply(keyed("old", "fp", 24*time.Hour+time.Second, submitBackup("j3", "db1", 24*time.Hour+time.Second)))
	if r.Err != nil || r.Replayed || r.Value.(*v1.Job).GetId() != "j3" {
		t.Fatalf("a key past its window: %+v", r)
	}
	var keys []string
	for _, rec := range n.fsm.Store().Read().IdempotencyKeys() {
		keys = append(keys, rec.GetKey())
	}
	if strings.Join(keys, ",") != "new,old" {
		t.Fatalf("keys after the window: %v, want new,old (the old record replaced)", keys)
	}
	// A key within its window still replays.
	if r := n.apply(keyed("new", "fp2", 24*time.Hour+time.Second, submitBackup("j9", "db2", 24*time.Hour))); !r.Replayed || r.Value.(*v1.Job).GetId() != "j2" {
		t.Fatalf("a key within its window: %+v", r)
	}

	// The count bound drops the oldest keys first.
	defer func(m int) { maxKeys = m }(maxKeys)
	maxKeys = 3
	for i, k := range []string{"a", "b", "c"} {
		at := 25*time.Hour + time.Duration(i)*time.Second
		n.ok(keyed(k, k, at, register("agent-"+k)))
	}
	keys = keys[:0]
	for _, rec := range n.fsm.Store().Read().IdempotencyKeys() {
		keys = append(keys, rec.GetKey())
	}
	if strings.Join(keys, ",") != "a,b,c" || n.fsm.Store().Read().IdempotencyKeyCount() != 3 {
		t.Fatalf("keys with a bound of 3: %v (count %d), want a,b,c", keys, n.fsm.Store().Read().IdempotencyKeyCount())
	}
}

func TestIdempotencyKeysSurviveSnapshotRestore(t *testing.T) {
	n := newNode(t)
	n.ok(register("db1", "db1"))
	n.ok(keyed("k1", "fp", 0, submitBackup("j1", "db1", 0)))
	snap, err := n.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	m := &node{t: t, fsm: New(), index: n.index, term: 2}
	if err := m.fsm.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if c := m.fsm.Store().Read().IdempotencyKeyCount(); c != 1 {
		t.Fatalf("restored key count %d, want 1", c)
	}
	r := m.apply(keyed("k1", "fp", time.Hour, submitBackup("j2", "db1", time.Hour)))
	if r.Err != nil || !r.Replayed || r.Value.(*v1.Job).GetId() != "j1" {
		t.Fatalf("retry after a snapshot restore: %+v", r)
	}
	m.fails(keyed("k1", "other", time.Hour, submitBackup("j2", "db1", time.Hour)), catalog.ErrInvalid, "other parameters")
}

// TestIdempotencyDeterminism: a recorded result with a map (a backup's
// labels) is stored as the same bytes on every node.
func TestIdempotencyDeterminism(t *testing.T) {
	var snaps [][]byte
	for range 5 {
		n := newNode(t)
		n.ok(register("db1", "db1"))
		cmd := submitBackup("j1", "db1", 0)
		labels := map[string]string{}
		for i := range 20 {
			labels[string(rune('a'+i))] = "v"
		}
		cmd.GetSubmitJob().GetJob().GetBackup().Labels = labels
		n.ok(keyed("k1", "fp", 0, cmd))
		b, err := Marshal(n.fsm.Store())
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, b)
	}
	for i := 1; i < len(snaps); i++ {
		if !bytes.Equal(snaps[0], snaps[i]) {
			t.Fatalf("snapshot %d differs from the first", i)
		}
	}
}
