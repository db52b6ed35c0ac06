package apply

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestFileStartingInside: an archive segment may start far inside its source
// file (a size-capped segment, a stream that began or moved to a new primary
// mid-file): magic, the file's Format_description, then events whose
// positions are not their offsets in the segment. Plan, the stop position and
// the wait for the applier use the source's positions: the apply returns only
// once the last planned transaction is applied.
func TestFileStartingInside(t *testing.T) {
	src := testenv.StartMariaDB(t)
	db := src.DB(t)
	src.Exec(t, "CREATE DATABASE m", "CREATE TABLE m.t (id INT PRIMARY KEY, pad VARCHAR(2000))")
	var head point
	var mid, stop point
	for i := 1; i <= 400; i++ {
		src.Exec(t, fmt.Sprintf("INSERT INTO m.t VALUES (%d, REPEAT('x', 1500))", i))
		switch i {
		case 1:
			head = record(t, "head", db)
		case 100:
			mid = record(t, "mid", db)
		case 300:
			stop = record(t, "stop", db)
		}
	}
	files := binlogFiles(t, src)
	if len(files) != 1 {
		t.Fatalf("want one binlog file, got %d", len(files))
	}
	whole, err := os.ReadFile(filepath.Join(src.DataDir, files[0].Name))
	if err != nil {
		t.Fatal(err)
	}
	fdeSize := binary.LittleEndian.Uint32(whole[4+9:])
	// The segment: the file's head, then the events from row 101 on.
	seg := append(append([]byte(nil), whole[:4+fdeSize]...), whole[mid.pos:]...)
	segFile := File{Name: files[0].Name, Open: func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(seg)), nil }}

	p := Params{Files: []File{segFile}, StartGTID: mid.gtid, Stop: Stop{File: stop.file, Pos: stop.pos}}
	plan, err := Plan(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Transactions != 200 || plan.First.Pos != mid.pos || plan.Last.End != stop.pos {
		t.Fatalf("plan: %d transactions from %d to %d; want 200 from %d (row 101) to %d (row 300)", plan.Transactions, plan.First.Pos, plan.Last.End, mid.pos, stop.pos)
	}
	_ = head

	dst := testenv.StartMariaDB(t)
	dst.Exec(t, "SET sql_log_bin = 0", "CREATE DATABASE m", "CREATE TABLE m.t (id INT PRIMARY KEY, pad VARCHAR(2000))",
		"INSERT INTO m.t SELECT seq, REPEAT('x', 1500) FROM m.seq_1_to_100")
	p.DSN = dst.DSN
	res := apply(t, p)
	var n, maxID int
	if err := dst.DB(t).QueryRow("SELECT COUNT(*), MAX(id) FROM m.t").Scan(&n, &maxID); err != nil {
		t.Fatal(err)
	}
	if n != 300 || maxID != 300 || res.EndGTID != stop.gtid {
		t.Fatalf("after the apply returned: %d rows up to id %d, end %s; want 300 up to 300 at %s", n, maxID, res.EndGTID, stop.gtid)
	}
}
