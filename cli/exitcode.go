package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/storage"
)

// Exit codes of the tidemark command, distinct so that scripts can tell a
// mistake in the command line from a refusal, a damaged repository or an
// outage without parsing messages. exitCodesHelp documents them in
// `tidemark --help`; the README has the same table.
const (
	ExitOK = 0
	// ExitFailed: the operation ran and failed (a job failed, a restore
	// was refused, a backup could not be written).
	ExitFailed = 1
	// ExitUsage: the command line was wrong: an unknown command or flag,
	// a missing or conflicting argument, a value that does not parse.
	ExitUsage = 2
	// ExitDamaged: repo verify found damage (missing or corrupt chunks,
	// damaged binlog objects), or a restore's tables differ from the
	// backup's row checksums (restore --verify, verify-restore).
	ExitDamaged = 3
	// ExitUnauthorized: the controller or the store refused the
	// credential, or its role does not allow the call.
	ExitUnauthorized = 4
	// ExitUnreachable: no controller (or repository) answered, or the
	// controllers have no leader (gRPC Unavailable): worth a retry later.
	ExitUnreachable = 5
)

// exitCodesHelp is the exit code table in the root command's help.
const exitCodesHelp = `Exit codes:
  0  success
  1  the operation failed (a job failed, a restore was refused, ...)
  2  usage error: unknown command or flag, missing or conflicting arguments
  3  damage found by repo verify, or restored data unlike the backup (--verify)
  4  not authorised: credential refused, or its role does not allow the call
  5  not reachable: no controller or repository answered, or no leader (retry)`

// usageErr is a UserError for a wrong command line (exit code 2).
func usageErr(format string, args ...any) error {
	return &UserError{Msg: fmt.Sprintf(format, args...), Code: ExitUsage}
}

// exitCode maps the error a command returned to the process's exit code:
// an explicit UserError code first, then the kinds of failure recognisable
// by type anywhere in the chain (gRPC status codes, the controller client's
// dial sentinels, the storage sentinels), else ExitFailed.
func exitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ue *UserError
	if errors.As(err, &ue) && ue.Code != 0 {
		return ue.Code
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.PermissionDenied, codes.Unauthenticated:
			return ExitUnauthorized
		case codes.Unavailable:
			return ExitUnreachable
		}
	}
	switch {
	case errors.Is(err, client.ErrNotTLS):
		return ExitUnreachable // a plaintext peer: nothing was refused
	case errors.Is(err, client.ErrNoCredentials), errors.Is(err, client.ErrTLS), errors.Is(err, storage.ErrPermission):
		return ExitUnauthorized
	case errors.Is(err, client.ErrUnreachable), errors.Is(err, client.ErrNotController), errors.Is(err, storage.ErrUnavailable):
		return ExitUnreachable
	}
	return ExitFailed
}

// markUsageErrors makes cobra's own complaints (bad flags, wrong argument
// counts) usage errors (exit code 2), for every command of the tree.
func markUsageErrors(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &UserError{Msg: err.Error(), Err: err, Code: ExitUsage}
	})
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error {
				if err := args(cmd, a); err != nil {
					return &UserError{Msg: err.Error(), Err: err, Code: ExitUsage}
				}
				return nil
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// isUnknownCommand tells cobra's "unknown command" error, which it returns
// as a plain error.
func isUnknownCommand(err error) bool {
	return strings.HasPrefix(err.Error(), "unknown command ") || strings.HasPrefix(err.Error(), "unknown flag") ||
		strings.HasPrefix(err.Error(), "unknown shorthand flag")
}
