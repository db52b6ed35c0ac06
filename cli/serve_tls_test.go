package cli

import (
	"strings"
	"testing"
)

// TestServeTLSFlags: the --serve-tls* flags are refused where they cannot
// apply, before anything is opened: an unknown mode, a restore without a
// stop point (no roll-forward), and relative paths for a job an agent
// runs on another host.
func TestServeTLSFlags(t *testing.T) {
	t.Setenv("TIDEMARK_REPO", "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"restore", "--instance", "a", "--to-gtid", "0-1-5", "--to-mysql", "u@tcp(127.0.0.1:1)/", "--repo", "file:///nonexistent", "--serve-tls", "maybe"}, `--serve-tls "maybe": use auto, on or off`},
		{[]string{"restore", "b1", "--to-mysql", "u@tcp(127.0.0.1:1)/", "--repo", "file:///nonexistent", "--serve-tls", "on"}, "give --to-time, --to-gtid or --to-position"},
		{[]string{"restore", "b1", "--to-mysql", "u@tcp(127.0.0.1:1)/", "--repo", "file:///nonexistent", "--serve-tls-cert", "c.pem"}, "protect a point-in-time restore's roll-forward"},
		{[]string{"restore", "--instance", "a", "--to-gtid", "0-1-5", "--to-instance", "t", "--serve-tls-cert", "c.pem", "--serve-tls-key", "/k.pem"}, `--serve-tls-cert "c.pem": give an absolute path`},
	} {
		code, _, errs := run(t, c.args...)
		if code != ExitUsage || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, %q; want usage error saying %q", c.args, code, errs, c.want)
		}
	}
}
