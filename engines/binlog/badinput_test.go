package binlog

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// nothingWritten asserts the repository holds no binlog archive.
func nothingWritten(t *testing.T, p StreamParams) {
	t.Helper()
	names, err := Instances(context.Background(), p.Repo)
	if err != nil || len(names) != 0 {
		t.Errorf("repository holds binlog archives %v (%v), want none", names, err)
	}
}

func streamFor(t *testing.T, p StreamParams, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(d))
	defer cancel()
	return Stream(ctx, p)
}

// TestBadInput: a server without binlog, a user without the replication
// privileges, a server id another replica uses, bad parameters and an
// unknown instance each end with an error that names the problem and the
// fix, and write nothing.
func TestBadInput(t *testing.T) {
	m := testenv.StartMariaDB(t)
	repo, _ := fileRepo(t)
	base := StreamParams{Repo: repo, Instance: "db"}

	t.Run("params", func(t *testing.T) {
		for _, c := range []struct {
			p    StreamParams
			want string
		}{
			{StreamParams{Repo: repo, Instance: "db"}, "no server"},
			{StreamParams{DSNs: []string{m.DSN}, Repo: repo, Instance: "a/b"}, "instance name"},
			{StreamParams{DSNs: []string{m.DSN}, Repo: repo, Instance: "db", Flush: time.Microsecond}, "flush period"},
			{StreamParams{DSNs: []string{"nonsense"}, Repo: repo, Instance: "db"}, "invalid MySQL DSN"},
		} {
			err := Stream(context.Background(), c.p)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%+v: %v, want %q", c.p.DSNs, err, c.want)
			}
		}
		nothingWritten(t, base)
	})

	t.Run("privileges", func(t *testing.T) {
		m.Exec(t, "CREATE USER weak@'%' IDENTIFIED BY 'weak'", "GRANT SELECT ON *.* TO weak@'%'")
		p := base
		p.DSNs = []string{strings.Replace(m.DSN, "tidemark@", "weak:weak@", 1)}
		err := streamFor(t, p, 20*time.Second)
		if !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "REPLICATION SLAVE") || !strings.Contains(err.Error(), "REPLICATION CLIENT") || !strings.Contains(err.Error(), "GRANT") {
			t.Errorf("weak user: %v", err)
		}
		nothingWritten(t, p)
	})

	t.Run("server id in use", func(t *testing.T) {
		other := base
		other.DSNs, other.Instance, other.ServerID = []string{m.DSN}, "other", 4242
		stop := runStream(t, other)
		db := m.DB(t)
		testenv.WaitFor(t, "the first streamer registered", 20*time.Second, func() error {
			var n int
			rows, err := db.Query("SHOW SLAVE HOSTS")
			if err != nil {
				return err
			}
			for rows.Next() {
				n++
			}
			_ = rows.Close()
			if n == 0 {
				return errors.New("no replica registered")
			}
			return nil
		})
		p := base
		p.DSNs, p.ServerID = []string{m.DSN}, 4242
		err := streamFor(t, p, 20*time.Second)
		if !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "server id 4242 is already used") {
			t.Errorf("server id clash: %v", err)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenArchive(context.Background(), repo, "db"); !errors.Is(err, ErrUnknownInstance) {
			t.Errorf("the refused streamer wrote: %v", err)
		}
	})

	t.Run("unknown instance", func(t *testing.T) {
		_, err := OpenArchive(context.Background(), repo, "nosuch")
		if !errors.Is(err, ErrUnknownInstance) || !strings.Contains(err.Error(), `"nosuch"`) {
			t.Errorf("unknown instance: %v", err)
		}
	})
}

// TestServerWithoutBinlog: log_bin off is refused, naming the variable and
// the option to set.
func TestServerWithoutBinlog(t *testing.T) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ExtraArgs: []string{"--skip-log-bin"}})
	repo, _ := fileRepo(t)
	p := StreamParams{DSNs: []string{m.DSN}, Repo: repo, Instance: "db"}
	err := streamFor(t, p, 20*time.Second)
	if !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "log_bin=OFF") || !strings.Contains(err.Error(), "--log-bin") {
		t.Errorf("server without binlog: %v", err)
	}
	nothingWritten(t, p)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestStatementFormatWarns: a server logging statements streams, with a
// warning that statement events may not replay identically.
func TestStatementFormatWarns(t *testing.T) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ExtraArgs: []string{"--binlog-format=STATEMENT"}})
	m.Exec(t, "CREATE DATABASE test", "CREATE TABLE test.t (id INT PRIMARY KEY)", "INSERT INTO test.t VALUES (1)")
	repo, _ := fileRepo(t)
	var logs syncBuffer
	p := StreamParams{DSNs: []string{m.DSN}, Repo: repo, Instance: "db", Flush: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	stop := runStream(t, p)
	waitCaughtUp(t, repo, "db", m.DB(t))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "binlog_format is not ROW") || !strings.Contains(logs.String(), "binlog_format=STATEMENT") {
		t.Errorf("no warning about the binlog format:\n%s", logs.String())
	}
}
