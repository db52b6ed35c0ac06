package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestStreamBlocks: a stream cut into small blocks stores chunks of that
// size, reads back exactly, and a second backup with one changed byte
// uploads one block, not a repository-sized chunk; blocks of a bad size
// are refused.
func TestStreamBlocks(t *testing.T) {
	ctx := context.Background()
	r := initRepo(t, openFileStore(t, t.TempDir()), false)
	const block = 64 << 10
	data := make([]byte, 10*block+123)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	write := func(data []byte) string {
		t.Helper()
		m, err := r.WithBackup(ctx, BackupOptions{Engine: "test", Compression: "none"}, func(_ context.Context, b *Backup) error {
			w, err := b.StreamBlocks("files/ibdata1", nil, block)
			if err != nil {
				return err
			}
			// Odd write sizes: blocks are cut by offset, not by write.
			for p := data; len(p) > 0; {
				n := min(len(p), 7919)
				if _, err := w.Write(p[:n]); err != nil {
					return err
				}
				p = p[n:]
			}
			full, err := b.Stream("other", nil)
			if err != nil {
				return err
			}
			if _, err := full.Write(data); err != nil {
				return err
			}
			if err := full.Close(); err != nil {
				return err
			}
			return w.Close()
		})
		if err != nil {
			t.Fatal(err)
		}
		ref := m.Streams[0]
		if ref.Name != "files/ibdata1" {
			ref = m.Streams[1]
		}
		if len(ref.Chunks) != 11 || ref.Chunks[0].Size != block || ref.Chunks[10].Size != 123 {
			t.Fatalf("%d chunks, first %d bytes, want 11 of %d", len(ref.Chunks), ref.Chunks[0].Size, block)
		}
		rc, err := r.OpenStream(ctx, m, "files/ibdata1", ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %d bytes (err %v), want the %d written", len(got), err, len(data))
		}
		return m.BackupId
	}
	write(data)
	changed := bytes.Clone(data)
	changed[5*block+17] ^= 0xff
	id := write(changed)
	m, err := r.LoadManifest(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// One changed block in the block stream, and the whole-stream chunk.
	if want := uint64(block + len(data)); m.NewStoredBytes > want+4096 || m.NewStoredBytes < block {
		t.Errorf("second backup stored %d new bytes, want about %d", m.NewStoredBytes, want)
	}

	for _, bad := range []int{1000, MinBlockSize / 2, 3 * MinBlockSize, 2 * DefaultChunkSize} {
		_, err := r.WithBackup(ctx, BackupOptions{Engine: "test"}, func(_ context.Context, b *Backup) error {
			_, err := b.StreamBlocks("x", nil, bad)
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "not a power of two") {
			t.Errorf("block %d: %v", bad, err)
		}
	}
}

// TestStreamReadCancelled: a read whose context ends before every chunk
// was fetched ends with the context's error, never with io.EOF after a
// prefix of the stream (a caller that does not compare sizes would take
// the prefix for the whole).
func TestStreamReadCancelled(t *testing.T) {
	r := initRepo(t, openFileStore(t, t.TempDir()), false)
	const block = 64 << 10
	data := bytes.Repeat([]byte("0123456789abcdef"), 40*block/16)
	m, err := r.WithBackup(context.Background(), BackupOptions{Engine: "test", Compression: "none"}, func(_ context.Context, b *Backup) error {
		w, err := b.StreamBlocks("files/big", nil, block)
		if err != nil {
			return err
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
		return w.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ { // the dispatcher must be caught waiting on a full queue
		ctx, cancel := context.WithCancel(context.Background())
		rc, err := r.OpenStream(ctx, m, "files/big", ReadOptions{Prefetch: 1})
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, block)
		if _, err := io.ReadFull(rc, buf); err != nil {
			t.Fatal(err)
		}
		cancel()
		got, err := io.ReadAll(rc)
		_ = rc.Close()
		if err == nil && block+len(got) != len(data) {
			t.Fatalf("cancelled read ended cleanly after %d of %d bytes", block+len(got), len(data))
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled read: %v, want context.Canceled", err)
		}
	}
}

// TestStreamSetMetadata: metadata set while a stream is open reaches the
// manifest beside what it was opened with; after Close it is refused.
func TestStreamSetMetadata(t *testing.T) {
	r := initRepo(t, openFileStore(t, t.TempDir()), false)
	var late error
	m, err := r.WithBackup(context.Background(), BackupOptions{Engine: "test"}, func(_ context.Context, b *Backup) error {
		w, err := b.StreamBlocks("files/a", map[string]string{"kind": "file"}, 0)
		if err != nil {
			return err
		}
		if _, err := w.Write([]byte("data")); err != nil {
			return err
		}
		if err := w.SetMetadata("holes", "0+10"); err != nil {
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
		late = w.SetMetadata("size", "14")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	md := m.Streams[0].GetMetadata()
	if md["kind"] != "file" || md["holes"] != "0+10" || md["size"] != "" {
		t.Errorf("metadata %v, want kind and holes only", md)
	}
	if late == nil {
		t.Error("metadata set after Close was accepted")
	}
}
