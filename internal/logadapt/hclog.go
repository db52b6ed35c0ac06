package logadapt

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// Hclog is an hclog.Logger writing to a slog.Logger. Its level filter is
// its own (raft's --raft-log-level), applied before the slog handler's.
type Hclog struct {
	log   *slog.Logger
	name  string
	level *atomic.Int32
	args  []any
}

var _ hclog.Logger = (*Hclog)(nil)

// NewHclog returns an hclog.Logger named name (a "logger" attribute) that
// passes lines at level and above to l.
func NewHclog(l *slog.Logger, name string, level hclog.Level) *Hclog {
	lv := &atomic.Int32{}
	lv.Store(int32(level))
	return &Hclog{log: l, name: name, level: lv}
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Info, hclog.NoLevel, hclog.DefaultLevel:
		return slog.LevelInfo
	case hclog.Warn:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func (h *Hclog) enabled(l hclog.Level) bool {
	return l >= hclog.Level(h.level.Load()) && h.log.Enabled(context.Background(), slogLevel(l))
}

// Log emits one line; hclog's key-value args become slog attributes.
func (h *Hclog) Log(level hclog.Level, msg string, args ...any) {
	if !h.enabled(level) {
		return
	}
	all := make([]any, 0, 2+len(h.args)+len(args))
	if h.name != "" {
		all = append(all, "logger", h.name)
	}
	all = append(all, h.args...)
	all = append(all, fixArgs(args)...)
	h.log.Log(context.Background(), slogLevel(level), msg, all...)
}

// fixArgs turns hclog's conventions into slog's: an error value is logged
// by its text, and a trailing key without a value gets one.
func fixArgs(args []any) []any {
	if len(args)%2 == 1 {
		args = append(args, "(missing)")
	}
	for i := 1; i < len(args); i += 2 {
		switch v := args[i].(type) {
		case error:
			if v != nil {
				args[i] = v.Error()
			}
		case hclog.Format:
			// hclog.Fmt("%+v", x): formatted when logged.
			if len(v) > 0 {
				if f, ok := v[0].(string); ok {
					args[i] = fmt.Sprintf(f, v[1:]...)
				}
			}
		}
	}
	return args
}

func (h *Hclog) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *Hclog) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *Hclog) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *Hclog) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *Hclog) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }
func (h *Hclog) IsTrace() bool                 { return h.enabled(hclog.Trace) }
func (h *Hclog) IsDebug() bool                 { return h.enabled(hclog.Debug) }
func (h *Hclog) IsInfo() bool                  { return h.enabled(hclog.Info) }
func (h *Hclog) IsWarn() bool                  { return h.enabled(hclog.Warn) }
func (h *Hclog) IsError() bool                 { return h.enabled(hclog.Error) }
func (h *Hclog) ImpliedArgs() []any            { return h.args }
func (h *Hclog) Name() string                  { return h.name }
func (h *Hclog) SetLevel(l hclog.Level)        { h.level.Store(int32(l)) }
func (h *Hclog) GetLevel() hclog.Level         { return hclog.Level(h.level.Load()) }

// With returns a logger adding args to every line.
func (h *Hclog) With(args ...any) hclog.Logger {
	c := *h
	c.args = append(append([]any(nil), h.args...), fixArgs(args)...)
	return &c
}

// Named returns a logger named "parent.name".
func (h *Hclog) Named(name string) hclog.Logger {
	c := *h
	if c.name != "" {
		name = c.name + "." + name
	}
	c.name = name
	return &c
}

// ResetNamed returns a logger named name.
func (h *Hclog) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	return &c
}

// StandardLogger returns a *log.Logger whose lines arrive here at
// opts.ForceLevel (Info when unset).
func (h *Hclog) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

// StandardWriter returns a writer whose lines arrive here.
func (h *Hclog) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	lv := hclog.Info
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		lv = opts.ForceLevel
	}
	return writerFunc(func(p []byte) (int, error) {
		h.Log(lv, strings.TrimRight(string(p), "\n"))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
