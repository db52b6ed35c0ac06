package cli

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progress prints a one-line report on stderr: redrawn in place when stderr
// is a terminal, as a plain line every few seconds otherwise (logs, CI).
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	what  string
	start time.Time
	last  time.Time
	drawn bool
}

func newProgress(w io.Writer, what string) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progress{w: w, tty: tty, what: what, start: time.Now()}
}

func (p *progress) due() bool {
	now := time.Now()
	every := 5 * time.Second
	if p.tty {
		every = 250 * time.Millisecond
	}
	if now.Sub(p.last) < every {
		return false
	}
	p.last = now
	return true
}

func (p *progress) print(line string) {
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.drawn = true
	} else {
		fmt.Fprintln(p.w, line)
	}
}

// update reports a count of units.
func (p *progress) update(done, total int64, unit string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.due() && done != total {
		return
	}
	pct := 0.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	p.print(fmt.Sprintf("%s: %d/%d %s (%.0f%%) %s", p.what, done, total, unit, pct, time.Since(p.start).Truncate(time.Second)))
}

// bytes reports a byte count with rate and ETA, plus rows when known.
func (p *progress) bytes(phase string, done, total, rows int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.due() {
		return
	}
	el := time.Since(p.start)
	rate := float64(done) / el.Seconds()
	line := fmt.Sprintf("%s %s: %s", p.what, phase, humanBytes(done))
	if total > 0 {
		line += fmt.Sprintf(" of ~%s (%.0f%%)", humanBytes(total), 100*float64(done)/float64(total))
	}
	if rows > 0 {
		line += fmt.Sprintf(", %d rows", rows)
	}
	line += fmt.Sprintf(", %s/s", humanBytes(int64(rate)))
	if total > done && rate > 0 {
		eta := time.Duration(float64(total-done) / rate * float64(time.Second))
		line += fmt.Sprintf(", ETA %s", eta.Truncate(time.Second))
	}
	p.print(line)
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
	}
}
