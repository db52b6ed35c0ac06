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
	mu sync.Mutex
	// objs by the key's first component ("chunks", "locks"): a backup
	// lists locks/ and gc/ at every step, which must not walk a million
	// chunks each time.
	objs map[string]map[string]memObject
}

type memObject struct {
	body []byte
	at   time.Time
}

var _ storage.Storage = (*memStore)(nil)

func newMemStore() *memStore { return &memStore{objs: map[string]map[string]memObject{}} }

func topDir(key string) string {
	dir, _, _ := strings.Cut(key, "/")
	return dir
}

// each calls fn for every object, in no order.
func (m *memStore) each(fn func(key string, body []byte)) {
	for _, dir := range m.objs {
		for k, o := range dir {
			fn(k, o.body)
		}
	}
}

func (m *memStore) String() string { return "memory" }
func (m *memStore) Close() error   { return nil }

func (m *memStore) Get(_ context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 {
		return nil, fmt.Errorf("get %s: negative offset %d", key, offset)
	}
	m.mu.Lock()
	o, ok := m.objs[topDir(key)][key]
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
	o, ok := m.objs[topDir(key)][key]
	m.mu.Unlock()
	if !ok {
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, storage.ErrNotFound)
	}
	return storage.ObjectInfo{Key: key, Size: int64(len(o.body)), ModTime: o.at}, nil
}

func (m *memStore) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	m.mu.Lock()
	var ois []storage.ObjectInfo
	for dir, objs := range m.objs {
		// A prefix within one directory, or one ending in its name.
		if !strings.HasPrefix(dir+"/", prefix) && !strings.HasPrefix(prefix, dir+"/") {
			continue
		}
		for k, o := range objs {
			if strings.HasPrefix(k, prefix) {
				ois = append(ois, storage.ObjectInfo{Key: k, Size: int64(len(o.body)), ModTime: o.at})
			}
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
	dir := m.objs[topDir(key)]
	if dir == nil {
		dir = map[string]memObject{}
		m.objs[topDir(key)] = dir
	}
	if _, ok := dir[key]; ok && opts.IfNotExists {
		return fmt.Errorf("put %s: %w", key, storage.ErrExists)
	}
	dir[key] = memObject{body: body, at: time.Now()}
	return nil
}

func (m *memStore) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	delete(m.objs[topDir(key)], key)
	m.mu.Unlock()
	return nil
}
