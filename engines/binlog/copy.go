package binlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage"
)

// CopyParams name the binlog CopySegments copies.
type CopyParams struct {
	Instance string
	// From: the segments a point-in-time restore from a backup taken at
	// this time needs: the first whose last event is at or after it (the
	// time truncated to the second, as event times are), and every one
	// after it.
	From time.Time
}

// CopyResult counts what CopySegments did.
type CopyResult struct {
	// Copied objects (segments, index entries, open segments' pieces) and
	// those the destination held already with the same bytes.
	Copied, Present int
	// Segments is how many segments the copy covers.
	Segments int
}

// CopySegments copies an instance's archived binlog from From on into
// another repository, in the streamer's own order (a closed segment, then
// its index entry; an open segment as its pieces), each object create-only
// and re-encrypted with the destination's keys. An object the destination
// holds already is compared and left alone when equal; different bytes are
// ErrConflict (another stream writes there). src is only read.
func CopySegments(ctx context.Context, src, dst *archive.Repo, p CopyParams) (*CopyResult, error) {
	a, err := OpenArchive(ctx, src, p.Instance)
	if err != nil {
		return nil, err
	}
	from := p.From.Truncate(time.Second)
	res := &CopyResult{}
	started := false
	for _, s := range a.segs {
		if !started && s.meta.LastTime.Before(from) {
			continue
		}
		started = true
		res.Segments++
		var names []string
		if s.indexed {
			names = []string{segmentName(p.Instance, s.meta.Name), indexName(p.Instance, s.meta.Name)}
		} else {
			names = s.pieces
		}
		for _, n := range names {
			copied, err := copyObject(ctx, src, dst, n)
			if err != nil {
				return res, fmt.Errorf("binlog archive %s: copying %s: %w", p.Instance, n, err)
			}
			if copied {
				res.Copied++
			} else {
				res.Present++
			}
		}
	}
	return res, nil
}

// copyObject copies one sealed object unless dst has it with the same
// bytes; it reports whether it wrote.
func copyObject(ctx context.Context, src, dst *archive.Repo, name string) (bool, error) {
	b, err := src.GetObject(ctx, name)
	if err != nil {
		return false, err
	}
	have, err := dst.GetObject(ctx, name)
	switch {
	case err == nil && bytes.Equal(have, b):
		return false, nil
	case err == nil:
		return false, fmt.Errorf("%w: the destination holds other bytes under this name", ErrConflict)
	case !errors.Is(err, storage.ErrNotFound):
		return false, err
	}
	opts := archive.ObjectOptions{Retain: true}
	if !isClosedObject(name) {
		opts = archive.ObjectOptions{Compression: "none"}
	}
	if err := dst.PutObject(ctx, name, b, opts); err != nil {
		return false, err
	}
	return true, nil
}

// isClosedObject: everything but an open segment's flush pieces is
// written once and kept (under the repository's retention, if any).
func isClosedObject(name string) bool { return !strings.Contains(name, "/pieces/") }
