package engines

import (
	"context"
	"io"

	"github.com/tidemark-backup/tidemark/internal/archive"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// ArchiveSink adapts an archive backup to Sink.
func ArchiveSink(b *archive.Backup) Sink { return archiveSink{b} }

type archiveSink struct{ *archive.Backup }

func (s archiveSink) Stream(name string, md map[string]string) (io.WriteCloser, error) {
	return s.Backup.Stream(name, md)
}

// StreamBlocks opens a stream cut into fixed blocks (physical.BlockSink).
func (s archiveSink) StreamBlocks(name string, md map[string]string, block int) (io.WriteCloser, error) {
	return s.Backup.StreamBlocks(name, md, block)
}

// Previous finds the parent of a backup (physical.ReuseSink).
func (s archiveSink) Previous(ctx context.Context) (*v1.Manifest, error) {
	return s.Backup.Previous(ctx)
}

// ReuseStream takes over an unchanged stream of the parent
// (physical.ReuseSink).
func (s archiveSink) ReuseStream(ctx context.Context, name string, md map[string]string, parent string, prev *v1.StreamRef) (bool, error) {
	return s.Backup.ReuseStream(ctx, name, md, parent, prev)
}

// ArchiveSource adapts a repository and a manifest to Source.
func ArchiveSource(r *archive.Repo, m *v1.Manifest) Source { return archiveSource{r, m} }

type archiveSource struct {
	r *archive.Repo
	m *v1.Manifest
}

func (s archiveSource) Manifest() *v1.Manifest { return s.m }

func (s archiveSource) OpenStream(ctx context.Context, name string) (io.ReadCloser, error) {
	// Engines read several streams at once (one per loader); two chunks of
	// read-ahead each keeps the network busy while bounding memory to about
	// loaders × 2 × chunk size.
	return s.r.OpenStream(ctx, s.m, name, archive.ReadOptions{Prefetch: 2})
}
