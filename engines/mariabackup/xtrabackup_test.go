package mariabackup

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
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
	r := &run{sink: sink, block: 1 << 20, files: map[string]*inflight{}, closed: map[string]bool{}, info: map[string][]byte{}}
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

// TestStreamsRefused: what the engine cannot store front to back is
// refused with the file named, not stored wrong.
func TestStreamsRefused(t *testing.T) {
	seekBack := func(b *bytes.Buffer) {
		chunk(b, xbstream.TypePayload, "aria_log.00000001", 0, []byte("0123456789"))
		b.WriteString(xbstream.Magic)
		b.WriteByte(0)
		b.WriteByte(xbstream.TypeSeek)
		_ = binary.Write(b, binary.LittleEndian, uint32(len("aria_log.00000001")))
		b.WriteString("aria_log.00000001")
		_ = binary.Write(b, binary.LittleEndian, uint64(4))
	}
	twice := func(b *bytes.Buffer) {
		chunk(b, xbstream.TypePayload, "ibdata1", 0, []byte("a"))
		chunk(b, xbstream.TypeEOF, "ibdata1", 0, nil)
		chunk(b, xbstream.TypePayload, "ibdata1", 0, []byte("b"))
	}
	remove := func(b *bytes.Buffer) {
		chunk(b, xbstream.TypeEOF, "x", 0, nil)
		chunk(b, xbstream.TypeRemove, "x", 0, nil)
	}
	escape := func(b *bytes.Buffer) { chunk(b, xbstream.TypePayload, "../etc/passwd", 0, []byte("x")) }
	for name, c := range map[string]struct {
		build func(*bytes.Buffer)
		want  string
	}{
		"seek back": {seekBack, "seeks back to offset 4 after writing 10 bytes"},
		"twice":     {twice, "ibdata1 appears twice"},
		"remove":    {remove, "removes a file"},
		"escape":    {escape, "not a valid entry path"},
	} {
		var b bytes.Buffer
		c.build(&b)
		sink := newMemSink()
		r := &run{sink: sink, block: 1 << 20, files: map[string]*inflight{}, closed: map[string]bool{}, info: map[string][]byte{}}
		err := r.consume(context.Background(), &b, xbstream.DialectMariaDB)
		r.closeAll()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", name, err)
		}
		if sink.open != 0 {
			t.Errorf("%s: %d streams left open", name, sink.open)
		}
	}
}
