package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tidemark-backup/tidemark/internal/metrics"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// recordStandaloneBackup writes a standalone backup's run to
// --metrics-textfile. A file that cannot be written is a warning: the
// backup's own outcome stands.
func recordStandaloneBackup(s *streams, path, instance, engine string, start time.Time, m *v1.Manifest, err error) {
	run := metrics.Run{Instance: instance, End: time.Now(), Job: metrics.Job{
		Kind: "backup", Engine: engine, Err: err, Canceled: errors.Is(err, context.Canceled), Took: time.Since(start),
	}}
	if err == nil && m != nil {
		run.LogicalBytes, run.StoredBytes, run.NewBytes = m.GetLogicalBytes(), m.GetStoredBytes(), m.GetNewStoredBytes()
		run.Lock = m.GetLockDuration().AsDuration()
	}
	if werr := metrics.WriteRunTextfile(path, run); werr != nil {
		fmt.Fprintln(s.err, "warning: the run is not recorded:", werr)
	}
}
