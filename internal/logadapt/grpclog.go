package logadapt

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/grpclog"
)

// grpcTarget is the logger gRPC's lines go to; nil drops them.
var grpcTarget atomic.Pointer[slog.Logger]

var grpcOnce sync.Once

// RouteGRPC sends gRPC's own log lines (grpclog, a process-global) at
// warning level and above to l. grpclog.SetLoggerV2 must be called before
// any gRPC activity and is not safe to call while gRPC runs, so it is
// called once per process; later calls only change where the lines go
// (several daemons in one test process: the last one's logger).
func RouteGRPC(l *slog.Logger) {
	grpcTarget.Store(l)
	grpcOnce.Do(func() { grpclog.SetLoggerV2(grpcLogger{}) })
}

// grpcLogger is a grpclog.LoggerV2 over grpcTarget. Info lines (gRPC's
// connection chatter) are dropped; V reports verbosity 0 only.
type grpcLogger struct{}

func (grpcLogger) out(level slog.Level, msg string) {
	if l := grpcTarget.Load(); l != nil {
		l.Log(context.Background(), level, msg, "logger", "grpc")
	}
}

func (grpcLogger) Info(...any)                   {}
func (grpcLogger) Infoln(...any)                 {}
func (grpcLogger) Infof(string, ...any)          {}
func (g grpcLogger) Warning(a ...any)            { g.out(slog.LevelWarn, fmt.Sprint(a...)) }
func (g grpcLogger) Warningln(a ...any)          { g.out(slog.LevelWarn, sprintln(a...)) }
func (g grpcLogger) Warningf(f string, a ...any) { g.out(slog.LevelWarn, fmt.Sprintf(f, a...)) }
func (g grpcLogger) Error(a ...any)              { g.out(slog.LevelError, fmt.Sprint(a...)) }
func (g grpcLogger) Errorln(a ...any)            { g.out(slog.LevelError, sprintln(a...)) }
func (g grpcLogger) Errorf(f string, a ...any)   { g.out(slog.LevelError, fmt.Sprintf(f, a...)) }
func (g grpcLogger) Fatal(a ...any)              { g.out(slog.LevelError, fmt.Sprint(a...)); os.Exit(1) }
func (g grpcLogger) Fatalln(a ...any)            { g.out(slog.LevelError, sprintln(a...)); os.Exit(1) }
func (g grpcLogger) Fatalf(f string, a ...any) {
	g.out(slog.LevelError, fmt.Sprintf(f, a...))
	os.Exit(1)
}
func (grpcLogger) V(l int) bool { return l <= 0 }

func sprintln(a ...any) string {
	s := fmt.Sprintln(a...)
	return s[:len(s)-1]
}
