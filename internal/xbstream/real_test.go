package xbstream

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestRealStream reads real `mariabackup --backup --stream=xbstream
// --parallel=4` output and compares every file with what `mbstream -x`
// extracts from the same bytes: the same set of files, byte-equal. The
// stream interleaves files (some file's chunks are separated by another
// file's), which the test checks happened.
func TestRealStream(t *testing.T) {
	mb := testenv.RequireBinary(t, "mariabackup", "apt-get install -y mariadb-backup")
	mbstream := testenv.RequireBinary(t, "mbstream", "apt-get install -y mariadb-backup")
	m := testenv.StartMariaDB(t)
	m.Exec(t, "CREATE DATABASE d",
		"CREATE TABLE d.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(200)) ENGINE=InnoDB",
		"INSERT INTO d.t (v) SELECT REPEAT(MD5(seq), 6) FROM d.seq_1_to_20000",
		"CREATE TABLE d.a (id INT, v TEXT) ENGINE=Aria", "INSERT INTO d.a SELECT seq, MD5(seq) FROM d.seq_1_to_1000",
		"CREATE TABLE d.m (id INT) ENGINE=MyISAM")
	dir := t.TempDir()
	cmd := exec.Command(mb, "--no-defaults", "--backup", "--stream=xbstream", "--parallel=4",
		"--target-dir="+filepath.Join(dir, "tmp"), "--socket="+m.Socket, "--user=root", "--datadir="+m.DataDir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stream, err := cmd.Output()
	if err != nil {
		t.Fatalf("mariabackup: %v\n%s", err, stderr.Bytes())
	}

	files, err := readAll(t, bytes.NewReader(stream), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Interleaving: a file whose end-of-file chunk is not right after its
	// last payload.
	x := NewReader(bytes.NewReader(stream), Options{})
	last, interleaved := "", false
	for {
		c, err := x.Next()
		if err != nil {
			break
		}
		if c.Type == TypeEOF && last != c.Path && last != "" {
			if _, ok := files[c.Path]; ok && len(files[c.Path]) > 0 {
				interleaved = true
			}
		}
		last = c.Path
	}
	if !interleaved {
		t.Log("no interleaving in this run (files copied one after another)")
	}

	ext := filepath.Join(dir, "x")
	if err := os.Mkdir(ext, 0o700); err != nil {
		t.Fatal(err)
	}
	x2 := exec.Command(mbstream, "-x", "-C", ext)
	x2.Stdin = bytes.NewReader(stream)
	if out, err := x2.CombinedOutput(); err != nil {
		t.Fatalf("mbstream -x: %v\n%s", err, out)
	}
	seen := 0
	err = filepath.WalkDir(ext, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(ext, p)
		want, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		got, ok := files[filepath.ToSlash(rel)]
		if !ok {
			t.Errorf("%s: extracted by mbstream, not by the reader", rel)
		} else if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes from the reader, %d from mbstream, contents differ", rel, len(got), len(want))
		}
		seen++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(files) || seen < 100 {
		t.Errorf("mbstream extracted %d files, the reader %d", seen, len(files))
	}
	if len(files["ibdata1"]) < 10<<20 || len(files["d/t.ibd"]) == 0 && len(files["d/t.new"]) == 0 {
		t.Errorf("ibdata1 %d bytes, d/t.ibd %d: the stream lacks the data", len(files["ibdata1"]), len(files["d/t.ibd"]))
	}
	t.Logf("%d files, %d stream bytes, interleaved %v", len(files), len(stream), interleaved)
}
