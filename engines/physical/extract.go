package physical

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/tidemark-backup/tidemark/engines"
)

// InProgressMarker is created in every target directory before a restore
// writes anything and removed when all is written and synced. A directory
// holding it is half restored: nothing may start a server on it.
const InProgressMarker = ".tidemark-restore-in-progress"

// spaceMargin is free space kept beyond the data on a restore's
// filesystem: the server needs some to start (and the prepare, its redo).
const spaceMargin = 64 << 20

// ExtractParams are Extract's inputs.
type ExtractParams struct {
	Source engines.Source
	// Dirs maps a root to the directory its files are written to; a root
	// without one goes into Dirs[RootDatadir], which must be set. The
	// binlog root is written only when Dirs names it.
	Dirs     map[string]string
	Parallel int // files written at once; 0: 4
	Progress func(done, total int64)
	// KeepMarker leaves the in-progress marker in place after the files
	// are written: the caller still has to prepare the directory and
	// removes it with FinishRestore.
	KeepMarker bool
}

// ExtractResult counts what Extract wrote.
type ExtractResult struct {
	Files int
	Bytes int64
	Dirs  []string // the target directories, each marked until FinishRestore when KeepMarker
}

// ErrNotEmpty is returned when a target directory has something in it.
var ErrNotEmpty = errors.New("the target directory is not empty")

// ErrNoSpace is returned when a target filesystem has too little free
// space for the backup.
var ErrNoSpace = errors.New("not enough free space")

// Extract writes a physical backup's files into empty directories: checks
// first (every target empty or absent, room on each filesystem), then the
// in-progress marker, directories, files in parallel (each synced),
// symlinks last (so no file is ever written through one), directory times,
// and the marker's removal. On failure the marker stays.
func Extract(ctx context.Context, p ExtractParams) (*ExtractResult, error) {
	m := p.Source.Manifest()
	files, targets, dirOf, err := planExtract(p)
	if err != nil {
		return nil, err
	}

	for _, d := range targets {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("physical: creating %s: %w", d, err)
		}
		mk, err := os.OpenFile(filepath.Join(d, InProgressMarker), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
		if err != nil {
			return nil, fmt.Errorf("physical: marking %s as being restored: %w", d, err)
		}
		_, err = fmt.Fprintf(mk, "tidemark is restoring backup %s into this directory; do not start a server on it\n", m.GetBackupId())
		if err == nil {
			err = mk.Sync()
		}
		if cerr := mk.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("physical: marking %s as being restored: %w", d, err)
		}
		if err := syncDir(d); err != nil {
			return nil, err
		}
	}

	pathOf := func(f File) string { return filepath.Join(dirOf(f.Root), filepath.FromSlash(f.Path)) }
	var data, dirs, links []File
	var total int64
	for _, f := range files {
		switch f.Kind {
		case KindDir:
			dirs = append(dirs, f)
		case KindSymlink:
			links = append(links, f)
		default:
			data = append(data, f)
			total += f.Size
		}
	}
	for _, f := range dirs {
		if err := os.MkdirAll(pathOf(f), 0o750); err != nil {
			return nil, fmt.Errorf("physical: %w", err)
		}
	}
	for _, f := range data {
		if err := os.MkdirAll(filepath.Dir(pathOf(f)), 0o750); err != nil {
			return nil, fmt.Errorf("physical: %w", err)
		}
	}
	sort.SliceStable(data, func(i, j int) bool { return data[i].Size > data[j].Size })

	var done atomic.Int64
	err = eachFile(ctx, p.Parallel, data, func(ctx context.Context, f File) error {
		return writeFile(ctx, p.Source, StreamName(f), pathOf(f), f, func(k int64) {
			d := done.Add(k)
			if p.Progress != nil {
				p.Progress(d, total)
			}
		})
	})
	if err != nil {
		return nil, err
	}
	for _, f := range links {
		if err := os.Symlink(f.Target, pathOf(f)); err != nil {
			return nil, fmt.Errorf("physical: %w", err)
		}
	}
	// Directories last, deepest first: writing into one changes its time.
	sort.SliceStable(dirs, func(i, j int) bool {
		return strings.Count(dirs[i].Path, "/") > strings.Count(dirs[j].Path, "/")
	})
	for _, f := range dirs {
		full := pathOf(f)
		if err := os.Chmod(full, f.Mode); err != nil {
			return nil, fmt.Errorf("physical: %w", err)
		}
		if err := syncDir(full); err != nil {
			return nil, err
		}
		if err := os.Chtimes(full, f.ModTime, f.ModTime); err != nil {
			return nil, fmt.Errorf("physical: %w", err)
		}
	}
	for _, d := range targets {
		if err := syncDir(d); err != nil {
			return nil, err
		}
	}
	res := &ExtractResult{Files: len(data), Bytes: total, Dirs: targets}
	if p.KeepMarker {
		return res, nil
	}
	// Everything is durable: the directory may now be used.
	if err := FinishRestore(targets); err != nil {
		return nil, err
	}
	return res, nil
}

// FinishRestore removes the in-progress marker from dirs: what is in them
// is complete and may be started.
func FinishRestore(dirs []string) error {
	for _, d := range dirs {
		if err := os.Remove(filepath.Join(d, InProgressMarker)); err != nil {
			return fmt.Errorf("physical: %w", err)
		}
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// CheckExtract runs Extract's checks alone (a physical backup, every
// target empty or absent, room on each filesystem): a caller with more to
// check before writing runs them first.
func CheckExtract(p ExtractParams) error {
	_, _, _, err := planExtract(p)
	return err
}

// planExtract lists what Extract writes and where, and checks the targets.
func planExtract(p ExtractParams) (files []File, targets []string, dirOf func(string) string, err error) {
	m := p.Source.Manifest()
	files, err = Files(m)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(files) == 0 {
		return nil, nil, nil, fmt.Errorf("backup %s holds no files: it is not a physical backup (engine %q)", m.GetBackupId(), m.GetEngine())
	}
	base := p.Dirs[RootDatadir]
	if base == "" {
		return nil, nil, nil, errors.New("physical: no target datadir given")
	}
	dirOf = func(root string) string {
		if d := p.Dirs[root]; d != "" {
			return d
		}
		return base
	}
	var keep []File
	for _, f := range files {
		if f.Root == RootBinlog && p.Dirs[RootBinlog] == "" {
			continue // binlogs are the binlog engine's; restored only when asked
		}
		keep = append(keep, f)
	}
	files = keep

	// Checks, before anything is written.
	need := map[string]int64{} // target dir → bytes
	for _, f := range files {
		need[dirOf(f.Root)] += f.Size
	}
	targets = make([]string, 0, len(need))
	for d := range need {
		targets = append(targets, d)
	}
	sort.Strings(targets)
	if err := checkTargets(targets, need); err != nil {
		return nil, nil, nil, err
	}
	return files, targets, dirOf, nil
}

// checkTargets refuses a target that is not a directory or not empty, and
// a filesystem without room for what goes onto it.
func checkTargets(targets []string, need map[string]int64) error {
	perFS := map[uint64]int64{}
	fsDir := map[uint64]string{}
	free := map[uint64]int64{}
	for _, d := range targets {
		st, err := os.Stat(d)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return fmt.Errorf("physical: %w", err)
		case !st.IsDir():
			return fmt.Errorf("physical: %s is not a directory", d)
		default:
			ents, err := os.ReadDir(d)
			if err != nil {
				return fmt.Errorf("physical: %w", err)
			}
			if len(ents) > 0 {
				var names []string
				for _, e := range ents[:min(len(ents), 3)] {
					names = append(names, e.Name())
				}
				if hasMarker(ents) {
					return fmt.Errorf("%w: %s holds an unfinished restore (%s): remove the directory and restore again", ErrNotEmpty, d, InProgressMarker)
				}
				return fmt.Errorf("%w: %s holds %d entries (%s, ...); a restore writes only into an empty or new directory, so it can never mix with or overwrite a server's files", ErrNotEmpty, d, len(ents), strings.Join(names, ", "))
			}
		}
		// The nearest existing ancestor is the filesystem the files go to.
		probe := d
		for {
			if _, err := os.Stat(probe); err == nil {
				break
			}
			parent := filepath.Dir(probe)
			if parent == probe {
				break
			}
			probe = parent
		}
		var sfs unix.Statfs_t
		if err := unix.Statfs(probe, &sfs); err != nil {
			return fmt.Errorf("physical: free space of %s: %w", probe, err)
		}
		var sst unix.Stat_t
		if err := unix.Stat(probe, &sst); err != nil {
			return fmt.Errorf("physical: %w", err)
		}
		perFS[sst.Dev] += need[d]
		fsDir[sst.Dev] = probe
		free[sst.Dev] = int64(sfs.Bavail) * sfs.Bsize
	}
	for dev, n := range perFS {
		if n+spaceMargin > free[dev] {
			return fmt.Errorf("%w: the restore needs %d MiB on the filesystem of %s (%d MiB of data and %d MiB for the server to start), which has %d MiB free", ErrNoSpace,
				(n+spaceMargin)>>20, fsDir[dev], n>>20, spaceMargin>>20, free[dev]>>20)
		}
	}
	return nil
}

func hasMarker(ents []os.DirEntry) bool {
	for _, e := range ents {
		if e.Name() == InProgressMarker {
			return true
		}
	}
	return false
}

// Unfinished reports whether dir holds an unfinished restore.
func Unfinished(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, InProgressMarker))
	return err == nil
}

// writeFile writes one stream into a new file and syncs it.
func writeFile(ctx context.Context, src engines.Source, stream, full string, f File, progress func(int64)) (err error) {
	rc, err := src.OpenStream(ctx, stream)
	if err != nil {
		return err
	}
	defer func() { _ = rc.Close() }()
	out, err := os.OpenFile(full, os.O_CREATE|os.O_EXCL|os.O_WRONLY, f.Mode|0o200)
	if err != nil {
		return fmt.Errorf("physical: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("physical: %w", cerr)
		}
	}()
	pw := &progressWriter{w: out, progress: progress}
	var n int64
	if len(f.Holes) == 0 {
		n, err = io.Copy(pw, rc)
	} else {
		n, err = writeSparse(out, pw, rc, f)
	}
	if err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return fmt.Errorf("%w: writing %s: %w", ErrNoSpace, full, err)
		}
		return fmt.Errorf("physical: writing %s: %w", full, err)
	}
	if want := f.Size - holeBytes(f.Holes); n != want {
		return fmt.Errorf("physical: %s: stream %s gave %d bytes, the manifest says %d", full, stream, n, want)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("physical: syncing %s: %w", full, err)
	}
	if err := out.Chmod(f.Mode); err != nil {
		return fmt.Errorf("physical: %w", err)
	}
	return os.Chtimes(full, f.ModTime, f.ModTime)
}

type progressWriter struct {
	w        io.Writer
	progress func(int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.progress(int64(n))
	return n, err
}

func syncDir(d string) error {
	f, err := os.Open(d)
	if err != nil {
		return fmt.Errorf("physical: %w", err)
	}
	defer func() { _ = f.Close() }()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("physical: syncing %s: %w", d, err)
	}
	return nil
}

// writeSparse writes a file with holes: the stream's bytes go between the
// holes; each hole is allocated (fallocate, so the restored file takes its
// full space now, as the backed-up one did, rather than failing a later
// write of the server for want of space) and reads as zeros. A filesystem
// without fallocate leaves it sparse. n counts the stream's bytes.
func writeSparse(out *os.File, w io.Writer, rc io.Reader, f File) (n int64, err error) {
	var pos int64
	data := func(end int64) error {
		if end <= pos {
			return nil
		}
		if _, err := out.Seek(pos, io.SeekStart); err != nil {
			return err
		}
		k, err := io.CopyN(w, rc, end-pos)
		n += k
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("the stream ended after %d bytes, before the data at offset %d of the file", n, pos+k)
		}
		return err
	}
	for _, h := range f.Holes {
		if err := data(h.Off); err != nil {
			return n, err
		}
		pos = h.End()
	}
	if err := data(f.Size); err != nil {
		return n, err
	}
	if err := out.Truncate(f.Size); err != nil {
		return n, err
	}
	for _, h := range f.Holes {
		if err := unix.Fallocate(int(out.Fd()), 0, h.Off, h.Len); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
				break // stays sparse: zeros all the same
			}
			return n, fmt.Errorf("allocating %d bytes at offset %d: %w", h.Len, h.Off, err)
		}
	}
	// Holes count as written for progress: they are part of the total.
	if p, ok := w.(*progressWriter); ok {
		p.progress(holeBytes(f.Holes))
	}
	// Anything after the last data is not part of the file.
	if k, _ := io.Copy(io.Discard, rc); k > 0 {
		return n + k, nil
	}
	return n, nil
}
