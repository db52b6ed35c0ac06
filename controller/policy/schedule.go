package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a schedule: a cron expression of five fields, or
// six with seconds first, or a descriptor (@yearly, @monthly, @weekly,
// @daily, @hourly, @every DURATION). Times are UTC.
func ParseSchedule(spec string) (cron.Schedule, error) {
	s, err := cronParser.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %w", spec, err)
	}
	if strings.HasPrefix(spec, "@every") {
		// robfig rounds @every below a second up to a second; say so
		// rather than run at another rate than written.
		d, derr := time.ParseDuration(strings.TrimSpace(strings.TrimPrefix(spec, "@every")))
		if derr == nil && d < time.Second {
			return nil, fmt.Errorf("schedule %q: @every needs at least 1s", spec)
		}
	}
	return s, nil
}

// Period estimates a schedule's period around t: the gap between its next
// two runs.
func Period(s cron.Schedule, t time.Time) time.Duration {
	a := s.Next(t)
	return s.Next(a).Sub(a)
}

// Between returns the runs of s after floor and at or before t: the
// first, the last and how many. The count is exact up to limit runs;
// beyond, the walk jumps to two periods before t and estimates the runs it
// stepped over from the period (an `@every 1s` schedule after a day without
// a leader is not walked second by second).
func Between(s cron.Schedule, floor, t time.Time, limit int) (first, last time.Time, n int) {
	for x := s.Next(floor); !x.IsZero() && !x.After(t); x = s.Next(x) {
		if n == 0 {
			first = x
		}
		last = x
		n++
		if n == limit {
			p := max(Period(s, x), time.Second)
			if back := t.Add(-2 * p); back.After(x) {
				n += int(back.Sub(x) / p)
				x = back
			}
		}
	}
	return first, last, n
}

// Window is a daily UTC span when scheduled backups may start.
type Window struct {
	// Minutes after midnight; End < Start wraps midnight.
	Start, End int
}

// ParseWindow parses "HH:MM-HH:MM" (UTC; the end may be before the start:
// the window wraps midnight).
func ParseWindow(s string) (Window, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return Window{}, fmt.Errorf("window %q: want HH:MM-HH:MM (UTC), e.g. 01:00-05:00", s)
	}
	parse := func(x string) (int, error) {
		h, m, ok := strings.Cut(strings.TrimSpace(x), ":")
		hh, err1 := strconv.Atoi(h)
		mm, err2 := strconv.Atoi(m)
		if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || (hh == 24 && mm != 0) {
			return 0, fmt.Errorf("window %q: %q is not a time of day HH:MM", s, x)
		}
		return hh*60 + mm, nil
	}
	st, err := parse(a)
	if err != nil {
		return Window{}, err
	}
	en, err := parse(b)
	if err != nil {
		return Window{}, err
	}
	if st%1440 == en%1440 {
		return Window{}, fmt.Errorf("window %q is empty: start and end are the same time", s)
	}
	return Window{Start: st % 1440, End: en % 1440}, nil
}

// open returns the window span containing t, or the next one after t.
func (w Window) open(t time.Time) (from, to time.Time) {
	t = t.UTC()
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	length := time.Duration((w.End-w.Start+1440)%1440) * time.Minute
	// The span that started yesterday may still be open (wrapping).
	for _, d := range []time.Time{day.AddDate(0, 0, -1), day, day.AddDate(0, 0, 1)} {
		from = d.Add(time.Duration(w.Start) * time.Minute)
		to = from.Add(length)
		if t.Before(to) {
			if t.After(from) {
				return t, to
			}
			return from, to
		}
	}
	return from, to // not reached: tomorrow's span ends after t
}

// MaxSpread bounds the spread of start times without a window.
const MaxSpread = 10 * time.Minute

// DueAt is when a run scheduled for t starts: with a window, t moved to
// the window's next opening when outside it, then spread over what is
// left of that opening; without one, spread over a tenth of the period
// (at most MaxSpread). The spread is a hash of (policy, run key), so each
// instance keeps its offset run after run and a fleet does not start as
// one burst.
func DueAt(policyName, runKey string, t time.Time, period time.Duration, window string) time.Time {
	h := sha256.Sum256([]byte(policyName + "\x00" + runKey))
	frac := float64(binary.BigEndian.Uint64(h[:8])) / float64(^uint64(0))
	if w, err := ParseWindow(window); err == nil && window != "" {
		from, to := w.open(t)
		return from.Add(time.Duration(frac * float64(to.Sub(from))))
	}
	spread := min(period/10, MaxSpread)
	return t.Add(time.Duration(frac * float64(spread)))
}

// RunID is the job id of a scheduled run, derived from (policy, schedule
// index, run key, scheduled time) alone: any leader computes the same, and
// the FSM refuses a second job with it.
func RunID(policyName string, index uint32, runKey string, t time.Time) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d\x00%s\x00%d", policyName, index, runKey, t.UTC().UnixNano()))
	return "sched-" + hex.EncodeToString(h[:10])
}

// SkipID is the id of a skip record whose first skipped run is t.
func SkipID(policyName string, index uint32, runKey string, t time.Time) string {
	return "skip-" + strings.TrimPrefix(RunID(policyName, index, runKey, t), "sched-")
}
