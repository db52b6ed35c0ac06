package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// The roll-forward onto MySQL, against doubles of MySQL (no MySQL on this
// machine; see testenv's MySQLSourceDouble and MySQLReplicaDouble for
// what they cannot show): the source double's binlog is streamed into a
// real file:// repository, and Apply serves the archived segments to the
// replica double as the target.

// archiveDoubles streams the doubles (a failover list) into a fresh
// repository until the archive holds want, and returns its segments.
func archiveDoubles(t *testing.T, want string, during func(), dsns ...string) []File {
	t.Helper()
	st, err := file.Open(filepath.Join(t.TempDir(), "repo"), file.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := archive.Init(context.Background(), st, archive.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(repo.Close)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- binlog.Stream(ctx, binlog.StreamParams{DSNs: dsns, Repo: repo, Instance: "my8",
			Flush: 100 * time.Millisecond, Heartbeat: 200 * time.Millisecond})
	}()
	defer func() {
		cancel()
		if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("stream: %v", err)
		}
	}()
	var a *binlog.Archive
	wait := func(want string) {
		testenv.WaitFor(t, "archive at "+want, 30*time.Second, func() error {
			var err error
			if a, err = binlog.OpenArchive(context.Background(), repo, "my8"); err != nil {
				return err
			}
			if got := a.Status().GTIDPosition; got != want {
				return fmt.Errorf("archive at %q", got)
			}
			return nil
		})
	}
	if during != nil {
		during()
	}
	wait(want)
	var files []File
	for _, s := range a.Segments() {
		files = append(files, File{Name: s.File, ServerID: s.ServerID, Open: func(ctx context.Context) (io.ReadCloser, error) {
			return a.Open(ctx, s)
		}})
	}
	return files
}

// gtids lists uuid:from..uuid:to.
func gtids(uuid string, from, to int) []string {
	var out []string
	for n := from; n <= to; n++ {
		out = append(out, fmt.Sprintf("%s:%d", uuid, n))
	}
	return out
}

// receivedGTIDs lists the Gtid events the replica received.
func receivedGTIDs(ch testenv.ReplicaChannel) []string {
	var out []string
	for _, e := range ch.Events {
		if e.GTID != "" {
			out = append(out, e.GTID)
		}
	}
	return out
}

// receiverSteps is what MySQL 8.0's receiver does, in order
// (rpl_replica.cc), up to the dump.
var receiverSteps = []string{
	"connect", "handshake 8.0.40-tidemark-pitr caching_sha2_password", "auth caching_sha2_password", "auth fast", "login ok",
	"SELECT UNIX_TIMESTAMP()", "SELECT @@GLOBAL.SERVER_ID",
	"SET @master_heartbeat_period = 1000000000, @source_heartbeat_period = 1000000000",
	"SET @master_binlog_checksum = @@global.binlog_checksum, @source_binlog_checksum = @@global.binlog_checksum",
	"SELECT @source_binlog_checksum", "SELECT @@GLOBAL.GTID_MODE", "SELECT @@GLOBAL.SERVER_UUID",
}

func TestApplyMySQLReplicaDouble(t *testing.T) {
	src := testenv.StartMySQLSourceDouble(t, testenv.MySQLSourceOptions{})
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	u := src.UUID
	files := archiveDoubles(t, u+":1-90", func() {
		src.CommitAt(40, t0)
		src.Rotate()
		src.CommitAt(15, t0.Add(10*time.Second))
		src.CommitAt(15, t0.Add(20*time.Second))
		src.Rotate()
		src.CommitAt(20, t0.Add(30*time.Second))
	}, src.DSN)
	var pos75 Point
	for _, p := range txnsOf(t, files) {
		if p.GTID == u+":75" {
			pos75 = p
		}
	}
	base := u + ":1-55" // mid binlog.000002

	for _, tc := range []struct {
		name    string
		version string
		stop    Stop
		last    int
		change  string
	}{
		{"to-gtid", "8.0.36", Stop{GTID: u + ":80"}, 80, "CHANGE REPLICATION SOURCE TO SOURCE_HOST="},
		{"to-time", "8.4.3", Stop{Time: t0.Add(20 * time.Second)}, 70, "CHANGE REPLICATION SOURCE TO SOURCE_HOST="},
		{"to-position", "8.0.21", Stop{File: "binlog.000003", Pos: pos75.Pos}, 74, "CHANGE MASTER TO MASTER_HOST="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{Version: tc.version, GTIDExecuted: base})
			res := apply(t, Params{DSN: rep.DSN, Files: files, StartGTID: base, Stop: tc.stop, Parallel: 8})
			want := fmt.Sprintf("%s:1-%d", u, tc.last)
			if res.Method != MethodReplication || res.EndGTID != want || res.Transactions != tc.last-55 {
				t.Fatalf("apply: method %q, end %s, %d transactions; want replication, %s, %d", res.Method, res.EndGTID, res.Transactions, want, tc.last-55)
			}
			if got := rep.Executed(); got != want {
				t.Fatalf("the replica is at %s, want %s", got, want)
			}
			ch, ok := rep.Channel(pitrConnection)
			if !ok {
				t.Fatal("no tidemark_pitr channel was set up")
			}
			if !slices.Equal(ch.Applied, gtids(u, 56, tc.last)) || len(ch.Skipped) != 0 {
				t.Fatalf("applied %v, skipped %v; want 56..%d once each and nothing skipped", ch.Applied, ch.Skipped, tc.last)
			}
			// The cut, not MySQL's guard: nothing of the base was even sent.
			if got := receivedGTIDs(ch); !slices.Equal(got, gtids(u, 56, tc.last)) {
				t.Fatalf("received %v, want exactly 56..%d", got, tc.last)
			}
			if len(ch.Steps) < len(receiverSteps)+3 || !slices.Equal(ch.Steps[:len(receiverSteps)], receiverSteps) {
				t.Fatalf("receiver steps %q, want them to start %q", ch.Steps, receiverSteps)
			}
			if tail := ch.Steps[len(receiverSteps):]; !strings.HasPrefix(tail[0], "SET @slave_uuid = '"+rep.UUID) || tail[1] != "COM_REGISTER_SLAVE" || tail[2] != "COM_BINLOG_DUMP tidemark-pitr.000002:4" {
				t.Fatalf("after the source UUID: %q", tail)
			}
			if ch.SourceUUID == rep.UUID || ch.SourceUUID == u || ch.SourceUUID == "" {
				t.Fatalf("the source announced UUID %q (replica %s, files' %s)", ch.SourceUUID, rep.UUID, u)
			}
			if !strings.HasPrefix(ch.Change, tc.change) || !strings.Contains(ch.Change, "_AUTO_POSITION=0") || !strings.HasSuffix(ch.Change, "FOR CHANNEL 'tidemark_pitr'") {
				t.Fatalf("set up by %q", ch.Change)
			}
			if ch.Workers != "8" || ch.PreserveOrder != "1" || rep.Var("replica_parallel_workers") != "4" {
				t.Fatalf("ran with %s workers (commit order %s), left %s; want 8, 1, and 4 put back", ch.Workers, ch.PreserveOrder, rep.Var("replica_parallel_workers"))
			}
			if n := len(rep.Channels()); n != 0 {
				t.Fatalf("%d channels left on the target", n)
			}
		})
	}

	// Other logins: MySQL 5.7 (offered mysql_native_password, channels
	// with the old spellings), and a client that answers for another
	// plugin than the one offered (switched by an AuthSwitchRequest).
	for _, tc := range []struct{ version, plugin, switched string }{
		{"5.7.44", "", "auth switch mysql_native_password"},
		{"8.0.36", "mysql_native_password", "auth switch caching_sha2_password"},
	} {
		t.Run("login of "+tc.version+" "+tc.plugin, func(t *testing.T) {
			rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{Version: tc.version, AuthPlugin: tc.plugin, GTIDExecuted: base})
			res := apply(t, Params{DSN: rep.DSN, Files: files, StartGTID: base, Stop: Stop{GTID: u + ":60"}})
			ch, _ := rep.Channel(pitrConnection)
			if rep.Executed() != u+":1-60" || !slices.Equal(ch.Applied, gtids(u, 56, 60)) || res.Method != MethodReplication {
				t.Fatalf("at %s by %s, applied %v", rep.Executed(), res.Method, ch.Applied)
			}
			if !slices.Contains(ch.Steps, tc.switched) || (tc.version == "5.7.44" && !strings.HasPrefix(ch.Change, "CHANGE MASTER TO ")) {
				t.Fatalf("steps %q, set up by %q", ch.Steps, ch.Change)
			}
		})
	}

	t.Run("over TLS", func(t *testing.T) {
		rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDExecuted: base})
		res := apply(t, Params{DSN: rep.DSN, Files: files, StartGTID: base, Stop: Stop{GTID: u + ":60"}, TLS: SourceTLS{Mode: TLSOn}})
		ch, _ := rep.Channel(pitrConnection)
		if res.TLS == nil || !res.TLS.Verified || res.TLS.Sessions < 1 || !strings.HasSuffix(ch.TLS, " verified") || !strings.Contains(ch.Change, "SOURCE_SSL=1, SOURCE_SSL_CA='") || rep.Executed() != u+":1-60" {
			t.Fatalf("TLS %+v, the replica's %q, set up by %q, at %s", res.TLS, ch.TLS, ch.Change, rep.Executed())
		}
	})

	t.Run("plaintext replica refused by a TLS source", func(t *testing.T) {
		rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDExecuted: base})
		defer func() { testHookPlainReplica = false }()
		testHookPlainReplica = true
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(time.Minute))
		defer cancel()
		_, err := Apply(ctx, Params{DSN: rep.DSN, Files: files, StartGTID: base, Stop: Stop{GTID: u + ":60"}, TLS: SourceTLS{Mode: TLSOn}})
		if err == nil || !strings.Contains(err.Error(), "without TLS") || !strings.Contains(err.Error(), "the target says") {
			t.Fatalf("apply: %v; want the plaintext login refused, with what the target said", err)
		}
		if got := rep.Executed(); got != base {
			t.Fatalf("the replica moved to %s", got)
		}
	})

	t.Run("connection cut inside a transaction", func(t *testing.T) {
		rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDExecuted: base})
		var sent atomic.Int64
		testHookCut = func() bool { return sent.Add(1) == 23 } // inside a transaction (5 events each, after the head)
		defer func() { testHookCut = nil }()
		res := apply(t, Params{DSN: rep.DSN, Files: files, StartGTID: base, Stop: Stop{GTID: u + ":80"}})
		ch, _ := rep.Channel(pitrConnection)
		if ch.Dumps < 2 || !slices.Equal(ch.Applied, gtids(u, 56, 80)) || len(ch.Skipped) != 0 || res.EndGTID != rep.Executed() {
			t.Fatalf("%d dumps, applied %v, skipped %v, at %s", ch.Dumps, ch.Applied, ch.Skipped, rep.Executed())
		}
		if !slices.Contains(ch.Steps[1:], "connect") || !slices.ContainsFunc(ch.Steps, func(s string) bool {
			return strings.HasPrefix(s, "COM_BINLOG_DUMP tidemark-pitr.000002:") && s != "COM_BINLOG_DUMP tidemark-pitr.000002:4"
		}) {
			t.Fatalf("steps %q: want a second dump from where the first was cut", ch.Steps)
		}
	})

	t.Run("refused before anything is written", func(t *testing.T) {
		rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDExecuted: base})
		_, err := Apply(context.Background(), Params{DSN: rep.DSN, Files: files, StartGTID: base, Stop: Stop{GTID: u + ":95"}})
		if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "from GTID "+u+":56") || !strings.Contains(err.Error(), "to GTID "+u+":90") {
			t.Fatalf("apply past the archive: %v; want ErrUnreachable naming 56 to 90", err)
		}
		_, err = Apply(context.Background(), Params{DSN: rep.DSN, Files: []File{files[0], files[2]}, StartGTID: u + ":1-20", Stop: Stop{GTID: u + ":80"}})
		if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "starts after GTIDs "+u+":41-70") {
			t.Fatalf("apply across a gap: %v; want ErrUnreachable naming the gap", err)
		}
		if st := rep.Statements(); len(st) != 0 {
			t.Fatalf("the target was sent %q before the refusal", st)
		}
	})

	t.Run("replica-side error", func(t *testing.T) {
		rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDExecuted: base, FailAt: u + ":60"})
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(time.Minute))
		defer cancel()
		_, err := Apply(ctx, Params{DSN: rep.DSN, Files: files, StartGTID: base, Stop: Stop{GTID: u + ":80"}})
		if err == nil || !strings.Contains(err.Error(), "Duplicate entry") || !strings.Contains(err.Error(), "in transaction GTID "+u+":60") || !strings.Contains(err.Error(), "source log binlog.000002 (file 2)") {
			t.Fatalf("apply: %v; want the target's duplicate-key error at %s:60 in binlog.000002", err, u)
		}
		if n := len(rep.Channels()); n != 0 {
			t.Fatalf("%d channels left on the target", n)
		}
		if got := rep.Executed(); got != u+":1-59" {
			t.Fatalf("the replica is at %s, want 1-59 (a prefix)", got)
		}
	})

	t.Run("cannot authenticate", func(t *testing.T) {
		rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDExecuted: base})
		defer func(g time.Duration) { ioGrace, testHookRefuseLogin = g, false }(ioGrace)
		ioGrace, testHookRefuseLogin = 2*time.Second, true
		began := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(time.Minute))
		defer cancel()
		_, err := Apply(ctx, Params{DSN: rep.DSN, Files: files, StartGTID: base, Stop: Stop{GTID: u + ":80"}})
		if err == nil || !strings.Contains(err.Error(), "Access denied for user 'tidemark_pitr'") || !strings.Contains(err.Error(), "cannot connect to the replication source") {
			t.Fatalf("apply: %v; want the target's access-denied error", err)
		}
		if d := time.Since(began); d > testenv.Wait(20*time.Second) {
			t.Fatalf("gave up after %v", d)
		}
		if got := rep.Executed(); got != base {
			t.Fatalf("the replica moved to %s", got)
		}
	})

	t.Run("no replication privilege and no mysqlbinlog", func(t *testing.T) {
		rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDExecuted: base, NoReplicationAdmin: true})
		_, err := Apply(context.Background(), Params{DSN: rep.DSN, Files: files, StartGTID: base, Stop: Stop{GTID: u + ":80"}, MariaDBBinlog: "mariadb-binlog"})
		if err == nil || !strings.Contains(err.Error(), "needs MySQL's mysqlbinlog") {
			t.Fatalf("apply: %v; want a refusal naming MySQL's mysqlbinlog", err)
		}
	})

	t.Run("a target past the base", func(t *testing.T) {
		rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDExecuted: u + ":1-60"})
		_, err := Apply(context.Background(), Params{DSN: rep.DSN, Files: files, StartGTID: base, Stop: Stop{GTID: u + ":80"}})
		if err == nil || !strings.Contains(err.Error(), "already executed "+u+":56-60") {
			t.Fatalf("apply: %v; want a refusal naming 56-60", err)
		}
		if len(rep.Channels()) != 0 || len(rep.GlobalSets()) != 0 {
			t.Fatalf("the refused apply changed the target: %q", rep.Statements())
		}
	})

	t.Run("target with the source's server id", func(t *testing.T) {
		rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDExecuted: base, ServerID: src.ServerID})
		res := apply(t, Params{DSN: rep.DSN, Files: files, StartGTID: base, Stop: Stop{GTID: u + ":60"}})
		ch, _ := rep.Channel(pitrConnection)
		own := fmt.Sprint(src.ServerID)
		if !slices.Equal(ch.Applied, gtids(u, 56, 60)) || ch.IgnoredOwn != 0 || rep.Var("server_id") != own || !strings.Contains(strings.Join(res.Warnings, "\n"), "server_id was changed") {
			t.Fatalf("applied %v, %d events dropped as its own, server_id %s now (want %s back), warnings %q", ch.Applied, ch.IgnoredOwn, rep.Var("server_id"), own, res.Warnings)
		}
	})

	t.Run("replica settings that skip errors", func(t *testing.T) {
		rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDExecuted: base, Vars: map[string]string{"replica_skip_errors": "1062"}})
		_, err := Apply(context.Background(), Params{DSN: rep.DSN, Files: files, StartGTID: base, Stop: Stop{GTID: u + ":60"}, Method: MethodReplication})
		if err == nil || !strings.Contains(err.Error(), "replica_skip_errors=1062") {
			t.Fatalf("apply: %v; want a refusal naming replica_skip_errors", err)
		}
		if len(rep.Channels()) != 0 || rep.Executed() != base {
			t.Fatalf("the refused apply changed the target: %q", rep.Statements())
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDExecuted: base, HoldApplier: true})
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(500*time.Millisecond, cancel)
		_, err := Apply(ctx, Params{DSN: rep.DSN, Files: files, StartGTID: base, Stop: Stop{GTID: u + ":60"}, Parallel: 2})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("apply: %v, want cancelled", err)
		}
		if len(rep.Channels()) != 0 || rep.Var("replica_parallel_workers") != "4" {
			t.Fatalf("after the cancel: channels %v, replica_parallel_workers %s (want none, 4)", rep.Channels(), rep.Var("replica_parallel_workers"))
		}
	})

	t.Run("gtid_mode OFF", func(t *testing.T) {
		rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDMode: "OFF"})
		_, err := Apply(context.Background(), Params{DSN: rep.DSN, Files: files, StartGTID: base, Stop: Stop{GTID: u + ":80"}})
		if err == nil || !strings.Contains(err.Error(), "gtid_mode=OFF") {
			t.Fatalf("apply: %v; want a refusal naming gtid_mode", err)
		}
	})

	t.Run("then replicate from the source", func(t *testing.T) {
		// A base loaded without its GTIDs: gtid_executed starts empty.
		rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{})
		res := apply(t, Params{DSN: rep.DSN, Files: files, StartGTID: base, Stop: Stop{GTID: u + ":80"}, ThenReplicateFrom: src.DSN})
		if len(res.Warnings) == 0 || !strings.Contains(strings.Join(res.Warnings, "\n"), "added to gtid_purged") {
			t.Fatalf("warnings %q: want the gtid_purged addition said", res.Warnings)
		}
		testenv.WaitFor(t, "the replica at the source's set", 20*time.Second, func() error {
			if got := rep.Executed(); got != u+":1-90" {
				ch, _ := rep.Channel("")
				return fmt.Errorf("at %s (receiver: %q, %d %s)", got, ch.Steps, ch.LastIOErrno, ch.LastIOError)
			}
			return nil
		})
		var asked []string
		for _, dm := range src.Dumps() {
			if dm.GTID {
				asked = append(asked, dm.Set)
			}
		}
		if !slices.Equal(asked, []string{u + ":1-80"}) {
			t.Fatalf("the source was asked for %q, want one auto-positioned dump from %s:1-80", asked, u)
		}
		ch, _ := rep.Channel("")
		if !slices.Equal(ch.Applied, gtids(u, 81, 90)) || len(ch.Skipped) != 0 {
			t.Fatalf("replicated %v (skipped %v), want 81..90", ch.Applied, ch.Skipped)
		}
	})
}

// TestApplyMySQLAfterFailover: the base's set names the old primary only,
// the archive holds its file and the promoted replica's (which repeats the
// old primary's transactions and goes on under its own UUID).
func TestApplyMySQLAfterFailover(t *testing.T) {
	primary := testenv.StartMySQLSourceDouble(t, testenv.MySQLSourceOptions{})
	primary.Commit(30)
	replica := testenv.StartMySQLSourceDouble(t, testenv.MySQLSourceOptions{ReplicaOf: primary})
	a, b := primary.UUID, replica.UUID
	files := archiveDoubles(t, a+":1-30,"+b+":1-20", func() {
		testenv.WaitFor(t, "the primary archived", 20*time.Second, func() error {
			if len(primary.Dumps()) == 0 {
				return errors.New("no dump yet")
			}
			return nil
		})
		time.Sleep(500 * time.Millisecond)
		primary.Close()
		replica.PromoteWithOwnUUID()
		replica.Commit(20)
	}, primary.DSN, replica.DSN)

	for _, tc := range []struct {
		name, base, stop string
		applied          []string
		end              string
	}{
		{"base of the old primary", a + ":1-25", b + ":15", append(gtids(a, 26, 30), gtids(b, 1, 15)...), a + ":1-30," + b + ":1-15"},
		{"base of both", a + ":1-30," + b + ":1-5", b + ":12", gtids(b, 6, 12), a + ":1-30," + b + ":1-12"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDExecuted: tc.base})
			res := apply(t, Params{DSN: rep.DSN, Files: files, StartGTID: tc.base, Stop: Stop{GTID: tc.stop}})
			ch, _ := rep.Channel(pitrConnection)
			if res.EndGTID != tc.end || rep.Executed() != tc.end || !slices.Equal(ch.Applied, tc.applied) || len(ch.Skipped) != 0 {
				t.Fatalf("end %s, replica at %s, applied %v, skipped %v; want %s, %v", res.EndGTID, rep.Executed(), ch.Applied, ch.Skipped, tc.end, tc.applied)
			}
			if got := receivedGTIDs(ch); !slices.Equal(got, tc.applied) {
				t.Fatalf("received %v: the plan was to cut the repeated transactions out", got)
			}
		})
	}
}

// TestApplyMySQLAnonymous: a source with gtid_mode OFF (anonymous
// transactions) restores by file and position onto a target with
// gtid_mode OFF, and is refused by one with gtid_mode ON.
func TestApplyMySQLAnonymous(t *testing.T) {
	src := testenv.StartMySQLSourceDouble(t, testenv.MySQLSourceOptions{GTIDModeOff: true})
	src.Commit(10)
	src.Rotate()
	src.Commit(10)
	files := doubleFiles(t, src)
	all := txnsOf(t, files)
	if len(all) != 20 || all[0].GTID != "" {
		t.Fatalf("%d transactions, the first %+v", len(all), all[0])
	}
	// The base is at the 5th transaction's end; stop before the 15th.
	p := Params{Files: files, StartFile: all[4].File, StartPos: all[4].End, Stop: Stop{File: all[14].File, Pos: all[14].Pos}}
	rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDMode: "OFF"})
	p.DSN = rep.DSN
	res := apply(t, p)
	ch, _ := rep.Channel(pitrConnection)
	if res.Transactions != 9 || len(ch.Applied) != 9 || ch.Applied[0] != "anonymous" || len(ch.Skipped) != 0 || rep.Executed() != "" {
		t.Fatalf("%d planned, applied %v, skipped %v, gtid_executed %q", res.Transactions, ch.Applied, ch.Skipped, rep.Executed())
	}
	on := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{})
	p.DSN = on.DSN
	if _, err := Apply(context.Background(), p); err == nil || !strings.Contains(err.Error(), "anonymous") {
		t.Fatalf("onto gtid_mode ON: %v; want a refusal naming the anonymous transactions", err)
	}
}

// TestApplyMySQLDDL: MySQL writes DDL as a Gtid event and the statement,
// no BEGIN, no Xid: one transaction, which a stop at its GTID includes and
// nothing after it.
func TestApplyMySQLDDL(t *testing.T) {
	src := testenv.StartMySQLSourceDouble(t, testenv.MySQLSourceOptions{})
	u := src.UUID
	src.Commit(3)
	src.CommitDDL("ALTER TABLE t ADD COLUMN c INT")
	src.Commit(3)
	files := doubleFiles(t, src)
	if n := len(txnsOf(t, files)); n != 7 {
		t.Fatalf("%d transactions, want 7 (the DDL one of them)", n)
	}
	rep := testenv.StartMySQLReplicaDouble(t, testenv.MySQLReplicaOptions{GTIDExecuted: u + ":1-2"})
	res := apply(t, Params{DSN: rep.DSN, Files: files, StartGTID: u + ":1-2", Stop: Stop{GTID: u + ":4"}})
	ch, _ := rep.Channel(pitrConnection)
	if res.Transactions != 2 || !slices.Equal(ch.Applied, gtids(u, 3, 4)) || !slices.Equal(receivedGTIDs(ch), gtids(u, 3, 4)) || rep.Executed() != u+":1-4" {
		t.Fatalf("%d planned, applied %v, received %v, at %s", res.Transactions, ch.Applied, receivedGTIDs(ch), rep.Executed())
	}
}
