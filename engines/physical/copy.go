package physical

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tidemark-backup/tidemark/engines"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Root is one server directory to copy.
type Root struct {
	Name string // RootDatadir, ...
	Dir  string // where it is readable now (e.g. inside a snapshot)
}

// CopyParams are CopyTree's inputs.
type CopyParams struct {
	Sink  engines.Sink
	Roots []Root
	// Skip leaves an entry out (and, for a directory, everything below
	// it); rel is slash-separated below the root. Sockets, pipes and
	// devices are always left out.
	Skip     func(root, rel string, d fs.DirEntry) bool
	Parallel int // files copied at once; 0: 4
	Block    int // 0: DefaultBlock
	// Progress receives the bytes copied so far and the total; called
	// from several goroutines.
	Progress func(done, total int64)
	// Reuse takes over, without reading them, the files of the previous
	// backup of the same instance and engine (ReuseSink.Previous) whose
	// size, inode, times and mode are unchanged. Only for trees whose
	// files keep their identity between backups (snapshots of one
	// volume); a file changed within racyWindow before TakenAt is always
	// read.
	Reuse bool
	// TakenAt is when the tree was frozen (the snapshot); zero: when
	// CopyTree starts, which is later and so only more careful.
	TakenAt time.Time
	// Sparse stores a file's all-zero blocks, and the blocks outside what
	// Live says is needed, as holes (File.Holes): not hashed, compressed
	// or stored, and zeros when restored. Only when the sink's streams
	// take metadata once written (SetMetadata, as the archive's do);
	// otherwise every block is stored. The backup's layout version must
	// then be FormatSparse.
	Sparse bool
	// Direct, with Sparse, reads files with O_DIRECT where the
	// filesystem allows it (else through the page cache, as without it):
	// a frozen tree's files are read once and never cached, and bypassing
	// the cache saves the kernel's copy and its cache upkeep, most of the
	// reading's CPU (see bench/README.md).
	Direct bool
	// Live, with Sparse, names the ranges of a file that must be stored
	// (read from path, the file in the tree); the blocks that overlap none
	// of them are holes and are not even read. nil, or a nil result:
	// the whole file.
	Live func(f File, path string) []Extent
}

// racyWindow is how close to the snapshot a file's last change may be
// for its times to be trusted next time: file timestamps come from a
// clock coarser than writes, so a write right after the snapshot can leave
// a file's times as the snapshot recorded them.
const racyWindow = 2 * time.Second

// CopyResult counts what CopyTree stored.
type CopyResult struct {
	Files, Dirs, Symlinks int
	Bytes                 int64
	// Reused files (and their bytes) were taken over from the previous
	// backup without being read.
	Reused      int
	ReusedBytes int64
	Parent      string // the previous backup's id, when files were reused
}

// CopyTree streams every entry under p.Roots into p.Sink, several files at
// once, largest first so that one big tablespace does not start last. The
// trees must not change while they are read (a snapshot, a stopped
// server): a file whose size differs from what the walk saw fails the copy.
func CopyTree(ctx context.Context, p CopyParams) (*CopyResult, error) {
	var files []File
	dirs := map[string]string{} // root → dir
	res := &CopyResult{}
	taken := p.TakenAt
	if taken.IsZero() {
		taken = time.Now()
	}
	for _, r := range p.Roots {
		if !validRoot(r.Name) {
			return nil, fmt.Errorf("physical: unknown root %q", r.Name)
		}
		dirs[r.Name] = r.Dir
		err := filepath.WalkDir(r.Dir, func(full string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if full == r.Dir {
				return nil
			}
			rel, err := filepath.Rel(r.Dir, full)
			if err != nil {
				return err
			}
			rel = filepath.ToSlash(rel)
			if p.Skip != nil && p.Skip(r.Name, rel, d) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			f := File{Root: r.Name, Path: rel, Mode: info.Mode().Perm(), ModTime: info.ModTime()}
			switch {
			case info.Mode().IsRegular():
				f.Kind, f.Size = KindFile, info.Size()
				res.Bytes += f.Size
				if st, ok := info.Sys().(*syscall.Stat_t); ok {
					f.Ino, f.CTime = st.Ino, time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
					f.Racy = f.ModTime.After(taken.Add(-racyWindow)) || f.CTime.After(taken.Add(-racyWindow))
				}
			case info.IsDir():
				f.Kind = KindDir
			case info.Mode()&fs.ModeSymlink != 0:
				f.Kind = KindSymlink
				if f.Target, err = os.Readlink(full); err != nil {
					return err
				}
			default:
				return nil // socket, pipe, device: not data
			}
			files = append(files, f)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("physical: listing %s (%s): %w", r.Dir, r.Name, err)
		}
	}
	// Directories and symlinks cost nothing: store them first, in walk
	// order.
	var data []File
	for _, f := range files {
		if f.Kind == KindFile {
			data = append(data, f)
			continue
		}
		w, err := Create(p.Sink, f, p.Block)
		if err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		if f.Kind == KindDir {
			res.Dirs++
		} else {
			res.Symlinks++
		}
	}
	sort.SliceStable(data, func(i, j int) bool { return data[i].Size > data[j].Size })
	res.Files = len(data)
	var done atomic.Int64
	if p.Reuse {
		var err error
		if data, err = reuse(ctx, p.Sink, data, res); err != nil {
			return nil, err
		}
		done.Add(res.ReusedBytes)
	}

	err := eachFile(ctx, p.Parallel, data, func(ctx context.Context, f File) error {
		return copyFile(ctx, p, filepath.Join(dirs[f.Root], filepath.FromSlash(f.Path)), f, func(k int64) {
			d := done.Add(k)
			if p.Progress != nil {
				p.Progress(d, res.Bytes)
			}
		})
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// reuse takes over the files of data that the previous backup holds
// unchanged and returns the others, to be read.
func reuse(ctx context.Context, sink engines.Sink, data []File, res *CopyResult) ([]File, error) {
	rs, ok := sink.(ReuseSink)
	if !ok {
		return data, nil
	}
	prev, err := rs.Previous(ctx)
	if err != nil {
		return nil, fmt.Errorf("physical: finding the previous backup: %w", err)
	}
	if prev == nil {
		return data, nil
	}
	refs := make(map[string]*v1.StreamRef, len(prev.GetStreams()))
	for _, s := range prev.GetStreams() {
		refs[s.GetName()] = s
	}
	var rest []File
	for _, f := range data {
		name := StreamName(f)
		if ref := refs[name]; ref != nil && sameFile(f, ref) {
			md := f.metadata()
			// The previous copy's holes are this file's: same content.
			for _, k := range []string{metaSize, metaHoles} {
				if v, ok := ref.GetMetadata()[k]; ok {
					md[k] = v
				}
			}
			ok, err := rs.ReuseStream(ctx, name, md, prev.GetBackupId(), ref)
			if err != nil {
				return nil, fmt.Errorf("physical: %s: %w", name, err)
			}
			if ok {
				res.Reused++
				res.ReusedBytes += f.Size
				res.Parent = prev.GetBackupId()
				continue
			}
		}
		rest = append(rest, f)
	}
	return rest, nil
}

// eachFile runs fn on every file, n at once (0: 4), in order of the
// slice; the first error cancels the rest and is returned.
func eachFile(ctx context.Context, n int, files []File, fn func(context.Context, File) error) error {
	if n <= 0 {
		n = 4
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		firstE  error
	)
	for range min(n, len(files)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(files) || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, files[i]); err != nil {
					errOnce.Do(func() { firstE = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstE != nil {
		return firstE
	}
	return ctx.Err()
}

// copyFile streams one file; the stream is closed in every case, so that
// a failure fails the backup rather than leaving a stream open.
func copyFile(ctx context.Context, p CopyParams, full string, f File, progress func(int64)) (err error) {
	in, err := os.Open(full)
	if err != nil {
		return fmt.Errorf("physical: %w", err)
	}
	defer func() { _ = in.Close() }()
	// Read once, front to back; do not leave the snapshot's pages in the
	// cache at the expense of the running server's.
	_ = unix.Fadvise(int(in.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
	defer func() { _ = unix.Fadvise(int(in.Fd()), 0, 0, unix.FADV_DONTNEED) }()
	w, err := Create(p.Sink, f, p.Block)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := w.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("physical: storing %s: %w", full, cerr)
		}
	}()
	if ms, ok := w.(metadataSetter); ok && p.Sparse {
		return copySparse(ctx, p, in, full, f, w, ms, progress)
	}
	n, err := io.Copy(w, &ctxReader{ctx: ctx, r: in, progress: progress})
	if err != nil {
		return fmt.Errorf("physical: copying %s: %w", full, err)
	}
	if n != f.Size {
		return fmt.Errorf("physical: %s changed while it was copied (%d bytes, %d when listed): the tree must not change during a copy", full, n, f.Size)
	}
	return nil
}

// ctxReader stops a long copy when ctx ends and reports progress.
type ctxReader struct {
	ctx      context.Context
	r        io.Reader
	progress func(int64)
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	if n > 0 {
		c.progress(int64(n))
	}
	return n, err
}

// metadataSetter is a stream that takes metadata after it was opened,
// before it is closed (archive.StreamWriter).
type metadataSetter interface {
	SetMetadata(key, value string) error
}

// availableBuffer is a stream that lends the unused rest of its current
// chunk to be filled in place (archive.StreamWriter.AvailableBuffer).
type availableBuffer interface {
	AvailableBuffer() []byte
}

// copySparse stores in's blocks (at file offsets multiple of the block
// size) except those outside p.Live's ranges, which are not read, and
// those that are all zeros: both become holes, recorded in the stream's
// metadata. Every stored block is a whole block of the file (the last may
// be shorter), so the stream's chunks stay at file-aligned offsets and
// deduplicate against earlier backups as they would without holes.
func copySparse(ctx context.Context, p CopyParams, in *os.File, full string, f File, w io.Writer, ms metadataSetter, progress func(int64)) error {
	block := int64(p.Block)
	if block == 0 {
		block = DefaultBlock
	}
	var live []Extent
	if p.Live != nil {
		live = p.Live(f, full)
	}
	var (
		holes []Extent
		own   []byte
	)
	ab, _ := w.(availableBuffer)
	var direct *os.File
	if p.Direct && block%directAlign == 0 {
		if d, err := os.OpenFile(full, os.O_RDONLY|unix.O_DIRECT, 0); err == nil {
			direct = d
		}
	}
	defer func() {
		if direct != nil {
			_ = direct.Close()
		}
	}()
	for off := int64(0); off < f.Size; off += block {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(block, f.Size-off)
		if live != nil && !overlaps(live, off, n) {
			holes = addHole(holes, off, n)
			progress(n)
			continue
		}
		// Read into the stream's own chunk buffer when it lends one: a
		// stored block is then never copied.
		// O_DIRECT reads whole 4 KiB units into 4 KiB-aligned memory: the
		// file's last block is read rounded up (the file ends it short).
		span := n
		if direct != nil {
			span = (n + directAlign - 1) &^ (directAlign - 1)
		}
		var buf []byte
		if ab != nil {
			if b := ab.AvailableBuffer(); int64(cap(b)) >= span && (direct == nil || aligned(b[:1])) {
				buf = b[:span]
			}
		}
		if buf == nil {
			if int64(len(own)) < span {
				own = alignedBuf(int(max(block, span)))
			}
			buf = own[:span]
		}
		if direct != nil {
			k, err := direct.ReadAt(buf, off)
			if errors.Is(err, unix.EINVAL) {
				// Not for this file after all (e.g. an inline extent):
				// the page cache, from here on.
				_ = direct.Close()
				direct = nil
				k, err = in.ReadAt(buf[:n], off)
			}
			if int64(k) >= n {
				err = nil
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("physical: reading %s: %w", full, err)
			}
			if int64(k) < n {
				return fmt.Errorf("physical: %s changed while it was copied (shorter than the %d bytes listed): the tree must not change during a copy", full, f.Size)
			}
			buf = buf[:n]
		} else if _, err := in.ReadAt(buf, off); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("physical: %s changed while it was copied (shorter than the %d bytes listed): the tree must not change during a copy", full, f.Size)
			}
			return fmt.Errorf("physical: reading %s: %w", full, err)
		}
		progress(n)
		if allZero(buf) {
			holes = addHole(holes, off, n)
			continue
		}
		if _, err := w.Write(buf); err != nil {
			return fmt.Errorf("physical: storing %s: %w", full, err)
		}
	}
	if st, err := in.Stat(); err != nil {
		return fmt.Errorf("physical: %w", err)
	} else if st.Size() != f.Size {
		return fmt.Errorf("physical: %s changed while it was copied (%d bytes, %d when listed): the tree must not change during a copy", full, st.Size(), f.Size)
	}
	if len(holes) > 0 {
		g := f
		g.Holes = holes
		md := g.metadata()
		for _, k := range []string{metaSize, metaHoles} {
			if err := ms.SetMetadata(k, md[k]); err != nil {
				return fmt.Errorf("physical: storing %s: %w", full, err)
			}
		}
	}
	return nil
}

// directAlign is the alignment of O_DIRECT reads: offset, length and
// memory. 4096 covers every logical block size in use (512 and 4096).
const directAlign = 4096

func aligned(b []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))%directAlign == 0
}

// alignedBuf returns n bytes starting at a directAlign boundary.
func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	k := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) % directAlign)
	if k != 0 {
		k = directAlign - k
	}
	return b[k : k+n : k+n]
}

// overlaps reports whether [off, off+n) meets any of the sorted extents.
func overlaps(es []Extent, off, n int64) bool {
	for _, e := range es {
		if e.Off < off+n && off < e.End() {
			return true
		}
	}
	return false
}

// addHole appends [off, off+n) to holes, merging it with the last one when
// they touch.
func addHole(holes []Extent, off, n int64) []Extent {
	if k := len(holes); k > 0 && holes[k-1].End() == off {
		holes[k-1].Len += n
		return holes
	}
	return append(holes, Extent{off, n})
}

// zeros is compared against, a slice at a time.
var zeros [64 << 10]byte

// allZero reports whether b holds only zero bytes. The comparison stops
// at the first 32-byte word that differs, so a block of data costs almost
// nothing; a block of zeros costs a memory-speed read.
func allZero(b []byte) bool {
	for len(b) > 0 {
		k := min(len(b), len(zeros))
		if !bytes.Equal(b[:k], zeros[:k]) {
			return false
		}
		b = b[k:]
	}
	return true
}
