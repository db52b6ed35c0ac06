package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/engines/selection"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Engine selection on the controller: a backup with engine auto runs the
// first usable engine of the instance's last probed capabilities, a named
// engine the instance cannot run is refused before a job exists, and every
// registration (agents re-probe when they reconnect) re-decides and records
// a change of choice as an event on the instance.

// resolvedEngine is what a backup job will run and why.
type resolvedEngine struct {
	engine    string // "" leaves the choice to the agent's registry default
	reason    string
	fallbacks []string
}

// resolveEngine decides the engine of a backup of in. requested is "",
// "auto" or an engine name; small is Config.LogicalBelow. An instance whose agent reported no
// capabilities (older agents, a server it could not query) keeps the old
// behaviour: a named engine as asked, auto the agent's default.
func resolveEngine(in *v1.Instance, requested string, small uint64) (resolvedEngine, error) {
	if requested == "auto" {
		requested = ""
	}
	if requested != "" {
		if err := selection.CheckNames([]string{requested}); err != nil {
			return resolvedEngine{}, invalid("engine: %v", err)
		}
	}
	caps := in.GetCapabilities()
	if caps.GetFlavor() == "" {
		if requested == "" {
			return resolvedEngine{reason: "the agent has not reported this server's capabilities: the agent's default engine"}, nil
		}
		return resolvedEngine{engine: requested}, nil
	}
	if requested != "" {
		d, err := selection.Decide(caps, selection.Preferences{Engines: []string{requested}, SmallBytes: small})
		if err != nil {
			return resolvedEngine{}, invalid("engine: %v", err)
		}
		if v, _ := d.Verdict(requested); !v.OK {
			return resolvedEngine{}, catalog.Errorf(catalog.ErrConflict, "instance %s cannot run engine %s: %s (see tidemark engines explain %s)", in.GetName(), requested, v.Reason, in.GetName())
		}
		// A forced engine never switches: no fallbacks.
		return resolvedEngine{engine: requested}, nil
	}
	d, err := selection.Decide(caps, selection.Preferences{SmallBytes: small})
	if err != nil {
		return resolvedEngine{}, err
	}
	v, rest, err := d.Choose()
	if err != nil {
		return resolvedEngine{}, catalog.Errorf(catalog.ErrConflict, "instance %s: %v", in.GetName(), err)
	}
	return resolvedEngine{engine: v.Engine, reason: v.Reason, fallbacks: rest}, nil
}

// explainEngines answers ExplainEngines from the local catalog.
func explainEngines(r *catalog.Read, req *v1.ExplainEnginesRequest, small uint64) (*v1.ExplainEnginesResponse, error) {
	if req.GetInstance() == "" {
		return nil, invalid("instance is required")
	}
	in, err := r.Instance(req.GetInstance())
	if err != nil {
		return nil, err
	}
	d, err := selection.Decide(in.GetCapabilities(), selection.Preferences{Engines: req.GetEngines(), Portable: req.GetPortable(), SmallBytes: small})
	if err != nil {
		return nil, invalid("engines: %v", err)
	}
	pd := d.Proto()
	pd.DecidedAt, pd.ProbedAt = now(), in.GetCapabilities().GetProbedAt()
	return &v1.ExplainEnginesResponse{Instance: in.GetName(), Decision: pd, Capabilities: in.GetCapabilities()}, nil
}

// sameDecision compares two decisions' verdicts and notes, not their times.
func sameDecision(a, b *v1.EngineDecision) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.GetChosen() == b.GetChosen() && slices.Equal(a.GetNotes(), b.GetNotes()) &&
		slices.EqualFunc(a.GetVerdicts(), b.GetVerdicts(), func(x, y *v1.EngineVerdict) bool { return proto.Equal(x, y) })
}

// recordEngineDecisions re-decides the engine of each named instance from
// the capabilities now in the catalog and writes what changed: a new
// decision, and an event when the chosen engine differs. Called after an
// agent's registration; an error is logged, never fatal to the session.
func (h *agentHub) recordEngineDecisions(ctx context.Context, names []string) error {
	var errs []error
	for _, name := range names {
		in, err := h.node.catalog().Read().Instance(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if in.GetCapabilities().GetFlavor() == "" {
			// The agent could not query the server (down, restarting):
			// that says nothing about the host, so the last decision
			// stands rather than an event per server restart.
			continue
		}
		d, err := selection.Decide(in.GetCapabilities(), selection.Preferences{SmallBytes: h.logicalBelow})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cur := d.Proto()
		old := in.GetEngineDecision()
		if sameDecision(old, cur) {
			continue
		}
		t := now()
		cur.DecidedAt, cur.ProbedAt = t, in.GetCapabilities().GetProbedAt()
		ch := selection.Change(old, cur)
		if ch != nil {
			ch.At = t
			h.log.Info("engine choice changed", "instance", name, "old", ch.GetOldEngine(), "new", ch.GetNewEngine(), "why", ch.GetOldReason())
		}
		if _, err := h.node.apply(ctx, &v1.Command{Cmd: &v1.Command_RecordEngineDecision{RecordEngineDecision: &v1.RecordEngineDecision{
			Instance: name, Decision: cur, Change: ch,
		}}}); err != nil {
			errs = append(errs, fmt.Errorf("instance %s: recording its engine decision: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
