package secret

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const value = "hunter2-XYZZY"

type holder struct {
	Exported   String
	unexported String
	Key        Bytes
	key        Bytes
	Ptr        *String
}

func newHolder() holder {
	s := NewString(value)
	return holder{Exported: s, unexported: s, Key: NewBytes([]byte(value)), key: NewBytes([]byte(value)), Ptr: &s}
}

// TestNothingPrints: every way a value leaves by accident shows the
// placeholder, never the value.
func TestNothingPrints(t *testing.T) {
	h := newHolder()
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3s"} {
		outs = append(outs,
			fmt.Sprintf(verb, h.Exported), fmt.Sprintf(verb, h.Key), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &h),
			fmt.Sprintf(verb, []any{h.Exported, h.Key}), fmt.Sprintf(verb, map[string]String{"k": h.Exported}))
	}
	outs = append(outs, fmt.Errorf("wrapped: %w: %v", errors.New("x"), h).Error(), fmt.Sprint(h), fmt.Sprintln(h.Key))
	j, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(j))
	var logs bytes.Buffer
	for _, l := range []*slog.Logger{slog.New(slog.NewTextHandler(&logs, nil)), slog.New(slog.NewJSONHandler(&logs, nil))} {
		l.Info("msg", "s", h.Exported, "b", h.Key, "holder", h, "ptr", h.Ptr)
	}
	outs = append(outs, logs.String())
	for _, o := range outs {
		if strings.Contains(o, value) || strings.Contains(o, fmt.Sprintf("%x", value)) {
			t.Errorf("secret shown: %s", o)
		}
	}
	if !strings.Contains(string(j), Placeholder) || !strings.Contains(logs.String(), Placeholder) {
		t.Errorf("placeholder missing: %s %s", j, logs.String())
	}
	if h.unexported.Reveal() != value || string(h.key.Reveal()) != value {
		t.Fatal("Reveal lost the value")
	}
}

func TestZeroAndEqual(t *testing.T) {
	var s String
	var b Bytes
	if !s.IsZero() || !b.IsZero() || s.Reveal() != "" || b.Reveal() != nil || fmt.Sprint(s) != Placeholder {
		t.Fatal("zero values")
	}
	if !NewString("a").Equal(NewString("a")) || NewString("a").Equal(NewString("b")) || !NewBytes([]byte("k")).Equal(NewBytes([]byte("k"))) {
		t.Fatal("Equal")
	}
}

func TestReadFileAndEnv(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pass")
	if err := os.WriteFile(p, []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := ReadFile(p, true)
	if err != nil || string(b.Reveal()) != value {
		t.Fatalf("read trimmed: %v", err)
	}
	if b, _ := ReadFile(p, false); string(b.Reveal()) != value+"\n" {
		t.Fatal("a key file lost its last byte")
	}
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	if _, err := ReadFile(empty, true); err == nil || !strings.Contains(err.Error(), empty) {
		t.Fatalf("empty file: %v", err)
	}
	if _, err := ReadFile(filepath.Join(dir, "missing"), true); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing file: %v", err)
	}

	t.Setenv("TM_TEST_SECRET", value)
	if s, ok, err := FromEnv("TM_TEST_SECRET"); err != nil || !ok || s.Reveal() != value {
		t.Fatalf("from env: %v %v", ok, err)
	}
	t.Setenv("TM_TEST_SECRET_FILE", p)
	if _, _, err := FromEnv("TM_TEST_SECRET"); err == nil || strings.Contains(err.Error(), value) {
		t.Fatalf("both set: %v", err)
	}
	t.Setenv("TM_TEST_SECRET", "")
	if s, ok, err := FromEnv("TM_TEST_SECRET"); err != nil || !ok || s.Reveal() != value {
		t.Fatalf("from env file: %v %v", ok, err)
	}
	t.Setenv("TM_TEST_SECRET_FILE", "")
	if _, ok, err := FromEnv("TM_TEST_SECRET"); ok || err != nil {
		t.Fatalf("unset: %v %v", ok, err)
	}
}
