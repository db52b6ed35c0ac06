package faulty

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/storage/storagetest"
)

func newStore(t *testing.T) *Store {
	st, err := file.Open(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return New(st)
}

// TestConformance: with no faults the wrapper is transparent.
func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Storage { return newStore(t) })
}

func TestAfterTimes(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	boom := errors.New("boom")
	// Fail the 3rd and 4th puts under chunks/.
	st.Inject(Fault{Op: Put, KeyPrefix: "chunks/", After: 2, Times: 2, Err: boom})
	var got []bool
	for _, key := range []string{"chunks/1", "other", "chunks/2", "chunks/3", "chunks/4", "chunks/5"} {
		err := st.Put(ctx, key, bytes.NewReader([]byte("x")), 1, storage.PutOptions{})
		if err != nil && !errors.Is(err, boom) {
			t.Fatal(err)
		}
		got = append(got, err != nil)
	}
	want := []bool{false, false, false, true, true, false}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("failed puts: got %v, want %v", got, want)
		}
	}
	if st.Calls(Put) != 6 {
		t.Errorf("calls: %d", st.Calls(Put))
	}
	if _, err := st.Stat(ctx, "chunks/3"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("a faulted put reached the store: %v", err)
	}
}

func TestReadFirst(t *testing.T) {
	st := newStore(t)
	st.Inject(Fault{Op: Put, Times: 1, Err: storage.ErrUnavailable, ReadFirst: 3})
	r := bytes.NewReader([]byte("abcdef"))
	if err := st.Put(context.Background(), "k", r, 6, storage.PutOptions{}); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("put: %v", err)
	}
	if r.Len() != 3 {
		t.Errorf("body left: %d bytes, want 3", r.Len())
	}
}

func TestCorrupt(t *testing.T) {
	st := newStore(t)
	storagetest.Put(t, st, "k", []byte("abc"))
	st.Inject(Fault{Op: Get, Times: 1, Corrupt: true})
	if got := storagetest.Get(t, st, "k"); bytes.Equal(got, []byte("abc")) || len(got) != 3 {
		t.Errorf("corrupted get: %q", got)
	}
	if got := storagetest.Get(t, st, "k"); !bytes.Equal(got, []byte("abc")) {
		t.Errorf("next get: %q", got)
	}
}

func TestDelayAndHook(t *testing.T) {
	st := newStore(t)
	storagetest.Put(t, st, "k", []byte("abc"))
	var hooked string
	st.Inject(Fault{Op: Stat, Times: 1, Delay: 50 * time.Millisecond, Hook: func(_ context.Context, op Op, key string) error {
		hooked = string(op) + " " + key
		return nil
	}})
	start := time.Now()
	if _, err := st.Stat(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 50*time.Millisecond || hooked != "stat k" {
		t.Errorf("delay %v, hook saw %q", time.Since(start), hooked)
	}

	st.Inject(Fault{Op: List, Delay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := st.List(ctx, "", func(storage.ObjectInfo) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("delayed list with a deadline: %v", err)
	}
	rc, err := st.Get(context.Background(), "k", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, rc)
	_ = rc.Close()
}
