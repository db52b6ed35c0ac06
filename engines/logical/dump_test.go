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

// mariadbDump runs mariadb-dump on m with args, no comments and no dump
// date, and returns what it prints.
func mariadbDump(t *testing.T, m *testenv.MariaDB, args ...string) string {
	t.Helper()
	bin := testenv.RequireBinary(t, "mariadb-dump", testenv.MariaDBInstallHint)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(time.Minute))
	defer cancel()
	base := []string{"--no-defaults", "--protocol=tcp", "--host=" + m.Host, "--port=" + strconv.Itoa(m.Port), "--user=tidemark",
		"--skip-dump-date", "--skip-comments"}
	out, err := exec.CommandContext(ctx, bin, append(base, args...)...).Output()
	if err != nil {
		t.Fatalf("mariadb-dump %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

// What the comparisons dump: the schema (tables, sequences, views,
// routines, triggers, events), and the rows in key order, binary strings
// in hex, system-versioned tables with their history.
var (
	schemaDump = []string{"--routines", "--events", "--triggers", "--no-data", "--databases"}
	dataDump   = []string{"--no-create-info", "--order-by-primary", "--skip-extended-insert", "--hex-blob", "--dump-history", "--databases"}
)

// TestMariaDBDumpSame compares mariadb-dump's schema and rows of the
// every-type databases on the source and on a restored copy: the restore
// must recreate every object with every option exactly, line for line.
// Under the same names nothing is normalised: AUTO_INCREMENT counters
// travel in the CREATE TABLE (the data loads below them), a sequence's
// SETVAL is its restored next_not_cached_value, events print their STARTS,
// each object's client character set comes back, and the dump date and
// comments are turned off. Under new names, the names are mapped back and
// qualified trigger headers are expected unqualified (see below).
func TestMariaDBDumpSame(t *testing.T) {
	t.Parallel()
	// The source's default time zone is not the target's (UTC here): what
	// either prints in its own must not leak into the copy.
	src := startMariaDB(t, "dump-src", "--default-time-zone=+03:00")
	dst := startMariaDB(t, "dump-dst")
	loadTypes(t, src)
	a, _ := backupMem(t, smallPieces, engines.BackupParams{DSN: src.DSN, History: true, Parallel: 2, IncludeUsers: true})
	restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN, Parallel: 2, IncludeUsers: true})

	if d := lineDiff(mariadbDump(t, src, append(dataDump, "rt", "rt2")...), mariadbDump(t, dst, append(dataDump, "rt", "rt2")...)); d != "" {
		t.Errorf("mariadb-dump of the restored rows differs from the source's (- source, + restored):\n%s", d)
	}
	want, got := mariadbDump(t, src, append(schemaDump, "rt", "rt2")...), mariadbDump(t, dst, append(schemaDump, "rt", "rt2")...)
	if d := lineDiff(want, got); d != "" {
		t.Errorf("mariadb-dump of the restored copy differs from the source's (- source, + restored):\n%s", d)
	}

	// Under new names: the same but for the names, and for triggers
	// created as "TRIGGER rt.x ... ON rt.t", which restore writes
	// unqualified (a qualifier would create them in the old database).
	res := restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN, Parallel: 2, RenameDB: map[string]string{"rt": "rt_r", "rt2": "rt2_r"}})
	got = mariadbDump(t, dst, append(schemaDump, "rt_r", "rt2_r")...)
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
	// Packages, which mariadb-dump (10.11) leaves out, and aggregate
	// functions work in the copy.
	if got := queryStrings(t, dstDB, "SELECT CONCAT(rt.pkg.twice(21), ' ', (SELECT rt.f_agg(id) FROM rt.parent))"); strings.Join(got, "") != "42 5050" {
		t.Errorf("package function and aggregate on the restored copy: %v", got)
	}
	// A latin1 client's literal is latin1 in the copy too.
	const q = "SELECT CONCAT(HEX(rt.f_latin1('a')), ' ', CHARSET(rt.f_latin1('a')), ' ', HEX(ve), ' ', CHARSET(ve)) FROM rt.v_latin1 WHERE id = 1"
	if w, g := queryStrings(t, srcDB, q), queryStrings(t, dstDB, q); !strings.HasPrefix(strings.Join(w, ""), "61E9 latin1 ") || strings.Join(g, "") != strings.Join(w, "") {
		t.Errorf("latin1 objects: source %q, restored %q", w, g)
	}
}

// qualifiedTrigger matches a trigger header written with the database rt.
var qualifiedTrigger = regexp.MustCompile(`TRIGGER rt\.(\w+) ((?:BEFORE|AFTER) \w+) ON rt\.(\w+)`)

// lineDiff lists the lines that differ between a and b, numbered as in a,
// or returns "" when they are equal. Past the common head and tail, up to
// 2000 lines each are matched up (longest common subsequence); beyond
// that only the first differing lines are listed.
func lineDiff(a, b string) string {
	if a == b {
		return ""
	}
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	head := 0
	for head < len(al) && head < len(bl) && al[head] == bl[head] {
		head++
	}
	tail := 0
	for tail < len(al)-head && tail < len(bl)-head && al[len(al)-1-tail] == bl[len(bl)-1-tail] {
		tail++
	}
	am, bm := al[head:len(al)-tail], bl[head:len(bl)-tail]
	const limit = 2000
	if len(am) > limit || len(bm) > limit {
		var out []string
		for k := 0; k < 20 && (k < len(am) || k < len(bm)); k++ {
			if k < len(am) {
				out = append(out, fmt.Sprintf("-%d: %s", head+k+1, am[k]))
			}
			if k < len(bm) {
				out = append(out, fmt.Sprintf("+%d: %s", head+k+1, bm[k]))
			}
		}
		return strings.Join(append(out, fmt.Sprintf("... %d lines against %d differ from line %d on", len(am), len(bm), head+1)), "\n")
	}
	n, m := len(am), len(bm)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if am[i] == bm[j] {
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
		case i < n && j < m && am[i] == bm[j]:
			i, j = i+1, j+1
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			out = append(out, fmt.Sprintf("+%d: %s", head+i+1, bm[j]))
			j++
		default:
			out = append(out, fmt.Sprintf("-%d: %s", head+i+1, am[i]))
			i++
		}
	}
	return strings.Join(out, "\n")
}

func TestLineDiff(t *testing.T) {
	for _, tc := range []struct{ a, b, want string }{
		{"x\ny", "x\ny", ""},
		{"x\ny\nz", "x\nz", "-2: y"},
		{"x\nz", "x\ny\nz", "+2: y"},
		{"a\nb\nc", "a\nB\nc", "+2: B\n-2: b"},
	} {
		if got := lineDiff(tc.a, tc.b); got != tc.want {
			t.Errorf("lineDiff(%q, %q) = %q, want %q", tc.a, tc.b, got, tc.want)
		}
	}
	big := strings.Repeat("same\n", 5000)
	if got := lineDiff(big+"x", big+"y"); got != "+5001: y\n-5001: x" {
		t.Errorf("long inputs: %q", got)
	}
	if got := lineDiff(strings.Repeat("a\n", 3000), strings.Repeat("b\n", 3000)); !strings.Contains(got, "3000 lines against 3000 differ from line 1 on") {
		t.Errorf("long differences: %q", got)
	}
}
