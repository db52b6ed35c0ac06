package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/client"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

func newAuditCmd(s *streams) *cobra.Command {
	var (
		f     fleetFlags
		since string
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "List the audit trail (admin): every mutating call, who made it, on what, and how it ended",
		Long: `List the audit trail kept in the controllers' Raft log: every mutating call
(backups, restores, cancellations, streams, members, join tokens, revocations)
with the caller's identity, its target and flags, and its outcome. Restores,
member removals and revocations are recorded before they run ("started") and
do not run when that record cannot be written.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &v1.ListAuditRequest{}
			if since != "" {
				t, err := parseSince(since)
				if err != nil {
					return err
				}
				req.Since = timestamppb.New(t)
			}
			return f.read(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				req.Stale = f.stale
				r, err := c.Control.ListAudit(ctx, req)
				if err != nil {
					return rpcErr(err)
				}
				f.noteRead(r.GetRead())
				if f.output == "json" {
					out := make([]map[string]any, 0, len(r.GetRecords()))
					for _, a := range r.GetRecords() {
						out = append(out, map[string]any{"id": a.GetId(), "at": tsJSON(a.GetAt()), "who": a.GetWho(), "rpc": a.GetRpc(),
							"target": a.GetTarget(), "flags": a.GetFlags(), "outcome": a.GetOutcome()})
					}
					return json.NewEncoder(s.out).Encode(out)
				}
				tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "AT\tWHO\tCALL\tTARGET\tFLAGS\tOUTCOME")
				for _, a := range r.GetRecords() {
					var flags []string
					for _, k := range slices.Sorted(maps.Keys(a.GetFlags())) {
						flags = append(flags, k+"="+a.GetFlags()[k])
					}
					call := a.GetRpc()[strings.LastIndex(a.GetRpc(), "/")+1:]
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", tsText(a.GetAt()), a.GetWho(), call, orDash(a.GetTarget()), orDash(strings.Join(flags, ",")), a.GetOutcome())
				}
				return tw.Flush()
			})
		},
	}
	f.registerRead(s, cmd)
	cmd.Flags().StringVar(&since, "since", "", "only records from this long ago (24h) or this UTC time ('YYYY-MM-DD HH:MM:SS')")
	return cmd
}

// parseSince reads --since: a duration back from now, or a UTC time.
func parseSince(v string) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return time.Now().Add(-d), nil
	}
	for _, layout := range []string{time.DateTime, time.RFC3339, time.DateOnly} {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--since %q: a duration (24h) or a UTC time 'YYYY-MM-DD HH:MM:SS'", v)}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
