package logadapt

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/grpclog"
)

func TestHclogJSON(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := NewHclog(l, "raft", hclog.Info).Named("snapshot").With("node", "c1")
	h.Debug("dropped: below the hclog level")
	h.Warn("heartbeat timeout reached", "last-leader", "c2", "err", errors.New("boom"))
	h.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error}).Print("from a std logger")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("not JSON: %s", lines[0])
	}
	want := map[string]any{"level": "WARN", "msg": "heartbeat timeout reached", "logger": "raft.snapshot", "node": "c1", "last-leader": "c2", "err": "boom"}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v (line %s)", k, m[k], v, lines[0])
		}
	}
	if !strings.Contains(lines[1], `"level":"ERROR"`) || !strings.Contains(lines[1], "from a std logger") {
		t.Errorf("standard logger line: %s", lines[1])
	}
	if h.IsDebug() || !h.IsWarn() {
		t.Error("level checks wrong")
	}
}

func TestRouteGRPC(t *testing.T) {
	var buf bytes.Buffer
	RouteGRPC(slog.New(slog.NewJSONHandler(&buf, nil)))
	grpclog.Info("connection chatter")
	grpclog.Warningf("transport: %s", "closing")
	out := buf.String()
	if strings.Contains(out, "chatter") {
		t.Errorf("info lines reached the log: %s", out)
	}
	if !strings.Contains(out, `"msg":"transport: closing"`) || !strings.Contains(out, `"logger":"grpc"`) {
		t.Errorf("warning line missing or not JSON: %s", out)
	}
}
