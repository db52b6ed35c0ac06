package selection

import (
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Engine metadata keys selection's users record in a manifest.
const (
	// MetaReason: why selection chose the engine (engine auto).
	MetaReason = "selection.reason"
	// MetaFallback: the engine that failed for a capability reason and
	// why, when the backup was written by the fallback engine.
	MetaFallback = "selection.fallback"
)

// Proto is d as the catalog stores it (times are the caller's to stamp).
func (d *Decision) Proto() *v1.EngineDecision {
	out := &v1.EngineDecision{Chosen: d.Chosen(), Notes: d.Notes}
	for _, v := range d.Verdicts {
		out.Verdicts = append(out.Verdicts, &v1.EngineVerdict{Engine: v.Engine, Ok: v.OK, Reason: v.Reason})
	}
	return out
}

// FromProto is the inverse of Proto.
func FromProto(p *v1.EngineDecision) *Decision {
	d := &Decision{Notes: p.GetNotes()}
	for _, v := range p.GetVerdicts() {
		d.Verdicts = append(d.Verdicts, Verdict{Engine: v.GetEngine(), OK: v.GetOk(), Reason: v.GetReason()})
	}
	return d
}

// Change compares an instance's previous decision with a new one: the
// event to record when the chosen engine differs, else nil. A first
// decision (old nil) is no change.
func Change(old, cur *v1.EngineDecision) *v1.EngineChange {
	if old == nil || old.GetChosen() == cur.GetChosen() {
		return nil
	}
	reason := func(d *v1.EngineDecision, e string) string {
		for _, v := range d.GetVerdicts() {
			if v.GetEngine() == e {
				return v.GetReason()
			}
		}
		return ""
	}
	ch := &v1.EngineChange{OldEngine: old.GetChosen(), NewEngine: cur.GetChosen(), NewReason: reason(cur, cur.GetChosen())}
	// Why the old choice lost: its verdict now.
	ch.OldReason = reason(cur, old.GetChosen())
	if ch.OldReason == "" {
		ch.OldReason = reason(old, old.GetChosen())
	}
	return ch
}
