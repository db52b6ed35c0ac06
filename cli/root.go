package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// UserError is an error meant for the person at the terminal: the CLI prints
// its message as one clean sentence, without a wrapped chain or a trace.
type UserError struct {
	Msg string
	Err error
	// Code is the process's exit code for this error (ExitUsage,
	// ExitDamaged, ...); 0 leaves it to exitCode, which looks at Err.
	Code int
}

func (e *UserError) Error() string { return e.Msg }
func (e *UserError) Unwrap() error { return e.Err }

// streams carries the process's standard streams so commands never touch the
// os globals and tests can run the tree in-process, and the engines the
// binary linked in.
type streams struct {
	in       io.Reader
	out, err io.Writer
	wiring   Wiring
	// tls are the global flags naming this process's credential.
	tls tlsFlags
}

// NewRoot builds the command tree with nothing wired in (see Wiring).
func NewRoot(in io.Reader, out, errw io.Writer) *cobra.Command {
	return NewRootWith(Wiring{}, in, out, errw)
}

// NewRootWith builds the command tree with w's engines.
func NewRootWith(w Wiring, in io.Reader, out, errw io.Writer) *cobra.Command {
	s := &streams{in: in, out: out, err: errw, wiring: w}
	root := &cobra.Command{
		Use:   "tidemark",
		Short: "Backup and point-in-time recovery for fleets of MySQL and MariaDB servers",
		Long: `Tidemark backs up MySQL and MariaDB servers into a content-addressed,
deduplicated, optionally encrypted repository on S3, MinIO or a local directory.

Every command that prints data takes -o json: one JSON document per run
(JSON lines for job watch), snake_case field names, RFC 3339 UTC times.

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	s.tls.register(root)
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errw)
	// Every command is listed here, in one place, rather than registered
	// by init side effects.
	root.AddCommand(
		newVersionCmd(s),
		newRepoCmd(s),
		withSubcommands(newBackupCmd(s), newBackupPinCmd(s), newBackupUnpinCmd(s), newBackupCopyCmd(s), newBackupExpireCmd(s)),
		newBackupsCmd(s),
		newRestoreCmd(s),
		newVerifyRestoreCmd(s),
		newAgentCmd(s),
		newControllerCmd(s),
		newClusterCmd(s),
		newAgentsCmd(s),
		newInstancesCmd(s),
		newEnginesCmd(s),
		newJobsCmd(s),
		newJobCmd(s),
		newBinlogCmd(s),
		newDevCmd(s),
		newTokenCmd(s),
		newAuditCmd(s),
		newLoginCmd(s),
		newCompletionCmd(s),
		newRetentionCmd(s),
		newPolicyCmd(s),
		newPoliciesCmd(s),
		newScheduleCmd(s),
		newStatusCmd(s),
	)
	// Our own completion command (with an Example, like every command)
	// replaces cobra's default one.
	root.CompletionOptions.DisableDefaultCmd = true
	registerCompletions(s, root)
	applyExamples(root)
	markUsageErrors(root)
	return root
}

// Main runs the command tree, with the engines wired in, and returns the
// process exit code.
func Main(args []string, in io.Reader, out, errw io.Writer) int {
	return MainWith(EngineWiring(), args, in, out, errw)
}

// MainWith is Main with w's engines wired in.
func MainWith(w Wiring, args []string, in io.Reader, out, errw io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	root := NewRootWith(w, in, out, errw)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		var ue *UserError
		if errors.As(err, &ue) {
			fmt.Fprintln(errw, "error:", ue.Msg)
		} else {
			fmt.Fprintln(errw, "error:", err)
		}
		if !errors.As(err, &ue) && isUnknownCommand(err) {
			return ExitUsage
		}
		return exitCode(err)
	}
	return ExitOK
}
