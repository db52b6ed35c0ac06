package policy

import (
	"strings"
	"testing"
	"time"
)

const good = `# two policies
name: prod-db
selector: env=prod, dc in (a,b), role!=scratch
priority: 10
backups:
  - schedule: "0 0 2 * * *"
    engine: logical
    prefer: replica
    catch_up: 2h
  - schedule: "@every 30s"
binlog: {enabled: true, flush: 2s, rpo_target: 1m}
retention:
  keep_last: 3
  keep_daily: 7
  pitr_window: 7d
copies:
  - repository: file:///srv/copy
    retention: {keep_daily: 30}
window: "22:00-04:00"
max_concurrent: {by: dc, limit: 2}
portable: true
history: true
---
name: staging
selector: env=staging
binlog: {enabled: true}
`

func TestParse(t *testing.T) {
	ps, err := Parse("p.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 {
		t.Fatalf("%d policies", len(ps))
	}
	s := ps[0].Spec
	if s.GetName() != "prod-db" || s.GetSelector() != "env=prod,dc in (a,b),role!=scratch" || s.GetPriority() != 10 ||
		len(s.GetBackups()) != 2 || s.GetBackups()[0].GetCatchUp().AsDuration() != 2*time.Hour || s.GetBackups()[1].GetEngine() != "auto" ||
		s.GetBackups()[1].GetPrefer() != "any" || s.GetBinlog().GetRpoTarget().AsDuration() != time.Minute ||
		s.GetRetention().GetPitrWindow().AsDuration() != 7*24*time.Hour || s.GetRetention().GetKeepDaily() != 7 ||
		s.GetCopies()[0].GetRetention().GetKeepDaily() != 30 || s.GetMaxConcurrent().GetLimit() != 2 || s.GetWindow() != "22:00-04:00" ||
		!s.GetPortable() || ps[1].Spec.GetPortable() || !s.GetHistory() || ps[1].Spec.GetHistory() {
		t.Fatalf("spec %v", s)
	}
	if ps[1].Line != 24 || !strings.Contains(ps[1].Source, "env=staging") {
		t.Fatalf("second document line %d source %q", ps[1].Line, ps[1].Source)
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		{"name: a\nselector: env=prod\nbackups:\n  - schedule: '@hourly'\n    engin: logical\n", "f.yaml: document 1: line 5: unknown key engin"},
		{"name: a\nbackups:\n  - schedule: '61 * * * *'\n", "f.yaml:3: policy a: backups.0.schedule: schedule \"61 * * * *\""},
		{"name: a\nselector: env in prod\nbinlog: {enabled: true}\n", "f.yaml:2: policy a: selector: selector \"env in prod\" at column 8: expected '('"},
		{"name: a\nbinlog: {enabled: true, flush: 1h}\n", "f.yaml:2: policy a: binlog.flush: \"1h\": want a duration between"},
		{"name: a\nbinlog: {enabled: true}\nrepository: s3://bucket/p?secret_key=x\n", "credentials in the URI are not accepted"},
		{"name: a\nbinlog: {enabled: true}\nrepository: relay://h:1\n", "f.yaml:3: policy a: repository: relay://h:1"},
		{"name: a\nbinlog: {enabled: true}\nwindow: 25:00-01:00\n", "policy a: window: window \"25:00-01:00\""},
		{"name: a\nbinlog: {enabled: true}\nretention: {pitr_window: 3d}\n", "f.yaml:3: policy a: retention: keeps nothing"},
		{"name: a\nbinlog: {enabled: true}\nmax_concurrent: {by: dc}\n", "policy a: max_concurrent: needs by"},
		{"name: a\nbackups:\n  - schedule: '@hourly'\n    prefer: secondary\n", "f.yaml:4: policy a: backups.0.prefer: \"secondary\""},
		{"name: a\n", "policy a: backups: the policy asks for nothing"},
		{"name: A b\nbinlog: {enabled: true}\n", "f.yaml:1: policy A b: name:"},
		{"selector: x\nbinlog: {enabled: true}\n", "policy (unnamed): name: is required"},
		{"name: a\nbinlog: {enabled: true}\n---\nname: a\nbinlog: {enabled: true}\n", "f.yaml:4: policy a: name: policy \"a\" is also defined at line 1"},
		{"name: a\nbinlog: {enabled: yes please}\n", "line 2: cannot unmarshal"},
		{"", "no policy document"},
		{"name: a\nbackups:\n  - schedule: '@every 100ms'\n", "@every needs at least 1s"},
		{"name: a\nportable: true\nbackups:\n  - schedule: '@hourly'\n    engine: snapshot\n", "f.yaml:5: policy a: backups.0.engine: snapshot with portable: true: a physical copy restores only onto the server's own flavor and version; use engine auto or logical, or drop portable"},
		{"name: a\nportable: true\nbinlog: {enabled: true}\n", "f.yaml:2: policy a: portable: applies to the policy's scheduled backups, and it has none"},
		{"name: a\nportable: yes please\nbackups:\n  - schedule: '@hourly'\n", "line 2: cannot unmarshal"},
		{"name: a\nhistory: true\nretention: {keep_last: 3}\n", "f.yaml:2: policy a: history: applies to the policy's scheduled backups, and it has none: add backups, or drop history"},
	} {
		_, err := Parse("f.yaml", []byte(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q:\n got %v\nwant %q", c.doc, err, c.want)
		}
	}
}

func TestScheduleMath(t *testing.T) {
	s, err := ParseSchedule("@every 10s")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	first, last, n := Between(s, t0, t0.Add(35*time.Second), 100)
	if n != 3 || !first.Equal(t0.Add(10*time.Second)) || !last.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("between: %v %v %d", first, last, n)
	}
	_, last, n = Between(s, t0, t0.Add(24*time.Hour), 50)
	if !last.Equal(t0.Add(24*time.Hour)) || n < 8600 || n > 8640 {
		t.Fatalf("a day of @every 10s: last %v, n %d (want about 8640)", last, n)
	}
	c, err := ParseSchedule("30 0 * * * *") // seconds field: 00:00:30 of every hour
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Next(t0); !got.Equal(t0.Add(30 * time.Second)) {
		t.Fatalf("six-field cron next %v", got)
	}
	if p := Period(c, t0); p != time.Hour {
		t.Fatalf("period %v", p)
	}
	// Spread: deterministic, within a tenth of the period.
	d1 := DueAt("p", "db1", t0, time.Hour, "")
	if d1 != DueAt("p", "db1", t0, time.Hour, "") || d1.Before(t0) || d1.After(t0.Add(6*time.Minute)) {
		t.Fatalf("due %v", d1)
	}
	if DueAt("p", "db2", t0, time.Hour, "").Equal(d1) {
		t.Fatalf("two instances got one start time")
	}
	// Window: a run at 12:00 with window 22:00-04:00 (wrapping) starts in
	// 22:00..04:00 of the night after.
	noon := t0.Add(12 * time.Hour)
	for _, k := range []string{"a", "b", "c", "d"} {
		d := DueAt("p", k, noon, 24*time.Hour, "22:00-04:00")
		if d.Before(t0.Add(22*time.Hour)) || !d.Before(t0.Add(28*time.Hour)) {
			t.Fatalf("%s due %v outside the window", k, d)
		}
	}
	// Inside the window (01:00, wrapped from yesterday's): spread over the
	// rest of it.
	d := DueAt("p", "a", t0.Add(time.Hour), 24*time.Hour, "22:00-04:00")
	if d.Before(t0.Add(time.Hour)) || !d.Before(t0.Add(4*time.Hour)) {
		t.Fatalf("due %v", d)
	}
	id := RunID("p", 0, "db1", t0)
	if id != RunID("p", 0, "db1", t0.UTC()) || !strings.HasPrefix(id, "sched-") || id == RunID("p", 1, "db1", t0) ||
		id == RunID("p", 0, "db1", t0.Add(time.Second)) || id == RunID("p", 0, "db2", t0) {
		t.Fatal("run ids")
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"7d": 7 * 24 * time.Hour, "1w": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "90s": 90 * time.Second} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	for _, in := range []string{"", "d", "xd", "5 parsecs"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}
