package archive

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

func TestObjects(t *testing.T) {
	for _, encrypt := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "encrypted"}[encrypt], func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			r := initRepo(t, openFileStore(t, dir), encrypt)
			body := bytes.Repeat([]byte("binlog event "), 1000)
			if err := r.PutObject(ctx, "binlog/db1/seg-1", body, ObjectOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := r.PutObject(ctx, "binlog/db1/seg-1", body, ObjectOptions{}); !errors.Is(err, storage.ErrExists) {
				t.Fatalf("second create-only put: %v, want ErrExists", err)
			}
			if err := r.PutObject(ctx, "binlog/db1/seg-1", []byte("v2"), ObjectOptions{Overwrite: true}); err != nil {
				t.Fatal(err)
			}
			got, err := r.GetObject(ctx, "binlog/db1/seg-1")
			if err != nil || string(got) != "v2" {
				t.Fatalf("get after overwrite: %q, %v", got, err)
			}
			for _, bad := range []string{"", "/a", "a/", "a//b", "a/../b"} {
				if err := r.PutObject(ctx, bad, body, ObjectOptions{}); !errors.Is(err, ErrObjectName) {
					t.Errorf("name %q: %v, want ErrObjectName", bad, err)
				}
			}
			if err := r.PutObject(ctx, "binlog/db1/seg-2", body, ObjectOptions{Compression: "none"}); err != nil {
				t.Fatal(err)
			}
			var names []string
			if err := r.ListObjects(ctx, "binlog/db1/", func(oi ObjectInfo) error { names = append(names, oi.Name); return nil }); err != nil {
				t.Fatal(err)
			}
			if len(names) != 2 {
				t.Fatalf("listed %v", names)
			}
			// Flip one stored byte: the read fails as damage, never returns other bytes.
			path := filepath.Join(dir, "objects", "binlog", "db1", "seg-2")
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			raw[len(raw)-1] ^= 1
			if err := os.WriteFile(path, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := r.GetObject(ctx, "binlog/db1/seg-2"); !errors.Is(err, ErrDamaged) {
				t.Fatalf("damaged object: %v, want ErrDamaged", err)
			}
			rep, err := r.Verify(ctx, VerifyOptions{ReadData: true})
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() || rep.Objects != 2 || len(rep.BadObjects) != 1 || rep.BadObjects[0] != "binlog/db1/seg-2" {
				t.Fatalf("verify --read-data: ok %v, %d objects, bad %v; want the damaged segment named", rep.OK(), rep.Objects, rep.BadObjects)
			}
			if _, err := r.GetObject(ctx, "binlog/db1/none"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("missing object: %v, want ErrNotFound", err)
			}
			if err := r.DeleteObject(ctx, "binlog/db1/seg-1"); err != nil {
				t.Fatal(err)
			}
			if err := r.DeleteObject(ctx, "binlog/db1/seg-1"); err != nil {
				t.Fatalf("deleting a missing object: %v", err)
			}
			// gc does not sweep objects.
			if _, err := r.GC(ctx, GCOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("gc touched an object: %v", err)
			}
		})
	}
}
