package archive

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Previous returns the newest complete backup of the same instance written
// by the same engine as this one (by finish time), or nil if there is
// none: the parent whose unchanged streams ReuseStream can take over. It
// reads every manifest of the repository once.
func (b *Backup) Previous(ctx context.Context) (*v1.Manifest, error) {
	ms, err := b.repo.Manifests(ctx)
	if err != nil {
		return nil, err
	}
	var prev *v1.Manifest
	for _, m := range ms {
		if m.GetInstance() != b.opts.Instance || m.GetEngine() != b.opts.Engine || m.GetBackupId() == b.manifest.GetBackupId() {
			continue
		}
		if prev == nil || m.GetFinishedAt().AsTime().After(prev.GetFinishedAt().AsTime()) {
			prev = m
		}
	}
	return prev, nil
}

// ReuseStream adds a stream whose content is exactly stream prev of
// backup parent (from its manifest), without reading it: a physical
// engine's file whose size, times and inode show it has not changed since.
// Each chunk is treated as a deduplicated one: referred to in the gc
// protocol and known to the repository. If one was condemned by gc or is
// not known, nothing is added and it returns false: the caller writes the
// stream as usual. The manifest records parent as its parent backup.
func (b *Backup) ReuseStream(ctx context.Context, name string, metadata map[string]string, parent string, prev *v1.StreamRef) (bool, error) {
	if name == "" {
		return false, fmt.Errorf("stream name is empty")
	}
	for _, c := range prev.GetChunks() {
		id, err := chunkIDFromBytes(c.GetId())
		if err != nil {
			return false, fmt.Errorf("backup %s, stream %s: %w", parent, prev.GetName(), err)
		}
		doomed, err := b.mark.refer(ctx, id)
		if err != nil {
			return false, err
		}
		if size, ok := b.repo.known(id); doomed || !ok || size != int64(c.GetStoredSize()) {
			return false, nil
		}
	}
	ref := proto.Clone(prev).(*v1.StreamRef)
	ref.Name, ref.Metadata = name, metadata
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.names[name] {
		return false, fmt.Errorf("backup %s: stream %q opened twice", b.manifest.BackupId, name)
	}
	b.names[name] = true
	b.streams = append(b.streams, &StreamWriter{b: b, name: name, size: b.chunk, ref: ref, closed: true})
	b.manifest.ParentBackupId = parent
	b.logical.Add(int64(ref.GetSize()))
	b.reused.Add(int64(len(ref.GetChunks())))
	return true, nil
}
