package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// resultDropper is a TCP proxy between an agent and its controller that,
// once muted, drops everything the agent sends (heartbeats, results) and
// still forwards what the controller sends: an agent whose result never
// arrives, as if it died right after its manifest PUT.
type resultDropper struct {
	ln    net.Listener
	muted atomic.Bool
}

func startResultDropper(t *testing.T, target string) *resultDropper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &resultDropper{ln: ln}
	t.Cleanup(func() { _ = ln.Close() })
	go testenv.ProxyAccept(ln, target, func(c, u net.Conn) bool {
		go func() {
			defer func() { _ = u.Close() }()
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 && !p.muted.Load() {
					if _, werr := u.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
		go func() {
			defer func() { _ = c.Close() }()
			_, _ = io.Copy(c, u)
		}()
		return true
	})
	return p
}

// TestOrphanManifestReconcile: an agent stores its backup's manifest, its
// result never reaches the controller (a proxy drops it) and it is killed
// (-9); the job's second attempt, on a new agent, becomes the catalog's
// backup. While the first attempt still holds its lease its manifest is
// live and `repo reconcile` keeps it; afterwards `backups --repo` shows it
// superseded, a dry run lists it without deleting, and the leader's sweep
// (a reconcile job on the agent) deletes it, never the second attempt's
// nor a standalone backup's. gc then frees the chunks only a1 held.
func TestOrphanManifestReconcile(t *testing.T) {
	db := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "orphans"})
	rows := 400000
	if testing.Short() {
		rows = 250000
	}
	loadBig(t, db, rows)
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	repo := "file://" + repoDir
	must(t, 20*time.Second, "repo", "init", "--repo", repo)
	ca := testenv.NewTestCA(t)
	setCredentials(t, filepath.Dir(ca.Files(t, testenv.Admin()).CA))

	// Long enough for the live check below on a loaded machine (the
	// manifest came about 1s after the job started running here).
	leaseDur := testenv.Wait(8 * time.Second)
	addr, dataDir := testenv.FreeAddr(t), filepath.Join(dir, "c1")
	ctlArgs := func(extra ...string) []string {
		a := []string{"controller", "--data-dir", dataDir, "--grpc-addr", addr,
			"--raft-heartbeat-timeout", "300ms", "--raft-election-timeout", "300ms", "--raft-leader-lease-timeout", "150ms",
			"--raft-commit-timeout", "10ms", "--heartbeat-interval", "200ms", "--lease-duration", leaseDur.String(), "--log-level", "debug"}
		return append(append(a, extra...), testenv.Args(ca.Files(t, testenv.Controller("c1")))...)
	}
	// The sweep is off at first: the CLI looks at the orphan before the
	// leader removes it.
	ctl := startProc(t, "c1", ctlArgs("--node-id", "c1", "--raft-addr", testenv.FreeAddr(t), "--bootstrap", "--reconcile-interval", "0")...)
	var conn *client.Conn
	testenv.WaitFor(t, "the controller to serve", 20*time.Second, func() error {
		if ctl.Exited() {
			t.Fatalf("controller exited:\n%s", ctl.LogTail())
		}
		c, err := client.DialAny(t.Context(), []string{addr}, client.Options{TLS: ca.Source(t, testenv.Admin()).ClientConfig(), ProbeTimeout: time.Second})
		if err == nil {
			conn = c
		}
		return err
	})
	t.Cleanup(func() { _ = conn.Close() })
	ctlFlags := []string{"--controller", addr}
	job := func(id string) *v1.Job {
		t.Helper()
		var j *v1.Job
		testenv.WaitFor(t, "job "+id, 20*time.Second, func() error {
			r, err := conn.Control.GetJob(t.Context(), &v1.GetJobRequest{Id: id, Consistent: true})
			j = r.GetJob()
			return err
		})
		return j
	}
	agentArgs := func(ctlAddr string) []string {
		return append([]string{"agent", "--controller", ctlAddr, "--name", "db", "--mysql", db.DSN, "--repo", repo, "--parallel", "1", "--log-level", "debug"},
			testenv.Args(ca.Files(t, testenv.Agent("db")))...)
	}
	waitConnected := func(want bool) {
		t.Helper()
		testenv.WaitFor(t, fmt.Sprintf("agent db connected=%v", want), 30*time.Second, func() error {
			r := tm(t, 10*time.Second, append([]string{"agents", "-o", "json"}, ctlFlags...)...)
			if r.code != 0 || strings.Contains(r.out, `"connected":true`) != want {
				return fmt.Errorf("agents: %s %s", r.out, r.err)
			}
			return nil
		})
	}

	// Attempt 1, through the proxy.
	proxy := startResultDropper(t, addr)
	agent1 := startProc(t, "agent1", agentArgs(proxy.ln.Addr().String())...)
	waitConnected(true)
	jobID := lastLine(must(t, 20*time.Second, append([]string{"backup", "--instance", "db"}, ctlFlags...)...).out)
	a1, a2 := jobID+"-a1", jobID+"-a2"
	var running time.Time
	testenv.WaitFor(t, "attempt 1 to run", 30*time.Second, func() error {
		r, err := conn.Control.GetJob(t.Context(), &v1.GetJobRequest{Id: jobID, Consistent: true})
		if err != nil {
			return err
		}
		if st := r.GetJob().GetState(); st != v1.JobState_JOB_STATE_RUNNING {
			if st == v1.JobState_JOB_STATE_SUCCEEDED {
				t.Fatalf("attempt 1 finished before the proxy muted the agent: the sample is too small for this test")
			}
			return fmt.Errorf("job is %s", st)
		}
		proxy.muted.Store(true)
		running = time.Now()
		return nil
	})
	testenv.WaitFor(t, "attempt 1's manifest", 60*time.Second, func() error {
		_, err := os.Stat(filepath.Join(repoDir, archive.ManifestKey(a1)))
		return err
	})
	muted := time.Now()
	t.Logf("attempt 1's manifest stored %s after the job started running", time.Since(running).Round(time.Millisecond))
	// The catalog still holds attempt 1 (its lease has not run out): its
	// manifest is live and must not be touched.
	type entry = map[string]any
	states := func(list []entry) map[string]string {
		out := map[string]string{}
		for _, e := range list {
			out[e["id"].(string)] = fmt.Sprint(e["state"], "/", e["action"])
		}
		return out
	}
	live := decode[[]entry](t, must(t, 20*time.Second, append([]string{"repo", "reconcile", "--repo", repo, "--grace", "0s", "-o", "json"}, ctlFlags...)...))
	if j := job(jobID); j.GetAttempt() != 1 || j.GetState() != v1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("job %s moved on (%s, attempt %d) %s after the mute, before the live check ended: the lease is too short for this machine",
			jobID, j.GetState(), j.GetAttempt(), time.Since(muted))
	}
	if got := states(live); got[a1] != "live/kept" || len(got) != 1 {
		t.Fatalf("reconcile while attempt 1 runs: %v", got)
	}
	// kill -9 before the result is ever acknowledged.
	agent1.Kill()
	proxy.muted.Store(false)
	testenv.WaitFor(t, "attempt 1's lease to run out", 3*leaseDur+10*time.Second, func() error {
		if j := job(jobID); j.GetState() != v1.JobState_JOB_STATE_PENDING {
			return fmt.Errorf("job is %s, attempt %d", j.GetState(), j.GetAttempt())
		}
		return nil
	})
	waitConnected(false)
	// Attempt 2 backs up changed data: part of a1's chunks are its own.
	if _, err := db.DB(t).Exec("UPDATE shop.events SET tag = MD5(tag) WHERE id <= 60000"); err != nil {
		t.Fatal(err)
	}
	startProc(t, "agent2", agentArgs(addr)...)
	testenv.WaitFor(t, "attempt 2 to succeed", 90*time.Second, func() error {
		j := job(jobID)
		switch j.GetState() {
		case v1.JobState_JOB_STATE_SUCCEEDED:
			return nil
		case v1.JobState_JOB_STATE_FAILED, v1.JobState_JOB_STATE_CANCELLED:
			t.Fatalf("job %s %s: %s", jobID, j.GetState(), j.GetReason())
		}
		return fmt.Errorf("job is %s, attempt %d", j.GetState(), j.GetAttempt())
	})
	if j := job(jobID); j.GetResult().GetBackupId() != a2 {
		t.Fatalf("job %s recorded backup %q, want %s", jobID, j.GetResult().GetBackupId(), a2)
	}
	standalone := lastLine(must(t, 120*time.Second, "backup", "--mysql", db.DSN, "--repo", repo).out)

	// The repository listing with the catalog at hand shows a1 superseded.
	listed := map[string]string{}
	for _, e := range decode[[]entry](t, must(t, 20*time.Second, append([]string{"backups", "--repo", repo, "-o", "json"}, ctlFlags...)...)) {
		listed[e["id"].(string)] = fmt.Sprint(e["status"], "/", e["catalog"])
	}
	if want := map[string]string{a1: "superseded/superseded", a2: "complete/catalog", standalone: "complete/unknown"}; fmt.Sprint(listed) != fmt.Sprint(want) {
		t.Errorf("backups --repo --controller: %v\nwant %v", listed, want)
	}
	// A dry run lists it and deletes nothing.
	dry := decode[[]entry](t, must(t, 20*time.Second, append([]string{"repo", "reconcile", "--repo", repo, "--grace", "0s", "--dry-run", "-o", "json"}, ctlFlags...)...))
	if got, want := states(dry), map[string]string{a1: "superseded/would delete", a2: "catalog/kept", standalone: "unknown/kept"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reconcile --dry-run: %v\nwant %v", got, want)
	}
	if _, err := os.Stat(filepath.Join(repoDir, archive.ManifestKey(a1))); err != nil {
		t.Fatalf("after the dry run: %v", err)
	}
	// Within the grace period a superseded manifest is kept.
	graced := decode[[]entry](t, must(t, 20*time.Second, append([]string{"repo", "reconcile", "--repo", repo, "--grace", "1h", "-o", "json"}, ctlFlags...)...))
	if got := states(graced); got[a1] != "grace/kept" {
		t.Errorf("reconcile --grace 1h: %v", got)
	}

	// The chunks only a1 references.
	unique := uniqueChunks(t, repoDir, a1, a2, standalone)
	if len(unique) == 0 {
		t.Fatalf("a1 shares every chunk with a2 and the standalone backup: the update did not change the data")
	}
	t.Logf("%d chunks only %s references", len(unique), a1)

	// The leader's sweep: restart the controller with it on; it submits
	// a reconcile job that runs on the agent and deletes a1.
	ctl.Kill()
	ctl.Args = ctlArgs("--reconcile-interval", "300ms", "--reconcile-grace", "0s")
	ctl.Start()
	var swept *v1.Job
	testenv.WaitFor(t, "the sweep to mark the job swept", 60*time.Second, func() error {
		r, err := conn.Control.GetJob(t.Context(), &v1.GetJobRequest{Id: jobID, Consistent: true})
		if err != nil {
			return err
		}
		if r.GetJob().GetOrphansSweptAt() == nil {
			return fmt.Errorf("job %s not swept yet", jobID)
		}
		swept = r.GetJob()
		return nil
	})
	rj := job(swept.GetOrphansSweptBy())
	if rj.GetKind() != v1.JobKind_JOB_KIND_RECONCILE || rj.GetState() != v1.JobState_JOB_STATE_SUCCEEDED ||
		len(rj.GetReconcile().GetTargets()) != 1 || rj.GetReconcile().GetTargets()[0].GetBackupId() != a1 {
		t.Errorf("reconcile job %v", rj)
	}
	for id, want := range map[string]bool{a1: false, a2: true, standalone: true} {
		_, err := os.Stat(filepath.Join(repoDir, archive.ManifestKey(id)))
		if (err == nil) != want {
			t.Errorf("manifest %s present %v after the sweep, want %v", id, err == nil, want)
		}
	}
	after := decode[[]entry](t, must(t, 20*time.Second, append([]string{"repo", "reconcile", "--repo", repo, "--grace", "0s", "-o", "json"}, ctlFlags...)...))
	if got, want := states(after), map[string]string{a2: "catalog/kept", standalone: "unknown/kept"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reconcile after the sweep: %v\nwant %v", got, want)
	}

	// A partitioned agent that stores its manifest after the sweep (and
	// then dies) leaves it again: the job is swept, so `repo reconcile`
	// removes that one.
	storeManifest(t, repoDir, a1, swept.GetPreviousAttempts()[0].GetLease())
	late := decode[[]entry](t, must(t, 20*time.Second, append([]string{"repo", "reconcile", "--repo", repo, "--grace", "0s", "-o", "json"}, ctlFlags...)...))
	if got, want := states(late), map[string]string{a1: "superseded/deleted", a2: "catalog/kept", standalone: "unknown/kept"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reconcile of a late manifest: %v\nwant %v", got, want)
	}
	if _, err := os.Stat(filepath.Join(repoDir, archive.ManifestKey(a1))); err == nil {
		t.Errorf("the late manifest %s is still stored after reconcile", a1)
	}

	// gc frees what only a1 held (the second run deletes what the first
	// condemned), and nothing a2 or the standalone backup needs.
	for range 2 {
		must(t, 60*time.Second, "repo", "gc", "--repo", repo, "--grace", "0s")
	}
	left := 0
	for _, k := range unique {
		if _, err := os.Stat(filepath.Join(repoDir, k)); err == nil {
			left++
		}
	}
	if left != 0 {
		t.Errorf("%d of the %d chunks only a1 referenced are still stored after two gc runs", left, len(unique))
	}
	must(t, 120*time.Second, "repo", "verify", "--repo", repo)
}

// storeManifest writes a small backup id under fence, as an attempt
// holding that lease would.
func storeManifest(t *testing.T, repoDir, id string, fence *v1.LeaseToken) {
	t.Helper()
	ctx := context.Background()
	st, err := file.Open(repoDir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	r, err := archive.Open(ctx, st, archive.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = r.WithBackup(ctx, archive.BackupOptions{ID: id, Engine: "logical", Fence: fence}, func(_ context.Context, b *archive.Backup) error {
		w, err := b.Stream("meta", nil)
		if err != nil {
			return err
		}
		if _, err := io.WriteString(w, "{}"); err != nil {
			return err
		}
		return w.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// uniqueChunks returns the store keys of the chunks backup only
// references, none of others.
func uniqueChunks(t *testing.T, repoDir, only string, others ...string) []string {
	t.Helper()
	ctx := context.Background()
	st, err := file.Open(repoDir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	r, err := archive.Open(ctx, st, archive.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	chunks := func(id string) map[string]bool {
		m, err := r.LoadManifest(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, s := range m.GetStreams() {
			for _, c := range s.GetChunks() {
				h := hex.EncodeToString(c.GetId())
				out["chunks/"+h[:2]+"/"+h] = true
			}
		}
		return out
	}
	mine := chunks(only)
	for _, o := range others {
		for k := range chunks(o) {
			delete(mine, k)
		}
	}
	keys := make([]string, 0, len(mine))
	for k := range mine {
		keys = append(keys, k)
	}
	return keys
}
