package physical

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Roots: the server directories a physical backup may hold files from.
const (
	RootDatadir = "datadir" // @@datadir
	RootRedo    = "redo"    // @@innodb_log_group_home_dir, when outside the datadir
	RootUndo    = "undo"    // @@innodb_undo_directory, when outside the datadir
	RootBinlog  = "binlog"  // the directory of @@log_bin_basename, when outside the datadir
)

// Kinds of entries.
const (
	KindFile    = "file"
	KindDir     = "dir"
	KindSymlink = "symlink"
)

// Stream metadata keys.
const (
	metaKind   = "kind"
	metaMode   = "mode"   // permission bits, octal
	metaMTime  = "mtime"  // Unix nanoseconds
	metaTarget = "target" // a symlink's target
	metaCTime  = "ctime"  // Unix nanoseconds of the last inode change
	metaIno    = "ino"    // inode number
	// metaRacy marks a file changed so shortly before the copy began
	// that a later change could leave its times as they are (timestamps
	// are coarser than writes): it is never reused, always read.
	metaRacy = "racy"
	// metaSize is a file's size when it has holes (the stream holds less).
	metaSize = "size"
	// metaHoles lists a file's holes as "offset+length" byte ranges,
	// comma-separated, in order: ranges whose data is not in the stream
	// and that are zeros in the restored file.
	metaHoles = "holes"
)

// StreamPrefix begins the name of every file stream.
const StreamPrefix = "files/"

// Manifest engine-metadata keys every physical backup sets.
const (
	// MetaFormat is the layout's version (FormatVersion).
	MetaFormat = "physical.format"
	// MetaBlock is the block size files were cut into.
	MetaBlock = "physical.block"
	// MetaPrepare says what makes the restored files a consistent datadir:
	// PrepareCrashRecovery or PrepareMariabackup.
	MetaPrepare = "physical.prepare"
)

// FormatVersion is the version of this layout.
const FormatVersion = "1"

// FormatSparse is the layout version of a backup whose files may have
// holes (File.Holes): ranges stored as no data at all and restored as
// zeros. A reader of version 1 only would restore such a file short, so a
// backup that may hold holes says so and older readers refuse it.
const FormatSparse = "2"

// Ways a restored datadir is made consistent.
const (
	// PrepareCrashRecovery: the files are a crash-consistent image (a
	// filesystem snapshot); the server's own crash recovery on first start
	// finishes it.
	PrepareCrashRecovery = "crash-recovery"
	// PrepareMariabackup: the files are mariabackup's/xtrabackup's output;
	// `mariabackup --prepare` applies its redo before the server starts.
	PrepareMariabackup = "mariabackup"
)

// DefaultBlock is the block size files are cut into unless an engine says
// otherwise. InnoDB writes 16 KiB pages; a smaller block stores less around
// each changed page, a larger one costs fewer chunks (objects, index
// entries, manifest lines) per gigabyte.
const DefaultBlock = 1 << 20

// File is one entry of a physical backup.
type File struct {
	Root    string // RootDatadir, ...
	Path    string // slash-separated, relative to the root, never ".." or absolute
	Kind    string // KindFile, KindDir, KindSymlink
	Mode    fs.FileMode
	ModTime time.Time
	Target  string // KindSymlink only
	Size    int64  // the file's size (read back: the stream's, plus its holes); ignored when writing
	// CTime and Ino identify a regular file's content with its size and
	// ModTime: a file whose four are those of the previous backup's copy
	// is that copy (CopyParams.Reuse). Zero when unknown.
	CTime time.Time
	Ino   uint64
	Racy  bool
	// Holes are ranges of the file not in its stream: restored as zeros.
	// Sorted, disjoint, within Size. The stream holds the other bytes in
	// file order, so it is Size minus the holes long.
	Holes []Extent
}

// Extent is a byte range of a file.
type Extent struct{ Off, Len int64 }

// End is the offset just after e.
func (e Extent) End() int64 { return e.Off + e.Len }

// holesString is Holes as metaHoles stores them.
func holesString(hs []Extent) string {
	var b strings.Builder
	for i, h := range hs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(h.Off, 10))
		b.WriteByte('+')
		b.WriteString(strconv.FormatInt(h.Len, 10))
	}
	return b.String()
}

// parseHoles reads metaHoles back and checks that the holes are sorted,
// disjoint, non-empty and within a file of size bytes.
func parseHoles(s string, size int64) ([]Extent, error) {
	if s == "" {
		return nil, nil
	}
	var out []Extent
	var end int64
	for _, part := range strings.Split(s, ",") {
		o, l, ok := strings.Cut(part, "+")
		off, err1 := strconv.ParseInt(o, 10, 64)
		n, err2 := strconv.ParseInt(l, 10, 64)
		if !ok || err1 != nil || err2 != nil || off < end || n <= 0 || off > size || n > size-off {
			return nil, fmt.Errorf("hole %q is not a range within the file's %d bytes after %d", part, size, end)
		}
		out = append(out, Extent{off, n})
		end = off + n
	}
	return out, nil
}

// holeBytes is the sum of the holes' lengths.
func holeBytes(hs []Extent) int64 {
	var n int64
	for _, h := range hs {
		n += h.Len
	}
	return n
}

// StreamName is the stream f is stored as.
func StreamName(f File) string { return StreamPrefix + f.Root + "/" + f.Path }

func (f File) metadata() map[string]string {
	md := map[string]string{
		metaKind:  f.Kind,
		metaMode:  strconv.FormatUint(uint64(f.Mode.Perm()), 8),
		metaMTime: strconv.FormatInt(f.ModTime.UnixNano(), 10),
	}
	if f.Kind == KindSymlink {
		md[metaTarget] = f.Target
	}
	if f.Ino != 0 {
		md[metaIno] = strconv.FormatUint(f.Ino, 10)
		md[metaCTime] = strconv.FormatInt(f.CTime.UnixNano(), 10)
	}
	if f.Racy {
		md[metaRacy] = "1"
	}
	if len(f.Holes) > 0 {
		md[metaSize] = strconv.FormatInt(f.Size, 10)
		md[metaHoles] = holesString(f.Holes)
	}
	return md
}

// fileSize is the size of the file a stream holds: its own size, or the
// recorded size of a file with holes.
func fileSize(ref *v1.StreamRef) int64 {
	if s, ok := ref.GetMetadata()[metaSize]; ok {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n
		}
		return -1 // never equal to a real size
	}
	return int64(ref.GetSize())
}

// sameFile reports whether the file a (as now) is the file b (as a
// previous backup recorded it), unchanged: same size, inode and times, and
// b was not racy.
func sameFile(a File, prev *v1.StreamRef) bool {
	md := prev.GetMetadata()
	if a.Ino == 0 || md[metaRacy] != "" || md[metaKind] != KindFile || fileSize(prev) != a.Size {
		return false
	}
	return md[metaIno] == strconv.FormatUint(a.Ino, 10) &&
		md[metaCTime] == strconv.FormatInt(a.CTime.UnixNano(), 10) &&
		md[metaMTime] == strconv.FormatInt(a.ModTime.UnixNano(), 10) &&
		md[metaMode] == strconv.FormatUint(uint64(a.Mode.Perm()), 8)
}

// validPath reports whether p is a clean relative slash path inside its
// root: what a restore may create without escaping the target directory.
func validPath(p string) bool {
	return p != "" && p != "." && !path.IsAbs(p) && path.Clean(p) == p && p != ".." && !strings.HasPrefix(p, "../") && !strings.Contains(p, "\x00")
}

func validRoot(r string) bool {
	switch r {
	case RootDatadir, RootRedo, RootUndo, RootBinlog:
		return true
	}
	return false
}

// FileOf reads a stream's entry back; ok is false for streams that are not
// files of the layout. A file stream with bad metadata is an error naming
// it: restoring it could write outside the target.
func FileOf(ref *v1.StreamRef) (f File, ok bool, err error) {
	rest, found := strings.CutPrefix(ref.GetName(), StreamPrefix)
	if !found {
		return File{}, false, nil
	}
	root, p, _ := strings.Cut(rest, "/")
	if !validRoot(root) || !validPath(p) {
		return File{}, true, fmt.Errorf("stream %q: not a valid file path (root %q, path %q)", ref.GetName(), root, p)
	}
	md := ref.GetMetadata()
	f = File{Root: root, Path: p, Kind: md[metaKind], Target: md[metaTarget], Size: int64(ref.GetSize())}
	mode, err := strconv.ParseUint(md[metaMode], 8, 32)
	if err != nil {
		return File{}, true, fmt.Errorf("stream %q: mode %q: %w", ref.GetName(), md[metaMode], err)
	}
	f.Mode = fs.FileMode(mode).Perm()
	ns, err := strconv.ParseInt(md[metaMTime], 10, 64)
	if err != nil {
		return File{}, true, fmt.Errorf("stream %q: mtime %q: %w", ref.GetName(), md[metaMTime], err)
	}
	f.ModTime = time.Unix(0, ns)
	switch f.Kind {
	case KindFile, KindDir:
	case KindSymlink:
		if f.Target == "" {
			return File{}, true, fmt.Errorf("stream %q: symlink without a target", ref.GetName())
		}
	default:
		return File{}, true, fmt.Errorf("stream %q: unknown kind %q", ref.GetName(), f.Kind)
	}
	if f.Kind != KindFile && f.Size != 0 {
		return File{}, true, fmt.Errorf("stream %q: a %s with %d bytes of data", ref.GetName(), f.Kind, f.Size)
	}
	if hs, ok := md[metaHoles]; ok && f.Kind == KindFile {
		size, err := strconv.ParseInt(md[metaSize], 10, 64)
		if err != nil || size < 0 {
			return File{}, true, fmt.Errorf("stream %q: a file with holes and size %q", ref.GetName(), md[metaSize])
		}
		if f.Holes, err = parseHoles(hs, size); err != nil {
			return File{}, true, fmt.Errorf("stream %q: %w", ref.GetName(), err)
		}
		if data := size - holeBytes(f.Holes); data != f.Size {
			return File{}, true, fmt.Errorf("stream %q: %d bytes of data, but a file of %d bytes with %d bytes of holes holds %d", ref.GetName(), f.Size, size, size-data, data)
		}
		f.Size = size
	}
	return f, true, nil
}

// Files lists the entries of a physical backup's manifest, in manifest
// order.
func Files(m *v1.Manifest) ([]File, error) {
	var out []File
	for _, s := range m.GetStreams() {
		f, ok, err := FileOf(s)
		if err != nil {
			return nil, fmt.Errorf("backup %s: %w", m.GetBackupId(), err)
		}
		if ok {
			out = append(out, f)
		}
	}
	return out, nil
}

// BlockSink is a Sink that can cut a stream into blocks of a given size
// (the archive's StreamBlocks). A sink without it gets whole-chunk streams:
// correct, but with less deduplication.
type BlockSink interface {
	StreamBlocks(name string, metadata map[string]string, block int) (io.WriteCloser, error)
}

// ReuseSink is a Sink that can take over an unchanged stream of an
// earlier backup without reading it (the archive's Previous and
// ReuseStream).
type ReuseSink interface {
	Previous(ctx context.Context) (*v1.Manifest, error)
	ReuseStream(ctx context.Context, name string, metadata map[string]string, parent string, prev *v1.StreamRef) (bool, error)
}

// Create opens the stream of entry f. A directory's or symlink's stream is
// empty: close it at once. block 0 is DefaultBlock.
func Create(sink engines.Sink, f File, block int) (io.WriteCloser, error) {
	if !validRoot(f.Root) || !validPath(f.Path) {
		return nil, fmt.Errorf("physical: %s/%s is not a valid entry path", f.Root, f.Path)
	}
	if block == 0 {
		block = DefaultBlock
	}
	if bs, ok := sink.(BlockSink); ok && f.Kind == KindFile {
		return bs.StreamBlocks(StreamName(f), f.metadata(), block)
	}
	return sink.Stream(StreamName(f), f.metadata())
}
