package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/controller/fsm"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// BenchmarkCatalog: a leader whose catalog holds TIDEMARK_BENCH_JOBS
// finished jobs (default 1,000,000) and TIDEMARK_BENCH_BACKUPS backups
// (default 100,000) over TIDEMARK_BENCH_INSTANCES instances (2,000).
//
// A real controller process bootstraps (plaintext, loopback, metrics on)
// and stops; this process replays its Raft log into an FSM, adds the
// generated history straight into that catalog and writes it as the node's
// newest Raft snapshot, exactly as the FSM persists one; the process then
// starts again and restores it. Measured: the snapshot's size and encoding
// time (what Persist does), its decoding and loading time here (what
// Restore does) and the restarted process's time to serve, the jobs and
// backups listings over gRPC (first pages, deep pages followed by token,
// filtered pages; p50/p99), the leader's RSS and Go heap, and, in this
// process, the first history pruning down to the default 100,000 jobs (half
// the jobs in a smaller catalog).
//
// The process runs with --job-history-max 0 --job-history-age 0 (no
// pruning) so that the listings see the whole catalog.
func BenchmarkCatalog(b *testing.B) {
	jobs := envInt(b, "TIDEMARK_BENCH_JOBS", 1_000_000)
	backups := envInt(b, "TIDEMARK_BENCH_BACKUPS", 100_000)
	instances := envInt(b, "TIDEMARK_BENCH_INSTANCES", 2000)
	calls := envInt(b, "TIDEMARK_BENCH_CALLS", 200)
	if backups > jobs {
		b.Fatalf("TIDEMARK_BENCH_BACKUPS=%d: at most TIDEMARK_BENCH_JOBS (%d), each backup is a job's", backups, jobs)
	}
	bin := buildTidemark(b)
	for range b.N {
		dir := b.TempDir()
		grpcAddr, raftAddr, metricsAddr := testenv.FreeAddr(b), testenv.FreeAddr(b), testenv.FreeAddr(b)
		args := []string{"controller", "--node-id", "c1", "--data-dir", filepath.Join(dir, "data"), "--grpc-addr", grpcAddr,
			"--raft-addr", raftAddr, "--insecure", "--metrics-addr", metricsAddr, "--pprof", "--job-history-max", "0", "--job-history-age", "0"}
		if l := os.Getenv("TIDEMARK_BENCH_MEMORY_LIMIT"); l != "" {
			args = append(args, "--memory-limit", l)
		}
		child := testenv.NewChild(b, "c1", bin, append(args, "--bootstrap")...)
		child.Start()
		waitServing(b, child, grpcAddr)
		child.Signal(syscall.SIGTERM)
		select {
		case <-child.Done():
		case <-time.After(30 * time.Second):
			b.Fatalf("c1 did not stop on SIGTERM:\n%s", child.LogTail())
		}

		f, last, conf := replay(b, filepath.Join(dir, "data"))
		t0 := time.Now()
		generate(b, f, jobs, backups, instances)
		b.Logf("generated %d jobs and %d backups in %s", jobs, backups, time.Since(t0).Round(time.Millisecond))

		t0 = time.Now()
		snap, err := fsm.Marshal(f.Store())
		if err != nil {
			b.Fatal(err)
		}
		enc := time.Since(t0)
		t0 = time.Now()
		g := fsm.New()
		if err := g.Restore(io.NopCloser(strings.NewReader(string(snap)))); err != nil {
			b.Fatal(err)
		}
		dec := time.Since(t0)
		g = nil
		b.ReportMetric(float64(len(snap))/(1<<20), "snapshot_MiB")
		b.ReportMetric(enc.Seconds(), "snapshot_encode_s")
		b.ReportMetric(dec.Seconds(), "restore_s")
		writeSnapshot(b, filepath.Join(dir, "data"), last, conf, snap)

		// The catalog stays in this process for the pruning at the end;
		// the controller restarts on the snapshot.
		child = testenv.NewChild(b, "c1-restored", bin, args...)
		t0 = time.Now()
		child.Start()
		conn := waitServing(b, child, grpcAddr)
		testenv.WaitFor(b, "c1 to lead again", 5*time.Minute, func() error {
			st, err := conn.Control.ClusterStatus(context.Background(), &v1.ClusterStatusRequest{})
			if err != nil || st.GetLeaderId() != "c1" {
				return fmt.Errorf("leader %q: %w", st.GetLeaderId(), err)
			}
			return nil
		})
		b.ReportMetric(time.Since(t0).Seconds(), "process_restart_s")

		measureListings(b, conn, instances, calls)
		b.ReportMetric(procStatusMiB(child.Pid(), "VmRSS:"), "leader_RSS_MiB")
		b.ReportMetric(procStatusMiB(child.Pid(), "VmHWM:"), "leader_peak_RSS_MiB")
		b.ReportMetric(scrapeGauge(b, metricsAddr, "go_memstats_heap_inuse_bytes")/(1<<20), "leader_heap_inuse_MiB")
		// The live heap: a heap profile with gc=1 collects first
		// (TIDEMARK_BENCH_HEAP_PROFILE: a file to keep it in).
		if resp, err := http.Get("http://" + metricsAddr + "/debug/pprof/heap?gc=1"); err == nil {
			out := io.Writer(io.Discard)
			if p := os.Getenv("TIDEMARK_BENCH_HEAP_PROFILE"); p != "" {
				f, err := os.Create(p)
				if err != nil {
					b.Fatal(err)
				}
				defer func() { _ = f.Close() }()
				out = f
			}
			_, _ = io.Copy(out, resp.Body)
			_ = resp.Body.Close()
		}
		live := scrapeGauge(b, metricsAddr, "go_memstats_heap_inuse_bytes")
		b.ReportMetric(live/(1<<20), "leader_heap_after_gc_MiB")
		b.ReportMetric(live/float64(jobs), "heap_B_per_job_with_backups")
		// In use counts whole spans; alloc only live objects: the
		// difference is fragmentation (spans part freed).
		b.ReportMetric(scrapeGauge(b, metricsAddr, "go_memstats_heap_alloc_bytes")/(1<<20), "leader_heap_alloc_after_gc_MiB")
		_ = conn.Close()
		child.Kill()

		measurePrune(b, f, min(100000, jobs/2))
	}
}

func waitServing(b *testing.B, child *testenv.Child, addr string) *client.Conn {
	b.Helper()
	var conn *client.Conn
	testenv.WaitFor(b, child.Name+" to serve gRPC", 5*time.Minute, func() error {
		if child.Exited() {
			b.Fatalf("%s exited:\n%s", child.Name, child.LogTail())
		}
		c, err := client.DialAny(context.Background(), []string{addr}, withProbe(client.Options{Insecure: true}, time.Second))
		conn = c
		return err
	})
	return conn
}

// replay applies a stopped node's Raft log to a new FSM, and returns the
// last entry and the latest configuration (with the index of its entry).
func replay(b *testing.B, dataDir string) (*fsm.FSM, *raft.Log, confAt) {
	b.Helper()
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dataDir, "raft.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = bolt.Close() }()
	first, _ := bolt.FirstIndex()
	lastIdx, _ := bolt.LastIndex()
	if first == 0 || lastIdx == 0 {
		b.Fatalf("the bootstrapped node's Raft log is empty")
	}
	f := fsm.New()
	var conf confAt
	last := &raft.Log{}
	for i := first; i <= lastIdx; i++ {
		l := &raft.Log{}
		if err := bolt.GetLog(i, l); err != nil {
			b.Fatalf("Raft log entry %d: %v", i, err)
		}
		switch l.Type {
		case raft.LogCommand:
			f.Apply(l)
		case raft.LogConfiguration:
			conf = confAt{c: raft.DecodeConfiguration(l.Data), index: l.Index}
		}
		last = l
	}
	return f, last, conf
}

type confAt struct {
	c     raft.Configuration
	index uint64
}

// writeSnapshot stores snap as the node's newest Raft snapshot, at its
// last log entry: on start, raft restores it and has nothing to replay.
func writeSnapshot(b *testing.B, dataDir string, last *raft.Log, conf confAt, snap []byte) {
	b.Helper()
	store, err := raft.NewFileSnapshotStore(dataDir, 2, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	_, trans := raft.NewInmemTransport("")
	sink, err := store.Create(raft.SnapshotVersionMax, last.Index, last.Term, conf.c, conf.index, trans)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := sink.Write(snap); err != nil {
		b.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		b.Fatal(err)
	}
}

// generate adds jobs finished jobs and backups backups (those of every
// (jobs/backups)-th job) on instances instances, a year of history: each
// job a backup run by a policy, with its lease, result and, for one in ten,
// a lost first attempt; each backup with its consistency point, fence and
// labels. Sizes of the fields are those of real records.
func generate(b *testing.B, f *fsm.FSM, jobs, backups, instances int) {
	b.Helper()
	start := time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC)
	step := 365 * 24 * time.Hour / time.Duration(jobs)
	every := jobs
	if backups > 0 {
		every = jobs / backups
	}
	w := f.Store().Write()
	defer w.Abort()
	for i := range instances {
		name := fmt.Sprintf("db%04d", i)
		if err := w.PutInstance(&v1.Instance{Name: name, Agent: name, Labels: map[string]string{"env": "prod", "dc": "eu1"},
			UpdatedAt: timestamppb.New(start)}); err != nil {
			b.Fatal(err)
		}
	}
	states := []v1.JobState{v1.JobState_JOB_STATE_SUCCEEDED, v1.JobState_JOB_STATE_FAILED, v1.JobState_JOB_STATE_CANCELLED}
	nb := 0
	for i := range jobs {
		in := fmt.Sprintf("db%04d", i%instances)
		created := start.Add(time.Duration(i) * step)
		id := fmt.Sprintf("nightly-0-%s-%d", in, created.Unix())
		st := states[0]
		withBackup := nb < backups && i%every == 0
		if !withBackup {
			switch i % 10 {
			case 3:
				st = states[1]
			case 7:
				st = states[2]
			}
		}
		lease := &v1.LeaseToken{Term: 3, Index: uint64(1000 + i), JobId: id}
		bid := catalog.AttemptBackupID(id, 1)
		j := &v1.Job{
			Id: id, Kind: v1.JobKind_JOB_KIND_BACKUP, Instance: in, State: st, Attempt: 1, Lease: lease, Agent: in,
			CreatedAt: timestamppb.New(created), UpdatedAt: timestamppb.New(created.Add(7 * time.Minute)),
			AssignedAt: timestamppb.New(created.Add(time.Second)), Policy: "nightly", RunKey: in,
			ScheduledFor: timestamppb.New(created), MaxAttempts: 2,
			Params: &v1.Job_Backup{Backup: &v1.BackupParams{Engine: "logical", BackupId: bid, RepositoryUri: "s3://backups/fleet"}},
		}
		switch st {
		case states[0]:
			j.Result = &v1.JobResult{BackupId: bid, ManifestKey: "manifests/" + bid}
		case states[1]:
			j.Reason = "dumping table shop.orders: Error 2013 (HY000): Lost connection to server during query"
			j.Result = &v1.JobResult{Error: j.Reason}
		default:
			j.Reason = "cancelled by alice"
		}
		if st != states[0] {
			// The attempt may have left a manifest: the reconcile sweep,
			// which runs every hour, has looked at it since.
			j.OrphansSweptAt, j.OrphansSweptBy = timestamppb.New(created.Add(2*time.Hour)), "reconcile-"+id
		}
		if i%10 == 5 {
			j.PreviousAttempts = []*v1.JobAttempt{{Attempt: 1, Agent: in, Lease: &v1.LeaseToken{Term: 2, Index: uint64(900 + i), JobId: id},
				AssignedAt: timestamppb.New(created), EndedAt: timestamppb.New(created.Add(20 * time.Second)),
				Error: "lease expired: agent " + in + " stopped heartbeating"}}
		}
		if err := w.PutJob(j); err != nil {
			b.Fatal(err)
		}
		if withBackup {
			nb++
			if err := w.PutBackup(&v1.Backup{
				Id: bid, Instance: in, Engine: "logical", Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE,
				ManifestKey: "manifests/" + bid, RepositoryUri: "s3://backups/fleet",
				StartedAt: timestamppb.New(created.Add(2 * time.Second)), FinishedAt: timestamppb.New(created.Add(7 * time.Minute)),
				SizeBytes: 40 << 30, StoredBytes: 11 << 30, JobId: id, Fence: lease, Policy: "nightly", ScheduledFor: timestamppb.New(created),
				Consistency: &v1.ConsistencyPoint{BinlogFile: "mysql-bin.004211", BinlogPosition: 918273645, GtidSet: "0-1-88172635,1-2-1772"},
				Labels:      map[string]string{"policy": "nightly"},
			}); err != nil {
				b.Fatal(err)
			}
		}
	}
	w.Commit()
}

// measureListings times ListJobs and ListBackups calls of the default page
// size (100; and 1000) against the leader: the newest page, pages deep into the
// listing (followed by token from the newest), one instance's pages, one
// state's, and a kind filter that matches nothing (the bounded walk).
func measureListings(b *testing.B, conn *client.Conn, instances, calls int) {
	b.Helper()
	ctx := context.Background()
	type query struct {
		name string
		call func(tok string) (string, int, error)
	}
	jobs := func(req *v1.ListJobsRequest) func(string) (string, int, error) {
		return func(tok string) (string, int, error) {
			r := proto.CloneOf(req)
			r.PageToken = tok
			resp, err := conn.Control.ListJobs(ctx, r)
			return resp.GetNextPageToken(), len(resp.GetJobs()), err
		}
	}
	backupsQ := func(req *v1.ListBackupsRequest) func(string) (string, int, error) {
		return func(tok string) (string, int, error) {
			r := proto.CloneOf(req)
			r.PageToken = tok
			resp, err := conn.Control.ListBackups(ctx, r)
			return resp.GetNextPageToken(), len(resp.GetBackups()), err
		}
	}
	inst := fmt.Sprintf("db%04d", instances/2)
	for _, q := range []query{
		{"jobs", jobs(&v1.ListJobsRequest{})},
		{"jobs_page1000", jobs(&v1.ListJobsRequest{PageSize: 1000})},
		{"jobs_instance", jobs(&v1.ListJobsRequest{Instance: inst})},
		{"jobs_failed", jobs(&v1.ListJobsRequest{States: []v1.JobState{v1.JobState_JOB_STATE_FAILED}})},
		{"jobs_kind_restore", jobs(&v1.ListJobsRequest{Kind: v1.JobKind_JOB_KIND_RESTORE})},
		{"backups", backupsQ(&v1.ListBackupsRequest{})},
		{"backups_page1000", backupsQ(&v1.ListBackupsRequest{PageSize: 1000})},
		{"backups_instance", backupsQ(&v1.ListBackupsRequest{Instance: inst})},
	} {
		// Follow the listing page by page, back to the newest page when it
		// ends: calls pages in all, first and deep ones.
		var lat []time.Duration
		tok, items := "", 0
		for range calls {
			t0 := time.Now()
			next, n, err := q.call(tok)
			lat = append(lat, time.Since(t0))
			if err != nil {
				b.Fatalf("%s: %v", q.name, err)
			}
			items += n
			tok = next
		}
		slices.Sort(lat)
		b.ReportMetric(percentileMs(lat, 0.5), q.name+"_p50_ms")
		b.ReportMetric(percentileMs(lat, 0.99), q.name+"_p99_ms")
		b.Logf("%s: %d calls, %d records, p50 %.1f ms, p99 %.1f ms, max %.1f ms", q.name, calls, items,
			percentileMs(lat, 0.5), percentileMs(lat, 0.99), percentileMs(lat, 1))
	}
}

// measurePrune applies PruneCatalog entries to the benchmark's own FSM,
// as the leader's first pass after an upgrade would, down to keep finished
// jobs (the default 100,000, or half the catalog when smaller): entries,
// the slowest entry's apply time (every node's apply loop is blocked that
// long), total time, snapshot after.
func measurePrune(b *testing.B, f *fsm.FSM, keep int) {
	b.Helper()
	at := timestamppb.New(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	var worst, total time.Duration
	entries, removed := 0, 0
	// Each entry resumes where the previous one stopped, as the leader's
	// pruneHistory does.
	var resumeNanos int64
	var resumeID string
	for i := uint64(1); ; i++ {
		data, _ := fsm.Encode(&v1.Command{Cmd: &v1.Command_PruneCatalog{PruneCatalog: &v1.PruneCatalog{At: at, MaxJobs: uint32(keep),
			ResumeAfterNanos: resumeNanos, ResumeAfterId: resumeID}}})
		t0 := time.Now()
		r := f.Apply(&raft.Log{Index: 1<<40 + i, Term: 99, Type: raft.LogCommand, Data: data}).(*fsm.Response)
		d := time.Since(t0)
		if r.Err != nil {
			b.Fatal(r.Err)
		}
		entries++
		total += d
		worst = max(worst, d)
		res := r.Value.(*v1.PruneCatalogResult)
		removed += int(res.GetJobsRemoved())
		if !res.GetMore() {
			break
		}
		if res.GetResumeAfterId() != "" {
			resumeNanos, resumeID = res.GetResumeAfterNanos(), res.GetResumeAfterId()
		}
	}
	runtime.GC()
	snap, _ := fsm.Marshal(f.Store())
	b.ReportMetric(float64(worst)/float64(time.Millisecond), "prune_entry_max_ms")
	b.ReportMetric(total.Seconds(), "prune_total_s")
	b.ReportMetric(float64(len(snap))/(1<<20), "snapshot_after_prune_MiB")
	b.Logf("pruning: %d jobs removed in %d entries, %s in all, slowest entry %s; snapshot after: %.1f MiB",
		removed, entries, total.Round(time.Millisecond), worst.Round(time.Millisecond), float64(len(snap))/(1<<20))
}

// scrapeGauge reads one unlabelled metric from a plaintext /metrics.
func scrapeGauge(b *testing.B, addr, name string) float64 {
	b.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatalf("scraping %s: %v", addr, err)
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	b.Fatalf("no %s in %s/metrics", name, addr)
	return 0
}
