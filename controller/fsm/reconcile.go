package fsm

import (
	"errors"

	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// applyFinishReconcile marks the backup jobs a reconcile job swept: the
// manifests their refused or superseded attempts left are gone, so the
// periodic sweep does not name them again. The reconcile job must exist
// and name each job it claims; a job deleted since (job record retention)
// or swept already is skipped.
func applyFinishReconcile(w *catalog.Write, c *v1.FinishReconcile) (proto.Message, error) {
	rj, err := w.Job(c.GetJobId())
	if err != nil {
		return nil, err
	}
	if rj.GetKind() != v1.JobKind_JOB_KIND_RECONCILE || rj.GetReconcile() == nil {
		return nil, catalog.Errorf(catalog.ErrInvalid, "FinishReconcile: job %s is a %s job, not a reconcile job", rj.GetId(), kindName(rj.GetKind()))
	}
	named := map[string]bool{}
	for _, id := range rj.GetReconcile().GetJobIds() {
		named[id] = true
	}
	changed := 0
	for _, id := range c.GetSweptJobIds() {
		if !named[id] {
			return nil, catalog.Errorf(catalog.ErrInvalid, "FinishReconcile: reconcile job %s was not given job %s", rj.GetId(), id)
		}
		old, err := w.Job(id)
		if errors.Is(err, catalog.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if old.GetOrphansSweptAt() != nil {
			continue
		}
		j := proto.CloneOf(old)
		j.OrphansSweptAt, j.OrphansSweptBy = c.GetSweptAt(), rj.GetId()
		if err := w.PutJob(j); err != nil {
			return nil, err
		}
		changed++
	}
	if changed == 0 {
		return nil, errUnchanged
	}
	return nil, nil
}
