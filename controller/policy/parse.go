package policy

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/yamlx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// document is the YAML shape of one policy. Durations are strings
// ("90s", "15m", "36h", "7d", "2w").
type document struct {
	Name          string          `yaml:"name"`
	Selector      string          `yaml:"selector"`
	Priority      int32           `yaml:"priority"`
	Backups       []scheduleDoc   `yaml:"backups"`
	Binlog        *binlogDoc      `yaml:"binlog"`
	Retention     *retentionDoc   `yaml:"retention"`
	Repository    string          `yaml:"repository"`
	Copies        []copyDoc       `yaml:"copies"`
	Window        string          `yaml:"window"`
	MaxConcurrent *concurrencyDoc `yaml:"max_concurrent"`
	Portable      bool            `yaml:"portable"`
	History       bool            `yaml:"history"`
}

type scheduleDoc struct {
	Schedule string `yaml:"schedule"`
	Engine   string `yaml:"engine"`
	Prefer   string `yaml:"prefer"`
	CatchUp  string `yaml:"catch_up"`
}

type binlogDoc struct {
	Enabled   bool   `yaml:"enabled"`
	Flush     string `yaml:"flush"`
	RPOTarget string `yaml:"rpo_target"`
}

type retentionDoc struct {
	KeepLast    uint32 `yaml:"keep_last"`
	KeepHourly  uint32 `yaml:"keep_hourly"`
	KeepDaily   uint32 `yaml:"keep_daily"`
	KeepWeekly  uint32 `yaml:"keep_weekly"`
	KeepMonthly uint32 `yaml:"keep_monthly"`
	KeepYearly  uint32 `yaml:"keep_yearly"`
	PITRWindow  string `yaml:"pitr_window"`
}

type copyDoc struct {
	Repository string        `yaml:"repository"`
	Retention  *retentionDoc `yaml:"retention"`
}

type concurrencyDoc struct {
	By    string `yaml:"by"`
	Limit uint32 `yaml:"limit"`
}

// Parsed is one validated policy document.
type Parsed struct {
	Spec *v1.PolicySpec
	// Source is the document alone, as applied.
	Source string
	// Line is its first line in the file.
	Line int
	node *yaml.Node
}

// LineOf is the line of a key of the document (see yamlx.Line).
func (p Parsed) LineOf(path ...string) int { return yamlx.Line(p.node, path...) }

// Engines are the engine names a schedule may ask for.
var Engines = []string{"auto", "logical", "snapshot", "mariabackup", "clone"}

// Flush bounds of a policy's binlog stream (the controller's own).
const (
	MinFlush = 10 * time.Millisecond
	MaxFlush = 10 * time.Minute
	// DefaultCatchUp is a schedule's catch-up window when it names none.
	DefaultCatchUp = 10 * time.Minute
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)

// Parse decodes and validates every document of a policy file (`---`
// separated). Every error names the file, the line, the policy and the key;
// all of them are returned joined, so one run shows every mistake. Two
// documents with one name are refused.
func Parse(file string, data []byte) ([]Parsed, error) {
	docs, err := yamlx.DecodeAll[document](data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s: no policy document in the file", file)
	}
	var (
		out  []Parsed
		errs []error
		seen = map[string]int{}
	)
	for _, d := range docs {
		bad := func(path []string, format string, args ...any) {
			key := strings.Join(path, ".")
			name := d.Value.Name
			if name == "" {
				name = "(unnamed)"
			}
			errs = append(errs, fmt.Errorf("%s:%d: policy %s: %s: %s", file, yamlx.Line(d.Node, path...), name, key, fmt.Sprintf(format, args...)))
		}
		spec := build(d.Value, bad)
		if l, dup := seen[spec.GetName()]; dup && spec.GetName() != "" {
			bad([]string{"name"}, "policy %q is also defined at line %d of this file", spec.GetName(), l)
		}
		seen[spec.GetName()] = d.Line
		out = append(out, Parsed{Spec: spec, Source: d.Source, Line: d.Line, node: d.Node})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

type badFunc func(path []string, format string, args ...any)

func path(p ...string) []string { return p }

func build(d document, bad badFunc) *v1.PolicySpec {
	s := &v1.PolicySpec{Name: d.Name, Selector: d.Selector, Priority: d.Priority, RepositoryUri: d.Repository, Window: d.Window, Portable: d.Portable, History: d.History}
	switch {
	case d.Name == "":
		bad(path("name"), "is required")
	case !nameRE.MatchString(d.Name):
		bad(path("name"), "%q: use lower-case letters, digits, '.', '_' and '-' (at most 63, starting and ending with a letter or digit)", d.Name)
	}
	if sel, err := ParseSelector(d.Selector); err != nil {
		bad(path("selector"), "%v", err)
	} else {
		s.Selector = sel.String()
	}
	for i, b := range d.Backups {
		at := func(k string) []string { return path("backups", strconv.Itoa(i), k) }
		ps := &v1.PolicySchedule{Cron: strings.TrimSpace(b.Schedule), Engine: b.Engine, Prefer: b.Prefer}
		if ps.Cron == "" {
			bad(at("schedule"), "is required (cron with optional seconds, or @hourly, @every 30s, ...)")
		} else if _, err := ParseSchedule(ps.Cron); err != nil {
			bad(at("schedule"), "%v", err)
		}
		if ps.Engine == "" {
			ps.Engine = "auto"
		}
		if !contains(Engines, ps.Engine) {
			bad(at("engine"), "%q: use one of %s", b.Engine, strings.Join(Engines, ", "))
		} else if d.Portable && ps.Engine != "auto" && ps.Engine != "logical" {
			bad(at("engine"), "%s with portable: true: a physical copy restores only onto the server's own flavor and version; use engine auto or logical, or drop portable", ps.Engine)
		}
		if ps.Prefer == "" {
			ps.Prefer = "any"
		}
		if !contains([]string{"replica", "primary", "any"}, ps.Prefer) {
			bad(at("prefer"), "%q: use replica, primary or any", b.Prefer)
		}
		if b.CatchUp != "" {
			c, err := ParseDuration(b.CatchUp)
			if err != nil || c < 0 {
				bad(at("catch_up"), "%q: want a duration such as 30m or 2h", b.CatchUp)
			}
			ps.CatchUp = durationpb.New(c)
		}
		s.Backups = append(s.Backups, ps)
	}
	if b := d.Binlog; b != nil {
		s.Binlog = &v1.PolicyBinlog{Enabled: b.Enabled}
		if b.Flush != "" {
			f, err := ParseDuration(b.Flush)
			if err != nil || f < MinFlush || f > MaxFlush {
				bad(path("binlog", "flush"), "%q: want a duration between %s and %s", b.Flush, MinFlush, MaxFlush)
			}
			s.Binlog.Flush = durationpb.New(f)
		}
		if b.RPOTarget != "" {
			r, err := ParseDuration(b.RPOTarget)
			if err != nil || r <= 0 {
				bad(path("binlog", "rpo_target"), "%q: want a positive duration such as 1m", b.RPOTarget)
			}
			s.Binlog.RpoTarget = durationpb.New(r)
		}
	}
	s.Retention = retention(d.Retention, path("retention"), bad)
	if d.Repository != "" {
		checkRepoURI(d.Repository, path("repository"), bad)
	}
	for i, c := range d.Copies {
		at := path("copies", strconv.Itoa(i))
		if c.Repository == "" {
			bad(append(at, "repository"), "is required")
		} else {
			checkRepoURI(c.Repository, append(at, "repository"), bad)
			if c.Repository == d.Repository {
				bad(append(at, "repository"), "is the policy's own repository; a copy goes to another one")
			}
		}
		s.Copies = append(s.Copies, &v1.CopyTarget{RepositoryUri: c.Repository, Retention: retention(c.Retention, append(at, "retention"), bad)})
	}
	if d.Window != "" {
		if _, err := ParseWindow(d.Window); err != nil {
			bad(path("window"), "%v", err)
		}
	}
	if m := d.MaxConcurrent; m != nil {
		if m.By == "" || m.Limit == 0 {
			bad(path("max_concurrent"), "needs by (a label key, e.g. dc) and a limit of at least 1")
		}
		s.MaxConcurrent = &v1.PolicyConcurrency{By: m.By, Limit: m.Limit}
	}
	if d.Portable && len(s.Backups) == 0 {
		bad(path("portable"), "applies to the policy's scheduled backups, and it has none: add backups, or drop portable")
	}
	if d.History && len(s.Backups) == 0 {
		bad(path("history"), "applies to the policy's scheduled backups, and it has none: add backups, or drop history")
	}
	// Retention or copies alone are a policy too: they apply to backups
	// taken by hand or by another policy's schedules.
	if len(s.Backups) == 0 && !s.GetBinlog().GetEnabled() && s.Retention == nil && len(s.Copies) == 0 {
		bad(path("backups"), "the policy asks for nothing: give backups (schedules), binlog: {enabled: true}, retention or copies")
	}
	return s
}

func retention(r *retentionDoc, at []string, bad badFunc) *v1.RetentionRules {
	if r == nil {
		return nil
	}
	out := &v1.RetentionRules{KeepLast: r.KeepLast, KeepHourly: r.KeepHourly, KeepDaily: r.KeepDaily,
		KeepWeekly: r.KeepWeekly, KeepMonthly: r.KeepMonthly, KeepYearly: r.KeepYearly}
	if r.PITRWindow != "" {
		w, err := ParseDuration(r.PITRWindow)
		if err != nil || w < 0 {
			bad(append(at, "pitr_window"), "%q: want a duration such as 36h or 7d", r.PITRWindow)
		}
		out.PitrWindow = durationpb.New(w)
	}
	if out.KeepLast+out.KeepHourly+out.KeepDaily+out.KeepWeekly+out.KeepMonthly+out.KeepYearly == 0 {
		bad(at, "keeps nothing: give keep_last or a keep_hourly/daily/weekly/monthly/yearly count")
	}
	return out
}

// checkRepoURI refuses a URI the catalog may not hold; whether the
// controller can open it is checked at apply (OpenRepo).
func checkRepoURI(uri string, at []string, bad badFunc) {
	loc, err := location.Parse(uri)
	switch {
	case err != nil:
		bad(at, "%v", err)
	case loc.Scheme == "relay":
		bad(at, "%s: a policy's repository must be one the controller opens itself (file:// or s3://)", uri)
	case location.Redact(uri) != uri:
		bad(at, "%s carries credentials; give them to controllers and agents through their environment", location.Redact(uri))
	}
}

// ParseDuration is time.ParseDuration that also takes days ("7d") and
// weeks ("2w"), alone or as a prefix ("1d12h").
func ParseDuration(s string) (time.Duration, error) {
	var total time.Duration
	rest := strings.TrimSpace(s)
	for _, u := range []struct {
		suffix string
		d      time.Duration
	}{{"w", 7 * 24 * time.Hour}, {"d", 24 * time.Hour}} {
		if i := strings.Index(rest, u.suffix); i > 0 {
			n, err := strconv.Atoi(rest[:i])
			if err != nil {
				return 0, fmt.Errorf("duration %q: %w", s, err)
			}
			total += time.Duration(n) * u.d
			rest = rest[i+1:]
		}
	}
	if rest == "" {
		if total == 0 && strings.TrimSpace(s) == "" {
			return 0, fmt.Errorf("empty duration")
		}
		return total, nil
	}
	d, err := time.ParseDuration(rest)
	if err != nil {
		return 0, err
	}
	return total + d, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
