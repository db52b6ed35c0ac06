package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tidemark-backup/tidemark/agent/probe"
	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/engines/selection"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	"github.com/tidemark-backup/tidemark/internal/version"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

func newEnginesCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "engines",
		Short: "Which backup engine suits an instance, and why",
	}
	cmd.AddCommand(newEnginesExplainCmd(s))
	return cmd
}

func newEnginesExplainCmd(s *streams) *cobra.Command {
	var (
		f        fleetFlags
		dsn      string
		prefer   string
		portable bool
		small    uint64
		policy   string
	)
	cmd := &cobra.Command{
		Use:   "explain [INSTANCE]",
		Short: "Rank the engines for an instance, each with the reason it can or cannot run",
		Long: `Rank the backup engines for an instance (snapshot, clone, mariabackup,
logical) from what its agent probed, best first, each with ok and a reason;
the first usable one is what a backup with --engine auto runs, and the ones
after it are the fallbacks when it fails for a capability reason.

Through a controller: INSTANCE is a catalog instance, ranked from its
agent's last probe, with the controller's --logical-below. Standalone (--mysql DSN): the server is probed from
here, which must be its host for the filesystem and tool probes to mean
anything.

--engine takes a preference (auto, or a comma-separated list in order) and
--portable a requirement that backups restore onto another version or
flavor; --policy NAME takes the engines the policy's schedules name instead
(all auto: auto), and its portable: true. -o json prints
{"instance", "chosen", "verdicts": [{"engine", "ok", "reason"}], "notes",
"capabilities"}. The exit status is 1 when no engine is usable.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(f.output); err != nil {
				return err
			}
			pref := selection.Preferences{Engines: splitList(prefer), Portable: portable, SmallBytes: small}
			if err := selection.CheckNames(pref.Engines); err != nil {
				return &UserError{Code: ExitUsage, Msg: "--engine: " + err.Error()}
			}
			if dsn != "" {
				if len(args) > 0 {
					return &UserError{Code: ExitUsage, Msg: "give INSTANCE (through a controller) or --mysql DSN (standalone), not both"}
				}
				if err := refuseArgvDSN(cmd, "mysql", dsn); err != nil {
					return err
				}
				caps, warnings, err := probeLocal(cmd.Context(), dsn, f.timeout)
				if err != nil {
					return err
				}
				for _, w := range warnings {
					fmt.Fprintln(s.err, "warning:", w)
				}
				pref.Available = s.engines().Names()
				d, err := selection.Decide(caps, pref)
				if err != nil {
					return &UserError{Code: ExitUsage, Msg: err.Error()}
				}
				parsed, _ := mysqlx.ParseDSN(dsn)
				name := dsn
				if parsed != nil {
					name = parsed.Addr()
				}
				return printExplain(s, f.output, name, d.Proto(), caps)
			}
			if len(args) == 0 {
				return &UserError{Code: ExitUsage, Msg: "name the instance (tidemark engines explain db7, see tidemark instances) or probe a server from here with --mysql DSN"}
			}
			if policy != "" && cmd.Flags().Changed("engine") {
				return &UserError{Code: ExitUsage, Msg: "give --policy NAME (its schedules' engines) or --engine LIST, not both"}
			}
			return f.read(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				if policy != "" {
					p, err := c.Control.GetPolicy(ctx, &v1.GetPolicyRequest{Name: policy, Stale: f.stale})
					if err != nil {
						return rpcErr(err)
					}
					pref.Engines = policyEngines(p.GetPolicy().GetSpec())
					pref.Portable = pref.Portable || p.GetPolicy().GetSpec().GetPortable()
				}
				r, err := c.Control.ExplainEngines(ctx, &v1.ExplainEnginesRequest{Instance: args[0], Engines: pref.Engines, Portable: pref.Portable, Stale: f.stale})
				if err != nil {
					return rpcErr(err)
				}
				f.noteRead(r.GetRead())
				return printExplain(s, f.output, r.GetInstance(), r.GetDecision(), r.GetCapabilities())
			})
		},
	}
	f.registerRead(s, cmd)
	cmd.Flags().StringVar(&dsn, "mysql", "", "standalone: probe this server from here, go-sql-driver DSN (password in TIDEMARK_MYSQL_PASSWORD)")
	cmd.Flags().StringVar(&prefer, "engine", "auto", "preferred engines: auto, or a comma-separated list in order (a policy's engine:)")
	cmd.Flags().StringVar(&policy, "policy", "", "through a controller: prefer the engines this policy's schedules name (all auto: auto), portable when it is")
	cmd.Flags().BoolVar(&portable, "portable", false, "backups must restore onto another version or flavor (a policy's portable: true): logical only")
	logicalBelowFlag(cmd, &small)
	return cmd
}

// probeLocal runs the agent's capability probes against dsn from this host.
// The repository is named at backup time, so storage counts as reachable.
func probeLocal(ctx context.Context, dsn string, timeout time.Duration) (*v1.Capabilities, []string, error) {
	parsed, err := mysqlx.ParseDSN(dsn)
	if err != nil {
		return nil, nil, userErr(err)
	}
	db, err := parsed.Open(nil)
	if err != nil {
		return nil, nil, userErr(err)
	}
	defer func() { _ = db.Close() }()
	db.SetMaxOpenConns(1)
	res := probe.Run(ctx, probe.Deps{Querier: probe.SQL(db), Host: probe.LocalHost{}, AgentVersion: version.Get().Version, Timeout: timeout,
		Storage: func(context.Context) error { return nil }})
	if res.Server == nil {
		return nil, res.Warnings, &UserError{Msg: fmt.Sprintf("cannot query %s to probe it: %v", parsed, res.Warnings)}
	}
	return res.Capabilities, res.Warnings, nil
}

// explainJSON is the -o json shape of a decision.
func explainJSON(instance string, d *v1.EngineDecision, caps *v1.Capabilities) map[string]any {
	verdicts := make([]map[string]any, 0, len(d.GetVerdicts()))
	for _, v := range d.GetVerdicts() {
		verdicts = append(verdicts, map[string]any{"engine": v.GetEngine(), "ok": v.GetOk(), "reason": v.GetReason()})
	}
	notes := d.GetNotes()
	if notes == nil {
		notes = []string{}
	}
	return map[string]any{"instance": instance, "chosen": d.GetChosen(), "verdicts": verdicts, "notes": notes, "capabilities": capsJSON(caps)}
}

func printExplain(s *streams, output, instance string, d *v1.EngineDecision, caps *v1.Capabilities) error {
	var err error
	if output == "json" {
		err = json.NewEncoder(s.out).Encode(explainJSON(instance, d, caps))
	} else {
		err = writeExplain(s.out, instance, d)
	}
	if err != nil {
		return err
	}
	if d.GetChosen() == "" {
		return &UserError{Code: ExitFailed, Msg: fmt.Sprintf("no engine can back up %s; each one's reason is above", instance)}
	}
	return nil
}

func writeExplain(w io.Writer, instance string, d *v1.EngineDecision) error {
	fmt.Fprintf(w, "engines for %s, best first (auto runs %s):\n", instance, orDash(d.GetChosen()))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENGINE\tOK\tREASON")
	for _, v := range d.GetVerdicts() {
		ok := "no"
		if v.GetOk() {
			ok = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", v.GetEngine(), ok, v.GetReason())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range d.GetNotes() {
		fmt.Fprintln(w, "note:", n)
	}
	return nil
}

// sizeFlag is a byte size flag: "0", "1073741824", "512MiB", "1GiB", "2G".
type sizeFlag uint64

func (f *sizeFlag) String() string { return bytesFlagText(uint64(*f)) }
func (f *sizeFlag) Type() string   { return "size" }

func (f *sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*f = sizeFlag(n)
	return nil
}

// parseSize reads a byte count with an optional binary unit.
func parseSize(v string) (uint64, error) {
	s := strings.TrimSpace(v)
	units := []struct {
		suffix string
		mult   uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1}}
	mult := uint64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || (mult > 1 && n > math.MaxUint64/mult) {
		return 0, fmt.Errorf("size %q: use a byte count with an optional unit, e.g. 0, 512MiB, 1GiB", v)
	}
	return n * mult, nil
}

func bytesFlagText(n uint64) string {
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatUint(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10)
}

// logicalBelowFlag registers --logical-below on cmd.
func logicalBelowFlag(cmd *cobra.Command, v *uint64) {
	*v = selection.DefaultSmallBytes
	cmd.Flags().Var((*sizeFlag)(v), "logical-below", "engine selection ranks the logical engine first for an instance with less data than this (0: rank by engine alone)")
}

// policyEngines is the preference a policy's schedules give: the engines
// they name, in order, once each; none (every schedule auto) is auto.
func policyEngines(spec *v1.PolicySpec) []string {
	var out []string
	for _, b := range spec.GetBackups() {
		if e := b.GetEngine(); e != "" && e != "auto" && !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	return out
}
