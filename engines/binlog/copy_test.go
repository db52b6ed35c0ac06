package binlog

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestCopySegments: the segments a restore from a given time needs are
// copied, re-encrypted for the destination, readable there; a second copy
// writes nothing; other bytes under a name are a conflict.
func TestCopySegments(t *testing.T) {
	ctx := context.Background()
	src, _ := fileRepo(t)
	dst, _ := encryptedRepo(t)
	t0, names := synthArchive(t, src, "db1", 4)
	// From 1h40: segment 2 ends at 1h30 (not needed), 3 and 4 are.
	res, err := CopySegments(ctx, src, dst, CopyParams{Instance: "db1", From: t0.Add(100 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Segments != 2 || res.Copied != 4 || res.Present != 0 {
		t.Fatalf("copy: %+v", res)
	}
	a, err := OpenArchive(ctx, dst, "db1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range a.Segments() {
		got = append(got, s.Name)
	}
	if !slices.Equal(got, names[2:]) {
		t.Fatalf("destination segments %v, want %v", got, names[2:])
	}
	b, err := dst.GetObject(ctx, segmentName("db1", names[3]))
	if err != nil || string(b) != "segment bytes "+names[3] {
		t.Fatalf("segment read from the destination: %q, %v", b, err)
	}
	res, err = CopySegments(ctx, src, dst, CopyParams{Instance: "db1", From: t0})
	if err != nil || res.Segments != 4 || res.Copied != 4 || res.Present != 4 {
		t.Fatalf("second copy from the start: %+v, %v", res, err)
	}
	if err := dst.DeleteObject(ctx, segmentName("db1", names[0])); err != nil {
		t.Fatal(err)
	}
	if err := dst.PutObject(ctx, segmentName("db1", names[0]), []byte("other"), objOpts()); err != nil {
		t.Fatal(err)
	}
	if _, err := CopySegments(ctx, src, dst, CopyParams{Instance: "db1", From: t0}); !errors.Is(err, ErrConflict) {
		t.Fatalf("conflicting object: %v", err)
	}
	if _, err := CopySegments(ctx, src, dst, CopyParams{Instance: "nope", From: t0}); !errors.Is(err, ErrUnknownInstance) {
		t.Fatalf("unknown instance: %v", err)
	}
}
