package catalog

import (
	"github.com/hashicorp/go-memdb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

const binlogStreamsTableName = "binlog_streams"

// binlogStreamsTable: one row per binlog stream, keyed by the stream's name
// (the instance its job was started for). Rows outlive their jobs: the
// archived range and the last watermark stay known after a stop.
func binlogStreamsTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: binlogStreamsTableName,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Instance"}},
		},
	}
}

// BinlogStream returns the stream record named instance, or ErrNotFound.
func (r *Read) BinlogStream(instance string) (*v1.BinlogStream, error) {
	obj, _ := r.first(binlogStreamsTableName, instance, nil)
	if obj == nil {
		return nil, Errorf(ErrNotFound, "instance %q has no binlog stream record", instance)
	}
	return obj.(*v1.BinlogStream), nil
}

// BinlogStreams returns every stream record, by name.
func (r *Read) BinlogStreams() []*v1.BinlogStream {
	return all[*v1.BinlogStream](r, binlogStreamsTableName, "id")
}

// PutBinlogStream creates or replaces a stream record. s must not change
// afterwards.
func (w *Write) PutBinlogStream(s *v1.BinlogStream) error {
	return w.insert(binlogStreamsTableName, s)
}

// ClusterLabel is the instance label that makes instances one replication
// group: a binlog stream covers the whole group and follows its primary.
const ClusterLabel = "cluster"

// Group returns the instances that share in's `cluster` label, by name, in
// first; just in when it has none.
func (r *Read) Group(in *v1.Instance) []*v1.Instance {
	c := in.GetLabels()[ClusterLabel]
	if c == "" {
		return []*v1.Instance{in}
	}
	out := []*v1.Instance{in}
	for _, o := range r.Instances() {
		if o.GetName() != in.GetName() && o.GetLabels()[ClusterLabel] == c {
			out = append(out, o)
		}
	}
	return out
}

// ActiveStreamOf returns the active binlog stream job that covers instance
// in: its own, or one of its `cluster` group's; nil when none.
func (r *Read) ActiveStreamOf(in *v1.Instance) *v1.Job {
	for _, m := range r.Group(in) {
		for _, j := range r.ActiveJobsOf(m.GetName()) {
			if j.GetKind() == v1.JobKind_JOB_KIND_BINLOG_STREAM {
				return j
			}
		}
	}
	return nil
}
