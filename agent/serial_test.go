package agent

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

func restoreJob(id, instance, backupID string, drop bool) *v1.Job {
	return &v1.Job{Id: id, Kind: v1.JobKind_JOB_KIND_RESTORE, Instance: instance, Attempt: 1,
		Params: &v1.Job_Restore{Restore: &v1.RestoreParams{BackupId: backupID, TargetInstance: instance, DropExisting: drop}}}
}

// serialFixture is an agent on a real MariaDB holding two backups of
// table serial.t that differ in every row, and whose server logs every
// statement (mysql.general_log) so a test can order them.
type serialFixture struct {
	m  *testenv.MariaDB
	db *sql.DB
	s  *fakeStream
}

func newSerialFixture(t *testing.T, name string, fake func(*fakeController), front func(addr string) string) *serialFixture {
	t.Helper()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: name})
	rows := 200000
	if testing.Short() {
		rows = 100000
	}
	m.Exec(t, "CREATE DATABASE serial", "CREATE TABLE serial.t (id INT PRIMARY KEY, v INT NOT NULL, KEY v (v))",
		fmt.Sprintf("INSERT INTO serial.t SELECT seq, seq %% 1000 FROM serial.seq_1_to_%d", rows))
	var fc *fakeController
	if fake != nil {
		fc = startFake(t, fake)
	} else {
		fc = startFake(t)
	}
	addr := fc.addr
	if front != nil {
		addr = front(addr)
	}
	cfg := testConfig(t, name, addr)
	cfg.MySQL = m.DSN
	cfg.Repo = newRepo(t)
	cfg.Parallel = 2
	runAgent(t, cfg)
	f := &serialFixture{m: m, db: m.DB(t), s: fc.next(t, 10*time.Second)}
	f.backup(t, "job-ba", "backup-a")
	// Backup b: every row differs, and there are more of them.
	m.Exec(t, "UPDATE serial.t SET v = v + 5000", fmt.Sprintf("INSERT INTO serial.t SELECT seq, 7 FROM serial.seq_%d_to_%d", rows+1, rows+100))
	f.backup(t, "job-bb", "backup-b")
	return f
}

func (f *serialFixture) backup(t *testing.T, job, id string) {
	t.Helper()
	f.s.assign(backupJob(job, f.s.reg.GetName(), id), lease(job, 1, 1))
	msg := f.s.result(t, job)
	if !msg.GetJobResult().GetOk() {
		t.Fatalf("backup %s: %v", id, msg.GetJobResult())
	}
	f.s.ack(msg.GetSeq())
}

// summary is what tells the two backups apart.
func (f *serialFixture) summary(t *testing.T) string {
	t.Helper()
	var n, sum int64
	if err := f.db.QueryRow("SELECT COUNT(*), SUM(v) FROM serial.t").Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	var idx int
	if err := f.db.QueryRow("SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = 'serial' AND TABLE_NAME = 't' AND INDEX_NAME = 'v'").Scan(&idx); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d rows, sum %d, index v: %d", n, sum, idx)
}

// blockALTER starts a reader that takes serial.t's metadata lock the moment
// the restore creates the table, and holds it until release is called, so
// the restore's ALTER TABLE ... ADD INDEX (run once the table's data is in)
// waits on the server: a long-running statement at a known place, without
// a big table.
func (f *serialFixture) blockALTER(t *testing.T) (release func()) {
	t.Helper()
	conn, err := f.db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	locked := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(testenv.Wait(60 * time.Second))
		for time.Now().Before(deadline) {
			if _, err := conn.ExecContext(context.Background(), "START TRANSACTION"); err != nil {
				locked <- err
				return
			}
			if _, err := conn.ExecContext(context.Background(), "SELECT 1 FROM serial.t LIMIT 0"); err == nil {
				locked <- nil
				return
			}
			_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
		}
		locked <- fmt.Errorf("serial.t not created within a minute")
	}()
	return func() {
		if err := <-locked; err != nil {
			t.Error(err)
		}
		_, _ = conn.ExecContext(context.Background(), "COMMIT")
		_ = conn.Close()
	}
}

// alterID waits for the restore's ALTER TABLE to wait on the server and
// returns its connection id.
func (f *serialFixture) alterID(t *testing.T) int64 {
	t.Helper()
	var id int64
	testenv.WaitFor(t, "the restore's ALTER TABLE waiting for the metadata lock", 60*time.Second, func() error {
		err := f.db.QueryRow("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'ALTER TABLE%' AND STATE LIKE '%metadata lock%'").Scan(&id)
		return err
	})
	return id
}

// TestCancelledRestoreStopsBeforeTheNext: a restore is cancelled while its
// ALTER TABLE ... ADD INDEX waits on the server, and the instance's next
// restore is assigned at once (as the controller did before it waited for
// the agent). The next restore's first DROP reaches the server only after
// the first restore's ALTER is gone from the processlist: the agent killed
// it and waited. The data is then exactly the second backup's.
//
// Before the fix the agent started the second restore at once and
// cancelling only dropped the driver's socket: its DROP ran while the ALTER
// still waited (this test failed with "restore 2 started while ...").
func TestCancelledRestoreStopsBeforeTheNext(t *testing.T) {
	t.Parallel()
	f := newSerialFixture(t, "serial-1", nil, nil)
	inst := f.s.reg.GetName()
	want := f.summary(t)

	f.m.Exec(t, "DROP DATABASE serial", "TRUNCATE mysql.general_log", "SET GLOBAL log_output = 'TABLE'", "SET GLOBAL general_log = ON")
	release := f.blockALTER(t)
	f.s.assign(restoreJob("job-r1", inst, "backup-a", false), lease("job-r1", 1, 10))
	alter := f.alterID(t)

	cancelled := time.Now()
	f.s.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_CancelJob{CancelJob: &v1.JobCancellation{
		JobId: "job-r1", Lease: lease("job-r1", 1, 10), Reason: "operator asked"}}})
	f.s.assign(restoreJob("job-r2", inst, "backup-b", true), lease("job-r2", 1, 11))

	// Watch the ALTER and the second restore's first DROP, by the server's
	// clock. Both are DATETIME(6) text, which sorts as the times do.
	// lastAlive is the server's time of the last look that still saw the
	// ALTER: a DROP logged at or before it ran beside the ALTER. (Blaming a
	// DROP logged before the first look that missed the ALTER would blame
	// the poll's own delay between its two queries, as e2e's
	// TestCancelledRestoreThenNext once did.)
	var lastAlive string
	var firstDrop sql.NullString
	deadline := time.Now().Add(testenv.Wait(60 * time.Second))
	for {
		if time.Now().After(deadline) {
			t.Fatal("restore 1's ALTER still runs a minute after the cancel")
		}
		var now string
		var n int
		if err := f.db.QueryRow("SELECT NOW(6), COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", alter).Scan(&now, &n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Logf("restore 1's ALTER gone %s after the cancellation was sent", time.Since(cancelled).Round(time.Millisecond))
			break
		}
		lastAlive = now
		if err := f.db.QueryRow("SELECT MIN(event_time) FROM mysql.general_log WHERE argument LIKE 'DROP %'").Scan(&firstDrop); err != nil {
			t.Fatal(err)
		}
		if firstDrop.Valid && firstDrop.String <= lastAlive {
			t.Fatalf("restore 2 started (its DROP at %s) while restore 1's ALTER (connection %d) still ran (seen at %s)", firstDrop.String, alter, lastAlive)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The first restore reports its cancellation; the second waits at most
	// for the reader, then runs.
	msg := f.s.result(t, "job-r1")
	if r := msg.GetJobResult(); r.GetOk() || !strings.Contains(r.GetError(), "cancelled by the controller: operator asked") {
		t.Fatalf("restore 1 result %v", r)
	}
	f.s.ack(msg.GetSeq())
	release()
	msg = f.s.result(t, "job-r2")
	if r := msg.GetJobResult(); !r.GetOk() {
		t.Fatalf("restore 2 result %v", r)
	}
	f.s.ack(msg.GetSeq())
	if err := f.db.QueryRow("SELECT MIN(event_time) FROM mysql.general_log WHERE argument LIKE 'DROP %'").Scan(&firstDrop); err != nil || !firstDrop.Valid {
		t.Fatalf("no DROP by restore 2 in the general log: %v", err)
	}
	f.m.Exec(t, "SET GLOBAL general_log = OFF")
	if firstDrop.String <= lastAlive {
		t.Errorf("restore 2's first DROP at %s, while restore 1's ALTER still ran at %s", firstDrop.String, lastAlive)
	}
	t.Logf("restore 1's ALTER last seen at %s, restore 2's first DROP at %s", lastAlive, firstDrop.String)
	if got := f.summary(t); got != want {
		t.Errorf("after restore 2: %s, want backup b's %s", got, want)
	}
}

// freezeProxy forwards TCP connections to a target until frozen: then it
// holds every byte (without closing anything), like a network partition
// that neither side's TCP notices.
type freezeProxy struct {
	addr   string
	mu     sync.Mutex
	frozen bool
	thawed chan struct{}
}

func startFreezeProxy(t *testing.T, target string) *freezeProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{addr: l.Addr().String(), thawed: make(chan struct{})}
	close(p.thawed)
	var conns []net.Conn
	var cmu sync.Mutex
	t.Cleanup(func() {
		_ = l.Close()
		p.freeze(false)
		cmu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		cmu.Unlock()
	})
	go testenv.ProxyAccept(l, target, func(c, u net.Conn) bool {
		cmu.Lock()
		conns = append(conns, c, u)
		cmu.Unlock()
		go p.pipe(u, c)
		go p.pipe(c, u)
		return true
	})
	return p
}

func (p *freezeProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			thawed := p.thawed
			p.mu.Unlock()
			<-thawed
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				_ = dst.Close()
			}
			return
		}
	}
}

func (p *freezeProxy) freeze(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on == p.frozen {
		return
	}
	p.frozen = on
	if on {
		p.thawed = make(chan struct{})
	} else {
		close(p.thawed)
	}
}

// TestPartitionedAgentStopsItsJob: the agent's session is cut silently (a
// proxy holds every byte) while its restore's ALTER TABLE waits on the
// server. Nothing can reach the agent, yet once a lease and the takeover
// grace have passed since the last renewal the controller acknowledged,
// the agent cancels the job and kills the ALTER: the server is quiet by
// the time the leader may give the instance to another job. Not sooner:
// a new leader would have kept the lease that long for an agent still
// reconnecting. Before the fix the job ran on until the network came back
// (and its ALTER after that).
func TestPartitionedAgentStopsItsJob(t *testing.T) {
	t.Parallel()
	const hb, leaseTTL, grace = 200 * time.Millisecond, 2 * time.Second, 1500 * time.Millisecond
	var proxy *freezeProxy
	f := newSerialFixture(t, "serial-2", func(fc *fakeController) { fc.heartbeat, fc.lease, fc.grace, fc.acks = hb, leaseTTL, grace, true },
		func(addr string) string { proxy = startFreezeProxy(t, addr); return proxy.addr })
	inst := f.s.reg.GetName()

	f.m.Exec(t, "DROP DATABASE serial")
	release := f.blockALTER(t)
	defer release()
	f.s.assign(restoreJob("job-p", inst, "backup-a", false), lease("job-p", 1, 20))
	alter := f.alterID(t)
	// Let a renewal of the job's lease be acknowledged, then cut.
	f.s.heartbeat(t, "heartbeat listing job-p", func(h *v1.Heartbeat) bool { return len(h.GetRunning()) == 1 })
	time.Sleep(2 * hb)
	frozen := time.Now()
	proxy.freeze(true)

	var gone time.Duration
	testenv.WaitFor(t, "the agent to kill its ALTER by itself", leaseTTL+grace+30*time.Second, func() error {
		var n int
		if err := f.db.QueryRow("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", alter).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("ALTER (connection %d) still runs %s after the cut", alter, time.Since(frozen).Round(time.Millisecond))
		}
		gone = time.Since(frozen)
		return nil
	})
	t.Logf("ALTER killed %s after the cut (lease %s, takeover grace %s, heartbeat %s)", gone.Round(time.Millisecond), leaseTTL, grace, hb)
	// Not before the lease could have run out on any leader: the last
	// acknowledged heartbeat left at most about two heartbeats before the
	// cut (one interval, plus the ack's way back).
	if gone < leaseTTL+grace-3*hb {
		t.Errorf("the agent stopped its job %s after the cut, before the lease (%s) and a new leader's grace (%s) could have run out", gone, leaseTTL, grace)
	}
	// The network comes back: the agent reports why it stopped.
	proxy.freeze(false)
	msg := f.s.result(t, "job-p")
	if r := msg.GetJobResult(); r.GetOk() || !strings.Contains(r.GetError(), "the agent stopped the job by itself") {
		t.Fatalf("result %v", r)
	}
}
