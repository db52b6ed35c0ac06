package cli

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestRetentionCommandsBadInput: mistakes caught before any controller is
// dialled, each with what to do.
func TestRetentionCommandsBadInput(t *testing.T) {
	t.Setenv("TIDEMARK_CONTROLLER", "")
	admin := testenv.NewTestCA(t).Files(t, testenv.Admin())
	t.Setenv("TIDEMARK_CREDENTIALS", filepath.Dir(admin.CA))
	closed := fmt.Sprintf("127.0.0.1:%d", freeClosedPort(t))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"retention", "plan", "--controller", closed}, "no retention rule: give at least one of --keep-last"},
		{[]string{"retention", "apply", "--controller", closed, "--pitr-window", "-1h"}, "--pitr-window -1h0m0s is negative"},
		{[]string{"retention", "plan", "--controller", closed, "--policy", "gold", "--keep-daily", "7"}, "--policy takes the rules from the policy"},
		{[]string{"retention", "apply", "--controller", closed, "--policy", "gold", "--copies", "s3://b/c"}, "--policy applies the policy's retention to its backups and to its copies"},
		{[]string{"retention", "plan", "--controller", closed, "--keep-daily", "7"}, "no Tidemark controller answers"},
		{[]string{"backup", "pin", "--controller", closed}, "accepts 1 arg(s), received 0"},
		{[]string{"backup", "pin", "b1", "--controller", closed, "--reason", "audit"}, "no Tidemark controller answers"},
		{[]string{"backup", "unpin", "b1", "b2", "--controller", closed}, "accepts 1 arg(s), received 2"},
		{[]string{"backup", "copy", "b1", "--controller", closed}, "--to URI is required"},
		{[]string{"backup", "expire", "--controller", closed}, "accepts 1 arg(s), received 0"},
		{[]string{"backup", "expire", "b1", "--controller", closed}, "no Tidemark controller answers"},
		{[]string{"backup", "copy", "b1", "--to", "s3://b/x", "--controller", closed}, "no Tidemark controller answers"},
	} {
		code, _, errs := run(t, tc.args...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("tidemark %s: exit %d, stderr %q, want %q", strings.Join(tc.args, " "), code, errs, tc.want)
		}
	}
}
