package logical

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/engines"
)

// TestVerify: a restore verified against the backup's row checksums passes
// when exact, whatever the renames; a value the target changed, a lost row
// and a duplicated row are each named with both row counts and checksums;
// tables outside the restore's selection are not read.
func TestVerify(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "verify-src")
	dst := startMariaDB(t, "verify-dst")
	loadTypes(t, src)
	src.Exec(t, "CREATE DATABASE vf",
		"CREATE TABLE vf.changed (id INT PRIMARY KEY, ip INET6, u UUID)",
		"CREATE TABLE vf.lost (id INT PRIMARY KEY, v VARCHAR(20))",
		"CREATE TABLE vf.dup (v VARCHAR(20))", // no key: a row can be loaded twice
		"CREATE TABLE vf.same (id INT PRIMARY KEY, v BLOB)")
	for i := 1; i <= 300; i++ {
		src.Exec(t, fmt.Sprintf("INSERT INTO vf.changed VALUES (%d, '::ffff:10.0.%d.%d', UUID())", i, i/256, i%256),
			fmt.Sprintf("INSERT INTO vf.lost VALUES (%d, 'row %d')", i, i),
			fmt.Sprintf("INSERT INTO vf.dup VALUES ('row %d')", i),
			fmt.Sprintf("INSERT INTO vf.same VALUES (%d, REPEAT('x', %d))", i, i*50))
	}
	a, _ := backupMem(t, smallPieces, engines.BackupParams{DSN: src.DSN, History: true})
	ctx := context.Background()
	verify := func(p engines.VerifyParams) (*engines.VerifyResult, error) {
		p.DSN, p.Source = dst.DSN, a
		return smallPieces.Verify(ctx, p)
	}

	restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN})
	res, err := verify(engines.VerifyParams{})
	if err != nil || res.Tables < 10 || len(res.Mismatches) != 0 {
		t.Fatalf("verify of an exact restore: %+v, %v", res, err)
	}
	restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN, Databases: []string{"vf"}, RenameDB: map[string]string{"vf": "vf2"}})
	if res, err := verify(engines.VerifyParams{Databases: []string{"vf"}, RenameDB: map[string]string{"vf": "vf2"}}); err != nil || res.Tables != 4 {
		t.Fatalf("verify of a renamed restore: %+v, %v", res, err)
	}

	dst.Exec(t, "UPDATE vf.changed SET ip = '::ffff:10.9.9.9' WHERE id = 17",
		"DELETE FROM vf.lost WHERE id = 200",
		"INSERT INTO vf.dup VALUES ('row 5')")
	res, err = verify(engines.VerifyParams{})
	if !errors.Is(err, engines.ErrMismatch) || len(res.Mismatches) != 3 {
		t.Fatalf("verify after three planted differences: %+v, %v", res, err)
	}
	byTable := map[string]engines.TableMismatch{}
	for _, m := range res.Mismatches {
		byTable[m.Table] = m
	}
	if m := byTable["vf.changed"]; m.GotRows != 300 || m.WantRows != 300 || m.GotChecksum == m.WantChecksum {
		t.Errorf("changed value: %+v", m)
	}
	if m := byTable["vf.lost"]; m.GotRows != 299 || m.WantRows != 300 {
		t.Errorf("lost row: %+v", m)
	}
	if m := byTable["vf.dup"]; m.GotRows != 301 || m.WantRows != 300 {
		t.Errorf("duplicated row: %+v", m)
	}
	for _, name := range []string{"vf.changed", "vf.lost", "vf.dup"} {
		if !strings.Contains(err.Error(), name+": backup 300 rows, checksum "+byTable[name].WantChecksum) {
			t.Errorf("the error does not name %s with the backup's figures: %v", name, err)
		}
	}
	t.Logf("verify reads: %v", err)
	// Only what the restore selected is compared: vf.same is exact.
	if res, err := verify(engines.VerifyParams{Tables: []string{"vf.same"}}); err != nil || res.Tables != 1 {
		t.Errorf("verify of one exact table: %+v, %v", res, err)
	}
	dst.Exec(t, "DROP TABLE vf.same")
	if _, err := verify(engines.VerifyParams{Tables: []string{"vf.same"}}); !errors.Is(err, engines.ErrMismatch) || !strings.Contains(err.Error(), "vf.same: missing on the target") {
		t.Errorf("verify of a table the target lacks: %v", err)
	}
}
