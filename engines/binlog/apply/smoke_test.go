package apply

import (
	"testing"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

func TestSmoke(t *testing.T) {
	src := testenv.StartMariaDB(t)
	src.Exec(t, "CREATE DATABASE d", "CREATE TABLE d.t (id INT PRIMARY KEY, v VARCHAR(20))",
		"INSERT INTO d.t VALUES (1,'a'),(2,'b')", "FLUSH BINARY LOGS", "UPDATE d.t SET v='c' WHERE id=1", "INSERT INTO d.t VALUES (3,'x')")
	p := record(t, "end", src.DB(t))
	files := snapshotFiles(t, binlogFiles(t, src), "")
	for _, m := range []string{MethodReplication, MethodSQL} {
		dst := testenv.StartMariaDB(t)
		res := apply(t, Params{DSN: dst.DSN, Files: files, Method: m})
		t.Logf("%s: %+v", m, res)
		sumsEqual(t, m, testenv.Checksums(t, dst.DB(t)), p.sums)
	}
}
