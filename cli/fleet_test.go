package cli

import (
	"fmt"
	"strings"
	"testing"
)

// TestFleetCommandsBadInput checks the fleet commands' mistakes that need
// no controller (the e2e package runs them against real ones).
func TestFleetCommandsBadInput(t *testing.T) {
	t.Setenv("TIDEMARK_CONTROLLER", "")
	t.Setenv("TIDEMARK_REPO", "")
	closed := fmt.Sprintf("127.0.0.1:%d", freeClosedPort(t))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"agents"}, "no controller address"},
		{[]string{"jobs", "--controller", closed}, "no Tidemark controller answers"},
		{[]string{"instances", "--controller", closed, "-o", "yaml"}, "yaml"},
		{[]string{"job", "watch", "j1", "--controller", closed}, "no Tidemark controller answers"},
		{[]string{"backup", "--controller", closed}, "--instance NAME is required"},
		{[]string{"backup", "--controller", closed, "--instance", "db", "--engine", "clone"}, `--engine "clone"`},
		{[]string{"backup", "--controller", closed, "--instance", "db", "--mysql", "root@tcp(127.0.0.1:1)/"}, "--mysql is for a standalone backup"},
		{[]string{"backup", "--controller", closed, "--instance", "db", "--wait"}, "no Tidemark controller answers"},
		{[]string{"backups", "--controller", closed}, "no Tidemark controller answers"},
		{[]string{"restore", "b1", "--to-instance", "db", "--to-mysql", "root@tcp(127.0.0.1:1)/"}, "not both"},
		{[]string{"restore", "b1", "--to-instance", "db", "--rename-db", "a-b"}, `--rename-db "a-b": use old:new`},
		{[]string{"restore", "b1"}, "--to-instance NAME"},
		{[]string{"restore", "b1", "--to-instance", "db"}, "no controller address"},
		{[]string{"restore", "b1", "--to-mysql", "root@tcp(127.0.0.1:1)/", "--controller", closed}, "no Tidemark controller answers"},
		{[]string{"dev"}, "--mysql DSN is required"},
	} {
		code, _, errs := run(t, tc.args...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("tidemark %s: exit %d, stderr %q, want %q", strings.Join(tc.args, " "), code, errs, tc.want)
		}
	}
}
