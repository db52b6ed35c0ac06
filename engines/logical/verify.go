package logical

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Verify reads the tables a restore of p.Source wrote on p.DSN back
// through the backup's own reader (the same queries, session settings and
// encoding, into nowhere) and compares each table's row count and
// order-independent checksum with those the backup recorded. Every table
// that differs is named in the result, and the error wraps
// engines.ErrMismatch. Sequences (no rows) are not compared; a backup
// taken before checksums were recorded is refused with that reason.
func (e *Engine) Verify(ctx context.Context, p engines.VerifyParams) (*engines.VerifyResult, error) {
	if p.Source == nil {
		return nil, fmt.Errorf("logical verify: no source")
	}
	m := p.Source.Manifest()
	if m.GetEngine() != Name {
		return nil, fmt.Errorf("backup %s was written by engine %q, not %q", m.GetBackupId(), m.GetEngine(), Name)
	}
	r := &restoreRun{p: engines.RestoreParams{Source: p.Source, Databases: p.Databases, Tables: p.Tables, RenameDB: p.RenameDB}, rename: p.RenameDB}
	if err := r.readJSON(ctx, streamMeta, &r.meta); err != nil {
		return nil, err
	}
	sel, err := r.selectObjects()
	if err != nil {
		return nil, err
	}
	want := map[[2]string]tableMeta{} // by the name on the target
	var targetDBs []string
	for _, d := range sel.dbs {
		targetDBs = append(targetDBs, r.target(d))
	}
	for _, t := range r.meta.Tables {
		if !sel.table(t.DB, t.Name) || t.SequenceRow != nil {
			continue
		}
		if t.Checksum == "" {
			return nil, fmt.Errorf("backup %s records no row checksums (it was taken by a tidemark older than restore verification): nothing to verify against", m.GetBackupId())
		}
		want[[2]string{r.target(t.DB), t.Name}] = t
	}

	sink := &checksumSink{}
	_, err = e.backup(ctx, engines.BackupParams{
		DSN: p.DSN, Parallel: p.Parallel, Databases: targetDBs, Sink: sink,
		Progress: func(pr engines.Progress) {
			if p.Progress != nil {
				pr.Phase = "verify " + pr.Phase
				p.Progress(pr)
			}
		},
	}, func(db, name string) bool {
		_, ok := want[[2]string{db, name}]
		return ok
	}, func(db, name string) bool {
		// Each table with its history when the backup took it: the
		// checksums cover the rows as dumped.
		return want[[2]string{db, name}].History
	})
	if err != nil {
		return nil, fmt.Errorf("reading the restored tables back: %w", err)
	}
	var got metaDoc
	if err := readJSON(bytes.NewReader(sink.meta.Bytes()), streamMeta, &got); err != nil {
		return nil, err
	}
	gotBy := map[[2]string]tableMeta{}
	for _, t := range got.Tables {
		gotBy[[2]string{t.DB, t.Name}] = t
	}
	res := &engines.VerifyResult{}
	for _, t := range r.meta.Tables {
		key := [2]string{r.target(t.DB), t.Name}
		w, ok := want[key]
		if !ok {
			continue
		}
		res.Tables++
		res.Rows += w.Rows
		g, found := gotBy[key]
		mm := engines.TableMismatch{Table: t.DB + "." + t.Name, Target: key[0] + "." + key[1], WantRows: w.Rows, WantChecksum: w.Checksum}
		switch {
		case !found:
			mm.Target, mm.MissingOnTarget = "", true
		case g.Rows != w.Rows || g.Checksum != w.Checksum:
			mm.GotRows, mm.GotChecksum = g.Rows, g.Checksum
		default:
			continue
		}
		res.Mismatches = append(res.Mismatches, mm)
	}
	if len(res.Mismatches) > 0 {
		lines := make([]string, len(res.Mismatches))
		for i, mm := range res.Mismatches {
			lines[i] = mm.String()
		}
		return res, fmt.Errorf("%w: %d of %d tables: %s", engines.ErrMismatch, len(res.Mismatches), res.Tables, strings.Join(lines, "; "))
	}
	return res, nil
}

// checksumSink takes a backup's streams and keeps only its meta document:
// the data is encoded (which is what computes the checksums) and dropped.
type checksumSink struct {
	mu   sync.Mutex
	meta bytes.Buffer
}

func (s *checksumSink) Stream(name string, _ map[string]string) (io.WriteCloser, error) {
	if name == streamMeta {
		return nopCloser{&lockedWriter{mu: &s.mu, w: &s.meta}}, nil
	}
	return nopCloser{io.Discard}, nil
}

func (s *checksumSink) SetServer(*v1.ServerInfo)            {}
func (s *checksumSink) SetConsistency(*v1.ConsistencyPoint) {}
func (s *checksumSink) SetLockDuration(time.Duration)       {}
func (s *checksumSink) SetEngineMetadata(string, string)    {}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
