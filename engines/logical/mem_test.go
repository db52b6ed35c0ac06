package logical

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// memArchive is an in-memory engines.Sink and engines.Source.
type memArchive struct {
	mu       sync.Mutex
	streams  map[string]*memStream
	server   *v1.ServerInfo
	cp       *v1.ConsistencyPoint
	lock     time.Duration
	metadata map[string]string
	// blockAfter, when set, makes writes block once a stream reaches this
	// many bytes, until unblock is closed (used to kill a server mid-dump).
	blockAfter int
	blocked    chan struct{}
	unblock    chan struct{}
	once       sync.Once
	// writeDelay slows every write down, to stretch a dump.
	writeDelay time.Duration
}

type memStream struct {
	a      *memArchive
	buf    bytes.Buffer
	md     map[string]string
	closed bool
}

func newMem() *memArchive {
	return &memArchive{streams: map[string]*memStream{}, metadata: map[string]string{}}
}

func (m *memArchive) Stream(name string, md map[string]string) (io.WriteCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.streams[name]; ok {
		return nil, fmt.Errorf("stream %q opened twice", name)
	}
	s := &memStream{a: m, md: md}
	m.streams[name] = s
	return s, nil
}

func (s *memStream) Write(p []byte) (int, error) {
	time.Sleep(s.a.writeDelay)
	if s.a.blockAfter > 0 && s.buf.Len()+len(p) > s.a.blockAfter {
		s.a.once.Do(func() { close(s.a.blocked) })
		<-s.a.unblock
	}
	return s.buf.Write(p)
}

func (s *memStream) Close() error { s.closed = true; return nil }

func (m *memArchive) SetServer(s *v1.ServerInfo)            { m.server = s }
func (m *memArchive) SetConsistency(c *v1.ConsistencyPoint) { m.cp = c }
func (m *memArchive) SetLockDuration(d time.Duration)       { m.lock = d }
func (m *memArchive) SetEngineMetadata(k, v string) {
	m.mu.Lock()
	m.metadata[k] = v
	m.mu.Unlock()
}

func (m *memArchive) Manifest() *v1.Manifest {
	man := &v1.Manifest{BackupId: "mem", Engine: Name, Server: m.server, Consistency: m.cp, EngineMetadata: m.metadata}
	var names []string
	for n := range m.streams {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		man.Streams = append(man.Streams, &v1.StreamRef{Name: n, Size: uint64(m.streams[n].buf.Len()), Metadata: m.streams[n].md})
	}
	return man
}

func (m *memArchive) OpenStream(ctx context.Context, name string) (io.ReadCloser, error) {
	s, ok := m.streams[name]
	if !ok {
		return nil, fmt.Errorf("no stream %q", name)
	}
	return io.NopCloser(bytes.NewReader(s.buf.Bytes())), nil
}

func (m *memArchive) allClosed() error {
	for n, s := range m.streams {
		if !s.closed {
			return fmt.Errorf("stream %s left open", n)
		}
	}
	return nil
}

var (
	_ engines.Sink   = (*memArchive)(nil)
	_ engines.Source = (*memArchive)(nil)
)
