package mariabackup

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	"github.com/tidemark-backup/tidemark/internal/xbstream"
)

// TestXtraBackupDouble: MySQL and Percona get xtrabackup, checked against
// the server's series like mariabackup (here a command-level double; no
// MySQL server or xtrabackup runs in these tests), and its stream's
// Percona sparse chunks are stored with their holes as zeros.
func TestXtraBackupDouble(t *testing.T) {
	ctx := context.Background()
	srv := &mysqlx.Server{Flavor: mysqlx.MySQL, Version: "8.0.36", Major: 8, Minor: 0, Patch: 36}
	ok := double(t, "xtrabackup version 8.0.35-30 based on MySQL server 8.0.35 Linux (x86_64) (revision id: 6beb4b49)", "")
	tl, err := (&Engine{XtraBackup: ok, MariaBackup: "/nonexistent"}).toolFor(ctx, srv)
	if err != nil || tl.name != "xtrabackup" || tl.major != 8 || tl.minor != 0 {
		t.Fatalf("xtrabackup 8.0 for MySQL 8.0: %+v %v", tl, err)
	}
	newer := double(t, "xtrabackup version 8.4.0-1 based on MySQL server 8.4.0 Linux (x86_64)", "")
	if _, err := (&Engine{XtraBackup: newer}).toolFor(ctx, srv); err == nil || !strings.Contains(err.Error(), "series 8.0") {
		t.Errorf("xtrabackup 8.4 for MySQL 8.0: %v", err)
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := New().toolFor(ctx, srv); err == nil || !strings.Contains(err.Error(), "percona-xtrabackup-80") {
		t.Errorf("missing xtrabackup: %v", err)
	}

	// A sparse chunk: "abc", a hole of 4, "de"; then a payload after it.
	var s bytes.Buffer
	s.WriteString(xbstream.Magic)
	s.WriteByte(0)
	s.WriteByte(xbstream.TypeSparse)
	_ = binary.Write(&s, binary.LittleEndian, uint32(len("db/t.ibd")))
	s.WriteString("db/t.ibd")
	var body bytes.Buffer
	for _, h := range []xbstream.Hole{{Skip: 0, Len: 3}, {Skip: 4, Len: 2}} {
		_ = binary.Write(&body, binary.LittleEndian, h)
	}
	body.WriteString("abcde")
	_ = binary.Write(&s, binary.LittleEndian, uint32(2))
	_ = binary.Write(&s, binary.LittleEndian, uint64(5))
	_ = binary.Write(&s, binary.LittleEndian, uint64(0))
	_ = binary.Write(&s, binary.LittleEndian, crc32.ChecksumIEEE(body.Bytes()))
	s.Write(body.Bytes())
	chunk(&s, xbstream.TypePayload, "db/t.ibd", 9, []byte("Z"))
	chunk(&s, xbstream.TypeEOF, "db/t.ibd", 0, nil)
	chunk(&s, xbstream.TypePayload, "xtrabackup_binlog_info", 0, []byte("binlog.000003\t157\t3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,\n4e11fa47-71ca-11e1-9e33-c80aa9429562:1-2\n"))
	chunk(&s, xbstream.TypeEOF, "xtrabackup_binlog_info", 0, nil)
	sink := newMemSink()
	r := newRun(sink, 1<<20, t.TempDir(), nil)
	if err := r.consume(ctx, &s, xbstream.DialectPercona); err != nil {
		t.Fatal(err)
	}
	if got := sink.streams["files/datadir/db/t.ibd"].String(); got != "abc\x00\x00\x00\x00deZ" {
		t.Errorf("sparse file stored as %q", got)
	}
	cp, err := r.consistency()
	if err != nil {
		t.Fatal(err)
	}
	if cp.GetBinlogFile() != "binlog.000003" || cp.GetBinlogPosition() != 157 ||
		cp.GetGtidSet() != "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,4e11fa47-71ca-11e1-9e33-c80aa9429562:1-2" {
		t.Errorf("coordinates %v", cp)
	}
	if sink.open != 0 {
		t.Errorf("%d streams left open", sink.open)
	}
}

// seekChunk appends a MariaDB seek chunk.
func seekChunk(b *bytes.Buffer, path string, off uint64) {
	b.WriteString(xbstream.Magic)
	b.WriteByte(0)
	b.WriteByte(xbstream.TypeSeek)
	_ = binary.Write(b, binary.LittleEndian, uint32(len(path)))
	b.WriteString(path)
	_ = binary.Write(b, binary.LittleEndian, off)
}

// renameChunk appends a rename chunk.
func renameChunk(b *bytes.Buffer, from, to string) {
	b.WriteString(xbstream.Magic)
	b.WriteByte(0)
	b.WriteByte(xbstream.TypeRename)
	_ = binary.Write(b, binary.LittleEndian, uint32(len(from)))
	b.WriteString(from)
	_ = binary.Write(b, binary.LittleEndian, uint32(len(to)))
	b.WriteString(to)
}

// TestSpooledFiles: files other than InnoDB's follow the stream's seeks,
// renames, removals and second copies, and are stored when it ends.
func TestSpooledFiles(t *testing.T) {
	var b bytes.Buffer
	chunk(&b, xbstream.TypePayload, "aria_log.00000001", 0, []byte("0123456789"))
	seekChunk(&b, "aria_log.00000001", 4)
	chunk(&b, xbstream.TypePayload, "aria_log.00000001", 4, []byte("ab"))
	chunk(&b, xbstream.TypeEOF, "aria_log.00000001", 0, nil)
	chunk(&b, xbstream.TypePayload, "d/a.MAD", 0, []byte("A"))
	chunk(&b, xbstream.TypeEOF, "d/a.MAD", 0, nil)
	renameChunk(&b, "d/a.MAD", "d/b.MAD")
	chunk(&b, xbstream.TypePayload, "d/c.MAI", 0, []byte("C"))
	chunk(&b, xbstream.TypeEOF, "d/c.MAI", 0, nil)
	chunk(&b, xbstream.TypeRemove, "d/c.MAI", 0, nil)
	chunk(&b, xbstream.TypePayload, "d/e.frm", 0, []byte("old"))
	chunk(&b, xbstream.TypeEOF, "d/e.frm", 0, nil)
	chunk(&b, xbstream.TypePayload, "d/e.frm", 0, []byte("new"))
	chunk(&b, xbstream.TypeEOF, "d/e.frm", 0, nil)
	renameChunk(&b, "d/never.MAD", "d/sent.MAD") // as mbstream: ignored
	chunk(&b, xbstream.TypePayload, "d/t.ibd", 0, []byte("innodb"))
	chunk(&b, xbstream.TypeEOF, "d/t.ibd", 0, nil)
	sink := newMemSink()
	spool := t.TempDir()
	r := newRun(sink, 1<<20, spool, nil)
	ctx := context.Background()
	if err := r.consume(ctx, &b, xbstream.DialectMariaDB); err != nil {
		t.Fatal(err)
	}
	if _, ok := sink.streams["files/datadir/d/t.ibd"]; !ok || len(sink.streams) != 1 {
		t.Errorf("before the end only the InnoDB file is stored: %v", keys(sink.streams))
	}
	if err := r.storeSpooled(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"files/datadir/aria_log.00000001": "0123ab6789",
		"files/datadir/d/b.MAD":           "A",
		"files/datadir/d/e.frm":           "new",
		"files/datadir/d/t.ibd":           "innodb",
	}
	if len(sink.streams) != len(want) {
		t.Errorf("streams %v", keys(sink.streams))
	}
	for n, v := range want {
		if got := sink.streams[n].String(); got != v {
			t.Errorf("%s = %q, want %q", n, got, v)
		}
	}
	if len(r.unsent) != 1 {
		t.Errorf("unsent renames: %v", r.unsent)
	}
	if ents, _ := os.ReadDir(spool); len(ents) != 0 || sink.open != 0 {
		t.Errorf("%d spool files left, %d streams open", len(ents), sink.open)
	}
}

func keys(m map[string]*bytes.Buffer) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestStreamsRefused: what the engine cannot store front to back is
// refused with the file named, not stored wrong.
func TestStreamsRefused(t *testing.T) {
	seekBack := func(b *bytes.Buffer) {
		chunk(b, xbstream.TypePayload, "ibdata1", 0, []byte("0123456789"))
		seekChunk(b, "ibdata1", 4)
	}
	twice := func(b *bytes.Buffer) {
		chunk(b, xbstream.TypePayload, "ibdata1", 0, []byte("a"))
		chunk(b, xbstream.TypeEOF, "ibdata1", 0, nil)
		chunk(b, xbstream.TypePayload, "ibdata1", 0, []byte("b"))
	}
	remove := func(b *bytes.Buffer) {
		chunk(b, xbstream.TypeEOF, "d/t.ibd", 0, nil)
		chunk(b, xbstream.TypeRemove, "d/t.ibd", 0, nil)
	}
	rename := func(b *bytes.Buffer) { renameChunk(b, "d/t.ibd", "d/u.ibd") }
	escape := func(b *bytes.Buffer) { chunk(b, xbstream.TypePayload, "../etc/passwd", 0, []byte("x")) }
	for name, c := range map[string]struct {
		build func(*bytes.Buffer)
		want  string
	}{
		"seek back": {seekBack, "seeks back to offset 4 after writing 10 bytes of an InnoDB file"},
		"twice":     {twice, "ibdata1 appears twice"},
		"remove":    {remove, "removes d/t.ibd"},
		"rename":    {rename, "renames d/t.ibd to d/u.ibd"},
		"escape":    {escape, "not a valid entry path"},
	} {
		var b bytes.Buffer
		c.build(&b)
		sink := newMemSink()
		r := newRun(sink, 1<<20, t.TempDir(), nil)
		err := r.consume(context.Background(), &b, xbstream.DialectMariaDB)
		r.discard()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", name, err)
		}
		if sink.open != 0 {
			t.Errorf("%s: %d streams left open", name, sink.open)
		}
	}
}
