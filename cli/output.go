package cli

import (
	"github.com/spf13/cobra"
)

// outputFlag registers -o/--output on a command that prints data: "text"
// (for people) or "json" (for scripts: one document per run, or JSON
// lines for a stream such as job watch; snake_case field names, RFC 3339
// UTC times).
func outputFlag(cmd *cobra.Command, v *string) {
	cmd.Flags().StringVarP(v, "output", "o", "text", "output format: text or json")
}

// nonNilStrings makes a nil list encode as [] rather than null.
func nonNilStrings(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}
