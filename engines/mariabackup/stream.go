package mariabackup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/internal/xbstream"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// Files arrive two ways. InnoDB's files (tablespaces, the system
// tablespace, undo and the copied redo log: nearly all of a typical
// instance) go straight into archive streams as their chunks arrive. The
// tool handles DDL on them during the backup with files of its own
// (<table>.new, .ren, .del, applied by --prepare), so they are written
// once, front to back. Every other file (Aria, MyISAM, CSV, .frm, the
// tool's info files) is spooled into the backup's private directory and
// stored when the stream ends: mariabackup 10.11 renames and removes such
// files in the stream when their tables see DDL during the backup
// (measured: 'R' and 'D' chunks for Aria tables renamed and dropped while
// it ran), and seeks back in Aria's log, neither of which an archive
// stream, written once front to back, can follow.
func direct(p string) bool {
	base := path.Base(p)
	if strings.HasSuffix(base, ".ibd") || strings.HasSuffix(base, ".new") {
		return true
	}
	if strings.Contains(p, "/") {
		return false
	}
	for _, prefix := range []string{"ibdata", "ib_logfile", "undo", "ibtmp"} {
		if strings.HasPrefix(base, prefix) {
			return true
		}
	}
	return false
}

// run is one backup's reading of the stream.
type run struct {
	sink     engines.Sink
	block    int
	spoolDir string
	progress func(engines.Progress)
	files    map[string]*inflight // files whose chunks are arriving
	stored   map[string]bool      // direct files already stored
	spooled  map[string]*inflight // spooled files complete in the stream, stored at its end
	nSpooled int                  // spooled files stored
	info     map[string][]byte
	infoAt   time.Time // when the binlog coordinates arrived
	bytes    int64
	done     int
	zeros    []byte
	// renames and removes count the tool's renames and removals (DDL on
	// non-InnoDB tables during the backup).
	renames, removes int
	// unsent lists renames of files the stream never held.
	unsent []string
}

type inflight struct {
	w     io.WriteCloser // a direct file's archive stream
	spool *os.File       // a spooled file
	pos   int64          // where the next data goes
	size  int64
	keep  *bytes.Buffer // an info file's content
}

func newRun(sink engines.Sink, block int, spoolDir string, progress func(engines.Progress)) *run {
	return &run{sink: sink, block: block, spoolDir: spoolDir, progress: progress,
		files: map[string]*inflight{}, stored: map[string]bool{}, spooled: map[string]*inflight{}, info: map[string][]byte{}}
}

// consume reads the stream, storing direct files and spooling the rest.
func (r *run) consume(ctx context.Context, out io.Reader, dialect xbstream.Dialect) error {
	xr := xbstream.NewReader(out, xbstream.Options{Dialect: dialect})
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		c, err := xr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case c.Type == xbstream.TypeEOF:
			f, err := r.open(c.Path)
			if err != nil {
				return err
			}
			if err := r.finish(c.Path, f); err != nil {
				return err
			}
		case c.Type == xbstream.TypePayload || c.Type == xbstream.TypeSparse && dialect == xbstream.DialectPercona:
			f, err := r.open(c.Path)
			if err != nil {
				return err
			}
			data := c.Data
			for _, h := range c.Sparse { // holes become zeros: the file as the server sees it
				if err := r.writeZeros(c.Path, f, int64(h.Skip)); err != nil {
					return err
				}
				if err := r.write(c.Path, f, data[:h.Len]); err != nil {
					return err
				}
				data = data[h.Len:]
			}
			if err := r.write(c.Path, f, data); err != nil {
				return err
			}
		case c.Type == xbstream.TypeSeek:
			f, err := r.open(c.Path)
			if err != nil {
				return err
			}
			switch {
			case f.spool != nil || c.Offset == f.pos:
				f.pos = c.Offset
			case c.Offset > f.pos:
				if err := r.writeZeros(c.Path, f, c.Offset-f.pos); err != nil {
					return err
				}
			default:
				return fmt.Errorf("file %s: the tool seeks back to offset %d after writing %d bytes of an InnoDB file, which is stored front to back as it arrives; this engine cannot store it: back up with the snapshot or logical engine", c.Path, c.Offset, f.pos)
			}
		case c.Type == xbstream.TypeRename:
			if err := r.rename(c.Path, c.NewPath, c.At); err != nil {
				return err
			}
			r.renames++
		case c.Type == xbstream.TypeRemove:
			if err := r.remove(c.Path, c.At); err != nil {
				return err
			}
			r.removes++
		default:
			return fmt.Errorf("file %s: chunk type %q at stream offset %d is not handled", c.Path, c.Type, c.At)
		}
	}
}

func (r *run) open(p string) (*inflight, error) {
	if f := r.files[p]; f != nil {
		return f, nil
	}
	if r.stored[p] {
		return nil, fmt.Errorf("file %s appears twice in the stream (after its end-of-file chunk); it is stored as it arrives, so this engine cannot store it again: back up with the snapshot or logical engine", p)
	}
	if f := r.spooled[p]; f != nil {
		// Sent again: the new copy replaces the old (as mbstream would
		// rewrite it).
		delete(r.spooled, p)
		if err := f.spool.Truncate(0); err != nil {
			return nil, fmt.Errorf("spooling %s: %w", p, err)
		}
		f.pos, f.size, f.keep = 0, 0, keepFor(p)
		r.files[p] = f
		return f, nil
	}
	f := &inflight{keep: keepFor(p)}
	if direct(p) {
		w, err := physical.Create(r.sink, physical.File{Root: physical.RootDatadir, Path: p, Kind: physical.KindFile, Mode: 0o640, ModTime: time.Now()}, r.block)
		if err != nil {
			return nil, fmt.Errorf("file %s: %w", p, err)
		}
		f.w = w
	} else {
		// Checked now, not when stored: a bad path fails early.
		if err := checkPath(p); err != nil {
			return nil, fmt.Errorf("file %s: %w", p, err)
		}
		sp, err := os.CreateTemp(r.spoolDir, "spool-")
		if err != nil {
			return nil, fmt.Errorf("spooling %s: %w", p, err)
		}
		f.spool = sp
	}
	r.files[p] = f
	return f, nil
}

func keepFor(p string) *bytes.Buffer {
	if infoFiles[p] {
		return &bytes.Buffer{}
	}
	return nil
}

func (r *run) write(p string, f *inflight, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if f.spool != nil {
		if _, err := f.spool.WriteAt(b, f.pos); err != nil {
			if errors.Is(err, unix.ENOSPC) {
				return fmt.Errorf("spooling %s in %s: %w; the files other than InnoDB's are held there until the stream ends: give the agent a temporary directory with room for them (TMPDIR)", p, r.spoolDir, err)
			}
			return fmt.Errorf("spooling %s: %w", p, err)
		}
	} else if _, err := f.w.Write(b); err != nil {
		return fmt.Errorf("storing %s: %w", p, err)
	}
	if f.keep != nil && f.pos == int64(f.keep.Len()) && f.keep.Len() < maxInfo {
		f.keep.Write(b[:min(len(b), maxInfo-f.keep.Len())])
	}
	f.pos += int64(len(b))
	f.size = max(f.size, f.pos)
	r.bytes += int64(len(b))
	if r.progress != nil {
		r.progress(engines.Progress{Phase: "data", BytesDone: r.bytes, TablesDone: r.done})
	}
	return nil
}

func (r *run) writeZeros(p string, f *inflight, n int64) error {
	for n > 0 {
		if len(r.zeros) == 0 {
			r.zeros = make([]byte, 1<<20)
		}
		k := min(n, int64(len(r.zeros)))
		if err := r.write(p, f, r.zeros[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func (r *run) finish(p string, f *inflight) error {
	delete(r.files, p)
	if f.keep != nil {
		r.info[p] = f.keep.Bytes()
		if strings.HasSuffix(p, "binlog_info") {
			r.infoAt = time.Now()
		}
	}
	r.done++
	if f.spool != nil {
		r.spooled[p] = f
		return nil
	}
	r.stored[p] = true
	if err := f.w.Close(); err != nil {
		return fmt.Errorf("storing %s: %w", p, err)
	}
	return nil
}

// rename follows the tool's rename of a spooled file (open or complete);
// a file already stored cannot be renamed.
func (r *run) rename(from, to string, at int64) error {
	if direct(from) || direct(to) || r.stored[from] {
		return fmt.Errorf("the stream renames %s to %s (stream offset %d), an InnoDB file this engine stores as it arrives; back up with the snapshot or logical engine", from, to, at)
	}
	if err := checkPath(to); err != nil {
		return fmt.Errorf("file %s: %w", to, err)
	}
	var f *inflight
	var open bool
	if f = r.files[from]; f != nil {
		open = true
		delete(r.files, from)
	} else if f = r.spooled[from]; f != nil {
		delete(r.spooled, from)
	} else {
		// mariabackup 10.11 renames files it never sent when a table is
		// created and renamed while it runs (measured); mbstream -x
		// ignores such a rename, and so do we, with a warning.
		r.unsent = append(r.unsent, from+" → "+to)
		return nil
	}
	if err := r.drop(to); err != nil {
		return err
	}
	if open {
		r.files[to] = f
	} else {
		r.spooled[to] = f
	}
	return nil
}

// remove follows the tool's removal of a spooled file; removing a file
// the stream never held is nothing.
func (r *run) remove(p string, at int64) error {
	if r.stored[p] || r.files[p] != nil && r.files[p].spool == nil {
		return fmt.Errorf("the stream removes %s (stream offset %d), an InnoDB file this engine stores as it arrives; back up with the snapshot or logical engine", p, at)
	}
	return r.drop(p)
}

// drop forgets the spooled file p, if any.
func (r *run) drop(p string) error {
	f := r.files[p]
	if f == nil {
		f = r.spooled[p]
	}
	if f == nil {
		return nil
	}
	delete(r.files, p)
	delete(r.spooled, p)
	name := f.spool.Name()
	_ = f.spool.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("spool of %s: %w", p, err)
	}
	return nil
}

// storeSpooled stores the spooled files after the stream ended, several
// at once: they are many and small (an archive stream each; one at a time,
// 200 system-table files took a third of a second).
func (r *run) storeSpooled(ctx context.Context) error {
	paths := make([]string, 0, len(r.spooled))
	for p := range r.spooled {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, p := range paths {
		f := r.spooled[p]
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			w, err := physical.Create(r.sink, physical.File{Root: physical.RootDatadir, Path: p, Kind: physical.KindFile, Mode: 0o640, ModTime: time.Now()}, r.block)
			if err != nil {
				return fmt.Errorf("file %s: %w", p, err)
			}
			n, err := io.Copy(w, io.NewSectionReader(f.spool, 0, f.size))
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err == nil && n != f.size {
				err = fmt.Errorf("%d of %d bytes", n, f.size)
			}
			if err != nil {
				return fmt.Errorf("storing %s from its spool: %w", p, err)
			}
			return nil
		})
	}
	err := g.Wait()
	if err == nil {
		r.nSpooled = len(paths)
	}
	for _, p := range paths { // spool files go now, stored or not
		if derr := r.drop(p); err == nil {
			err = derr
		}
	}
	return err
}

// discard closes what a failed backup left open: streams (an open stream
// would fail the backup anyway; closed, the sink has nothing dangling)
// and spool files (the private directory is removed after).
func (r *run) discard() {
	for p, f := range r.files {
		if f.w != nil {
			_ = f.w.Close()
		} else {
			_ = f.spool.Close()
		}
		delete(r.files, p)
	}
	for p, f := range r.spooled {
		_ = f.spool.Close()
		delete(r.spooled, p)
	}
}

// checkPath refuses a path that could land outside the datadir, early
// for a spooled file (physical.Create checks again when it is stored).
func checkPath(p string) error {
	if p == "" || p == "." || path.IsAbs(p) || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") || strings.Contains(p, "\x00") {
		return fmt.Errorf("physical: %s/%s is not a valid entry path", physical.RootDatadir, p)
	}
	return nil
}
