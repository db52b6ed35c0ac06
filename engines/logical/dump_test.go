package logical

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// mariadbDump returns mariadb-dump's schema of dbs: tables, sequences,
// views, routines, triggers and events, without data, comments or the
// dump date.
func mariadbDump(t *testing.T, m *testenv.MariaDB, dbs ...string) string {
	t.Helper()
	bin := testenv.RequireBinary(t, "mariadb-dump", testenv.MariaDBInstallHint)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(time.Minute))
	defer cancel()
	args := []string{"--no-defaults", "--protocol=tcp", "--host=" + m.Host, "--port=" + strconv.Itoa(m.Port), "--user=tidemark", "--password=tidemark",
		"--routines", "--events", "--triggers", "--no-data", "--skip-dump-date", "--skip-comments", "--databases"}
	out, err := exec.CommandContext(ctx, bin, append(args, dbs...)...).Output()
	if err != nil {
		t.Fatalf("mariadb-dump: %v", err)
	}
	return string(out)
}

// TestMariaDBDumpSameSchema compares mariadb-dump's schema of the
// every-type databases on the source and on a restored copy: the restore
// must recreate every object with every option exactly, line for line.
// There is nothing to normalise: AUTO_INCREMENT counters travel in the
// CREATE TABLE (the data loads below them), sequences' SETVAL is the
// restored state row's next_not_cached_value, events keep their
// STARTS, and the dump date and comments are turned off.
func TestMariaDBDumpSameSchema(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "dump-src")
	dst := startMariaDB(t, "dump-dst")
	loadTypes(t, src)
	a, _ := backupMem(t, smallPieces, engines.BackupParams{DSN: src.DSN, Parallel: 2, IncludeUsers: true})
	restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN, Parallel: 2, IncludeUsers: true})

	want, got := mariadbDump(t, src, "rt", "rt2"), mariadbDump(t, dst, "rt", "rt2")
	if d := lineDiff(want, got); d != "" {
		t.Errorf("mariadb-dump of the restored copy differs from the source's (- source, + restored):\n%s", d)
	}

	// Under new names: the same but for the names, and for triggers
	// created as "TRIGGER rt.x ... ON rt.t", which restore writes
	// unqualified (a qualifier would create them in the old database).
	res := restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN, Parallel: 2, RenameDB: map[string]string{"rt": "rt_r", "rt2": "rt2_r"}})
	got = mariadbDump(t, dst, "rt_r", "rt2_r")
	got = strings.NewReplacer("`rt_r`", "`rt`", "`rt2_r`", "`rt2`").Replace(got)
	want = qualifiedTrigger.ReplaceAllString(want, "TRIGGER `$1` $2 ON `$3`")
	if d := lineDiff(want, got); d != "" {
		t.Errorf("mariadb-dump of the renamed copy differs from the source's (- source, + restored):\n%s", d)
	}

	// Bodies that name the old database unquoted still refer to it: each
	// is named in a warning.
	warned := strings.Join(res.Warnings, "\n")
	for _, o := range []string{"function rt_r.f_reads", "event rt_r.ev_nightly", "event rt_r.ev_once", "event rt_r.ev_replica", "event rt_r.ev_latin1"} {
		if !strings.Contains(warned, o+" names database rt unquoted") {
			t.Errorf("no warning that %s names rt unquoted: %q", o, res.Warnings)
		}
	}
	if n := strings.Count(warned, "unquoted"); n != 5 {
		t.Errorf("%d warnings about unquoted names, want 5: %q", n, res.Warnings)
	}

	// A backup that does not say when the event was last changed (taken
	// before it did): the server drops the passed one, and restore says so.
	var post postDoc
	if err := json.Unmarshal(a.streams[postStream("rt")].buf.Bytes(), &post); err != nil {
		t.Fatal(err)
	}
	for i := range post.Events {
		post.Events[i].Altered = 0
	}
	b, _ := json.Marshal(post)
	a.streams[postStream("rt")].buf.Reset()
	a.streams[postStream("rt")].buf.Write(b)
	res = restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN, Databases: []string{"rt"}, RenameDB: map[string]string{"rt": "rt_old"}})
	if w := strings.Join(res.Warnings, "\n"); !strings.Contains(w, "event rt_old.ev_missed was dropped by the target") || strings.Count(w, "was dropped") != 1 {
		t.Errorf("warnings of a restore that loses an event: %q", res.Warnings)
	}

	// Ordered triggers fire in the source's order.
	srcDB, dstDB := src.DB(t), dst.DB(t)
	var logSrc, logDst string
	if _, err := srcDB.Exec("INSERT INTO rt.audited (id, v) VALUES (2, 2)"); err != nil {
		t.Fatal(err)
	}
	if _, err := dstDB.Exec("INSERT INTO rt.audited (id, v) VALUES (2, 2)"); err != nil {
		t.Fatal(err)
	}
	if err := srcDB.QueryRow("SELECT log FROM rt.audited WHERE id = 2").Scan(&logSrc); err != nil {
		t.Fatal(err)
	}
	if err := dstDB.QueryRow("SELECT log FROM rt.audited WHERE id = 2").Scan(&logDst); err != nil {
		t.Fatal(err)
	}
	if logSrc != "a+bc" || logDst != logSrc {
		t.Errorf("triggers fired in order %q on the restored copy, %q on the source, want a+bc", logDst, logSrc)
	}
	// A latin1 client's literal is latin1 in the copy too.
	const q = "SELECT CONCAT(HEX(rt.f_latin1('a')), ' ', CHARSET(rt.f_latin1('a')), ' ', HEX(ve), ' ', CHARSET(ve)) FROM rt.v_latin1 WHERE id = 1"
	if w, g := queryStrings(t, srcDB, q), queryStrings(t, dstDB, q); !strings.HasPrefix(strings.Join(w, ""), "61E9 latin1 ") || strings.Join(g, "") != strings.Join(w, "") {
		t.Errorf("latin1 objects: source %q, restored %q", w, g)
	}
}

// qualifiedTrigger matches a trigger header written with the database rt.
var qualifiedTrigger = regexp.MustCompile(`TRIGGER rt\.(\w+) ((?:BEFORE|AFTER) \w+) ON rt\.(\w+)`)

// lineDiff lists the lines that differ between a and b, with the line
// numbers of a, or returns "" when they are equal.
func lineDiff(a, b string) string {
	if a == b {
		return ""
	}
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	// Longest common subsequence, to show moved or missing lines as such.
	n, m := len(al), len(bl)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if al[i] == bl[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && al[i] == bl[j]:
			i, j = i+1, j+1
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			out = append(out, fmt.Sprintf("+%d: %s", i+1, bl[j]))
			j++
		default:
			out = append(out, fmt.Sprintf("-%d: %s", i+1, al[i]))
			i++
		}
	}
	return strings.Join(out, "\n")
}
