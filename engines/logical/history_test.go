package logical

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/engines"
)

// TestHistoryFlag: without History a backup holds the current rows of
// system-versioned tables only and warns naming each and --history, and
// its restore says so; with History the whole history, periods included,
// comes back, and the manifest and the meta say it is there. Both verify.
func TestHistoryFlag(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "hist-src")
	dst := startMariaDB(t, "hist-dst")
	src.Exec(t, "CREATE DATABASE hf", "USE hf",
		"CREATE TABLE hf.implicit (id INT PRIMARY KEY, v INT) WITH SYSTEM VERSIONING",
		`CREATE TABLE hf.named (id INT PRIMARY KEY, v INT, rs TIMESTAMP(6) GENERATED ALWAYS AS ROW START INVISIBLE,
  re TIMESTAMP(6) GENERATED ALWAYS AS ROW END INVISIBLE, PERIOD FOR SYSTEM_TIME(rs, re)) WITH SYSTEM VERSIONING`,
		"CREATE TABLE hf.plain (id INT PRIMARY KEY)",
		"INSERT INTO hf.implicit SELECT seq, 0 FROM seq_1_to_30", "INSERT INTO hf.named SELECT seq, 0 FROM seq_1_to_20", "INSERT INTO hf.plain VALUES (1)",
		"UPDATE hf.implicit SET v = 1 WHERE id <= 10", "DELETE FROM hf.implicit WHERE id > 25", "UPDATE hf.named SET v = v + 1", "UPDATE hf.named SET v = v + 1 WHERE id = 1")
	srcDB, dstDB := src.DB(t), dst.DB(t)
	const (
		implicitAll = "SELECT id, v, CONCAT(row_start), CONCAT(row_end) FROM %s.implicit FOR SYSTEM_TIME ALL"
		namedAll    = "SELECT id, v, CONCAT(rs), CONCAT(re) FROM %s.named FOR SYSTEM_TIME ALL"
	)
	meta := func(a *memArchive) metaDoc {
		t.Helper()
		var m metaDoc
		if err := json.Unmarshal(a.streams[streamMeta].buf.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}

	// Without History: current rows, and the warning.
	a, res := backupMem(t, smallPieces, engines.BackupParams{DSN: src.DSN})
	w := strings.Join(res.Warnings, "\n")
	if !strings.Contains(w, "current rows only, not their history: hf.implicit, hf.named; back up with --history") || strings.Contains(w, "hf.plain") {
		t.Errorf("backup without history: warnings %q", res.Warnings)
	}
	if res.Rows != 25+20+1 {
		t.Errorf("backup without history: %d rows, want the 46 current ones", res.Rows)
	}
	if m := meta(a); m.History || a.metadata[MetaHistory] != "" {
		t.Errorf("a backup without history records history: meta %v, manifest %q", m.History, a.metadata[MetaHistory])
	} else {
		for _, tm := range m.Tables {
			if tm.History || tm.CurrentOnly != (tm.Name != "plain") {
				t.Errorf("table %s: history %v, current rows only %v", tm.Name, tm.History, tm.CurrentOnly)
			}
		}
	}
	rres := restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN, RenameDB: map[string]string{"hf": "hf_cur"}})
	if w := strings.Join(rres.Warnings, "\n"); !strings.Contains(w, "only the current rows of the system-versioned hf_cur.implicit, hf_cur.named (it was taken without --history)") {
		t.Errorf("restore without history: warnings %q", rres.Warnings)
	}
	for _, q := range []string{"SELECT id, v FROM %s.implicit", "SELECT id, v FROM %s.named"} {
		want, got := queryStrings(t, srcDB, fmt.Sprintf(q, "hf")), queryStrings(t, dstDB, fmt.Sprintf(q+" FOR SYSTEM_TIME ALL", "hf_cur"))
		if strings.Join(want, ",") != strings.Join(got, ",") {
			t.Errorf("restored without history, every version: %v, want the current rows %v", got, want)
		}
	}
	if _, err := smallPieces.Verify(context.Background(), engines.VerifyParams{DSN: dst.DSN, Source: a, RenameDB: map[string]string{"hf": "hf_cur"}}); err != nil {
		t.Errorf("verify without history: %v", err)
	}

	// With History: every version and period.
	a, res = backupMem(t, smallPieces, engines.BackupParams{DSN: src.DSN, History: true})
	if w := strings.Join(res.Warnings, "\n"); strings.Contains(w, "history") {
		t.Errorf("backup with history warns: %q", res.Warnings)
	}
	if res.Rows != 40+41+1 {
		t.Errorf("backup with history: %d rows, want 40 + 41 row versions + 1", res.Rows)
	}
	if m := meta(a); !m.History || a.metadata[MetaHistory] != "true" {
		t.Errorf("a backup with history does not say so: meta %v, manifest %q", m.History, a.metadata[MetaHistory])
	}
	rres = restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN})
	if w := strings.Join(rres.Warnings, "\n"); strings.Contains(w, "history") {
		t.Errorf("restore with history warns: %q", rres.Warnings)
	}
	for q, n := range map[string]int{implicitAll: 40, namedAll: 41} {
		want, got := queryStrings(t, srcDB, fmt.Sprintf(q, "hf")), queryStrings(t, dstDB, fmt.Sprintf(q, "hf"))
		if len(want) != n || strings.Join(want, "\n") != strings.Join(got, "\n") {
			t.Errorf("restored history differs\nsource:\n%s\nrestored:\n%s", strings.Join(want, "\n"), strings.Join(got, "\n"))
		}
	}
	if _, err := smallPieces.Verify(context.Background(), engines.VerifyParams{DSN: dst.DSN, Source: a}); err != nil {
		t.Errorf("verify with history: %v", err)
	}
}
