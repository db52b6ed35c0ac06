package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// memStore is a storage.Storage in memory, where BenchmarkGC builds a
// repository with the archive's own code before copying its objects to
// MinIO in bulk. It keeps the contract the archive checks (create-only
// puts, ranged gets, list after write); puts are durable on return.
type memStore struct {
	mu   sync.Mutex
	objs map[string]memObject
}

type memObject struct {
	body []byte
	at   time.Time
}

var _ storage.Storage = (*memStore)(nil)

func newMemStore() *memStore { return &memStore{objs: map[string]memObject{}} }

func (m *memStore) String() string { return "memory" }
func (m *memStore) Close() error   { return nil }

func (m *memStore) Get(_ context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 {
		return nil, fmt.Errorf("get %s: negative offset %d", key, offset)
	}
	m.mu.Lock()
	o, ok := m.objs[key]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("get %s: %w", key, storage.ErrNotFound)
	}
	b := o.body[min(offset, int64(len(o.body))):]
	if length >= 0 && length < int64(len(b)) {
		b = b[:length]
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m *memStore) Stat(_ context.Context, key string) (storage.ObjectInfo, error) {
	m.mu.Lock()
	o, ok := m.objs[key]
	m.mu.Unlock()
	if !ok {
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, storage.ErrNotFound)
	}
	return storage.ObjectInfo{Key: key, Size: int64(len(o.body)), ModTime: o.at}, nil
}

func (m *memStore) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	m.mu.Lock()
	var ois []storage.ObjectInfo
	for k, o := range m.objs {
		if strings.HasPrefix(k, prefix) {
			ois = append(ois, storage.ObjectInfo{Key: k, Size: int64(len(o.body)), ModTime: o.at})
		}
	}
	m.mu.Unlock()
	for _, oi := range ois {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(oi); err != nil {
			return err
		}
	}
	return nil
}

func (m *memStore) Put(_ context.Context, key string, r io.Reader, _ int64, opts storage.PutOptions) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objs[key]; ok && opts.IfNotExists {
		return fmt.Errorf("put %s: %w", key, storage.ErrExists)
	}
	m.objs[key] = memObject{body: body, at: time.Now()}
	return nil
}

func (m *memStore) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	delete(m.objs, key)
	m.mu.Unlock()
	return nil
}
