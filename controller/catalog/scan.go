package catalog

import v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"

// EachJob calls fn for every job, those of the jobs table in id order and
// then the finished ones in id order (decoded one by one), without
// collecting them. Metrics count jobs with EachJobKindState instead.
func (r *Read) EachJob(fn func(*v1.Job)) {
	each(r, jobsTableName, fn)
	r.fin.byID.Scan(func(e *fjob) bool {
		fn(e.job())
		return true
	})
}

func each[T any](r *Read, table string, fn func(T)) {
	it, err := r.txn.Get(table, "id")
	if err != nil {
		panic("catalog: " + table + " scan: " + err.Error())
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		fn(obj.(T))
	}
}
