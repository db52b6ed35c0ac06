package binlog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gmysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	"github.com/tidemark-backup/tidemark/internal/storage"
)

// MemoryLimit is the soft limit (runtime/debug.SetMemoryLimit) `tidemark
// binlog stream` runs under unless GOMEMLIMIT is set: the streamer's live
// memory is the open segment, a closed one being compacted and the copies a
// PUT makes (about four segment sizes at the default 16 MiB), and the
// default GC target would let the heap grow to twice that.
const MemoryLimit = 96 << 20

// StreamParams configure Stream.
type StreamParams struct {
	// DSNs are the replication group's servers. With one, that server is
	// streamed whatever its role. With several, the streamer follows the
	// primary: a reachable server with read_only=OFF that replicates from no
	// one (SHOW SLAVE STATUS empty); it stays on its server while that one
	// answers, and moves at the same GTID position when it does not.
	DSNs     []string
	Repo     *archive.Repo
	Instance string        // name in the repository
	Flush    time.Duration // default 1s: the longest an event waits in memory
	ServerID uint32        // the replica id to register with; 0: derived from Instance
	// PurgeArchived makes the streamer purge the server's binlogs it has
	// archived completely, keeping PurgeKeep of them (default 2).
	PurgeArchived bool
	PurgeKeep     int
	// OnWatermark is called after each durable flush, from the streamer's
	// goroutine; it must be cheap.
	OnWatermark func(Watermark)
	// OnGap is called from the streamer's goroutine for each gap the
	// archive holds when Stream starts, and for each gap it records (binlog
	// the server purged before it was archived) once the segment after the
	// gap is durable, so the gap is complete (Before set) and a reader of
	// the archive sees it too. A gap is thus reported again by every later
	// Stream call: consumers tell gaps apart by (After, Before), which
	// never change. It must be cheap.
	OnGap  func(Gap)
	Logger *slog.Logger

	// SegmentSize closes a segment (at a transaction boundary) once it holds
	// this many bytes; default 16 MiB. SegmentAge closes one that has been
	// open this long, so a quiet server's pieces are compacted too; default
	// 15 minutes.
	SegmentSize int64
	SegmentAge  time.Duration
	// Heartbeat is the period the server sends heartbeats at when idle; a
	// connection silent for 4 periods is taken as dead. Default 1s.
	Heartbeat time.Duration
	// RetentionCheck is how often the server's binlog list is compared with
	// the archive (warning, purge). Default 30s.
	RetentionCheck time.Duration
}

// Watermark is the durable end of the archive after a flush: everything up to
// and including the transaction it names is in the repository.
type Watermark struct {
	Instance      string
	GTID          string // MariaDB gtid position (domain-server-seq,...) / MySQL executed set
	File          string
	Position      uint64
	LastEventTime time.Time // server timestamp of the last durable event
	DurableAt     time.Time
}

func (p *StreamParams) validate() error {
	var errs []error
	if len(p.DSNs) == 0 {
		errs = append(errs, errors.New("no server: give at least one MySQL DSN"))
	}
	if p.Repo == nil {
		errs = append(errs, errors.New("no repository"))
	}
	if err := validInstance(p.Instance); err != nil {
		errs = append(errs, err)
	}
	if p.Flush < 0 || (p.Flush > 0 && p.Flush < 10*time.Millisecond) {
		errs = append(errs, fmt.Errorf("flush period %s: use at least 10ms", p.Flush))
	}
	if p.SegmentSize < 0 || p.SegmentSize > 200<<20 {
		errs = append(errs, fmt.Errorf("segment size %d: use at most 200 MiB (a segment is held in memory)", p.SegmentSize))
	}
	return errors.Join(errs...)
}

// Stream archives the binlog of the primary among p.DSNs into p.Repo under
// p.Instance until ctx is cancelled, then flushes what it holds and returns
// nil. It returns early with an error for a configuration the server or the
// repository refuses (see ErrServer, ErrConflict); connection losses are
// retried, on another server of the group when there is one.
func Stream(ctx context.Context, p StreamParams) error {
	if err := p.validate(); err != nil {
		return err
	}
	if p.Flush == 0 {
		p.Flush = time.Second
	}
	if p.SegmentSize == 0 {
		p.SegmentSize = 16 << 20
	}
	if p.SegmentAge == 0 {
		p.SegmentAge = 15 * time.Minute
	}
	if p.Heartbeat == 0 {
		p.Heartbeat = time.Second
	}
	if p.RetentionCheck == 0 {
		p.RetentionCheck = 30 * time.Second
	}
	if p.PurgeKeep <= 0 {
		p.PurgeKeep = 2
	}
	if p.ServerID == 0 {
		p.ServerID = deriveServerID(p.Instance)
	}
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &streamer{p: p, log: log.With("instance", p.Instance), fileDone: map[string]bool{},
		reportHost: "tidemark-binlog:" + p.Instance}
	for _, d := range p.DSNs {
		dsn, err := mysqlx.ParseDSN(d)
		if err != nil {
			return err
		}
		s.dsns = append(s.dsns, dsn)
	}
	if err := s.load(ctx); err != nil {
		if ctx.Err() != nil {
			return nil //nolint:nilerr // cancelled while reading the archive: nothing to flush yet
		}
		return err
	}
	err := s.run(ctx)
	if cerr := s.shutdown(); err == nil {
		err = cerr
	}
	return err
}

// streamer is one Stream call's state. Everything but the compactor runs on
// the Stream goroutine.
type streamer struct {
	p          StreamParams
	log        *slog.Logger
	dsns       []*mysqlx.DSN
	reportHost string

	seq     uint64 // the last segment's seq
	cur     *openSeg
	last    *segmentMeta // the last segment (open or closed)
	pos     Position     // MariaDB GTID position at the watermark
	mysqlGS gmysql.GTIDSet
	fdeFile string // server/file the fde belongs to
	fde     []byte

	fileDone   map[string]bool // "<server id>/<file>" archived to its end
	pendingGap *Gap
	connected  bool // a stream has run at least once

	evAt     time.Time      // arrival of the event being handled
	inflight *pieceJob      // the piece being stored in the background
	putDone  chan *pieceJob // its result

	// putTime is a decaying maximum of how long a piece's PUT takes; a flush
	// starts that much before Flush is up, so the piece is durable by then.
	putTime time.Duration

	retentionBusy atomic.Bool
	bg            sync.WaitGroup // retention checks

	compactWG  sync.WaitGroup
	compactSem chan struct{}
}

// openSeg is the segment being written.
type openSeg struct {
	meta      segmentMeta // at the watermark
	buf       []byte
	flushed   int64 // bytes durable in pieces
	pieces    int
	dirtyAt   time.Time // receive time of the oldest unflushed change; zero when clean
	rawEnd    uint64    // source position at len(buf)
	events    int       // events in buf
	crc       bool
	header    bool // only the Format_description and file-header events so far
	openedAt  time.Time
	metaDirty bool      // watermark moved since the last flush
	retry     *pieceJob // a piece whose PUT failed, to store again as it is

	// transaction tracking
	inTxn      bool
	standalone bool
	firstQuery bool
	pending    GTID
	pendingMy  string
}

func fileKey(serverID uint32, file string) string { return fmt.Sprintf("%d/%s", serverID, file) }

// load reads the instance's archive: the last segment's state, the open
// segment's bytes, and finishes compactions a crash interrupted.
func (s *streamer) load(ctx context.Context) error {
	s.compactSem = make(chan struct{}, 1)
	s.putDone = make(chan *pieceJob, 1)
	a, err := OpenArchive(ctx, s.p.Repo, s.p.Instance)
	if errors.Is(err, ErrUnknownInstance) {
		s.log.Info("binlog archive is new")
		return nil
	}
	if err != nil {
		return err
	}
	if s.p.OnGap != nil {
		// Again at every start: a gap whose report was lost (the process
		// died before anyone heard of it) is not lost for good.
		for _, g := range a.Gaps() {
			s.p.OnGap(g)
		}
	}
	for i, st := range a.segs {
		m := st.meta
		if m.EndsFile {
			s.fileDone[fileKey(m.ServerID, m.File)] = true
		}
		if m.Seq > s.seq {
			s.seq = m.Seq
		}
		if st.indexed {
			for _, pc := range st.pieces {
				if err := s.p.Repo.DeleteObject(ctx, pc); err != nil {
					return err
				}
			}
			continue
		}
		if i < len(a.segs)-1 {
			// Closed, but its compaction did not finish.
			b, err := readPieces(ctx, s.p.Repo, st.pieces)
			if err != nil {
				return err
			}
			if err := s.compact(ctx, m, b, st.pieces); err != nil {
				return err
			}
			continue
		}
	}
	if len(a.segs) == 0 {
		return nil
	}
	lastSt := a.segs[len(a.segs)-1]
	m := lastSt.meta
	s.last = &m
	if m.FDE != nil {
		s.fde, s.fdeFile = m.FDE, fileKey(m.ServerID, m.File)
	}
	if err := s.setPosition(m.Flavor, m.GTIDEnd); err != nil {
		return err
	}
	if !lastSt.indexed {
		b, err := readPieces(ctx, s.p.Repo, lastSt.pieces)
		if err != nil {
			return err
		}
		h := lastSt.last
		if int64(len(b)) != h.Raw {
			return fmt.Errorf("binlog archive %s: open segment %s holds %d bytes, its last piece says %d: %w", s.p.Instance, m.Name, len(b), h.Raw, archive.ErrDamaged)
		}
		s.cur = &openSeg{meta: m, buf: b, flushed: int64(len(b)), pieces: len(lastSt.pieces), rawEnd: h.RawEnd,
			events: countEvents(b), openedAt: time.Now(), crc: fdeChecksum(mustHeader(m.FDE)) == checksumCRC32}
		s.log.Info("resuming open segment", "segment", m.Name, "pieces", len(lastSt.pieces), "bytes", len(b), "durable", m.Durable)
	}
	return nil
}

// countEvents counts the events of a segment's bytes (after the magic).
func countEvents(b []byte) int {
	n := 0
	for q := len(binlogMagicBytes); q+headerLen <= len(b); n++ {
		size := int(binary.LittleEndian.Uint32(b[q+9:]))
		if size < headerLen {
			break
		}
		q += size
	}
	return n
}

func mustHeader(raw []byte) event {
	e, err := parseHeader(raw)
	if err != nil {
		return event{raw: make([]byte, headerLen)}
	}
	return e
}

func (s *streamer) setPosition(flavor, gtid string) error {
	if flavor == "mysql" {
		gs, err := gmysql.ParseMysqlGTIDSet(gtid)
		if err != nil {
			return fmt.Errorf("binlog archive %s: GTID set %q: %w", s.p.Instance, gtid, err)
		}
		s.mysqlGS = gs
		return nil
	}
	p, err := ParsePosition(gtid)
	if err != nil {
		return fmt.Errorf("binlog archive %s: %w", s.p.Instance, err)
	}
	s.pos = p
	return nil
}

func (s *streamer) gtidString(flavor string) string {
	if flavor == "mysql" {
		if s.mysqlGS == nil {
			return ""
		}
		return s.mysqlGS.String()
	}
	return s.pos.String()
}

// run connects, streams, and reconnects until ctx ends or a fatal error.
func (s *streamer) run(ctx context.Context) error {
	var current *mysqlx.DSN
	backoff := 0 * time.Second
	for {
		if ctx.Err() != nil {
			return nil //nolint:nilerr // cancelled: Stream flushes and ends cleanly
		}
		if backoff > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
		}
		srv, err := s.pick(ctx, current)
		if err != nil {
			if ctx.Err() != nil {
				return nil //nolint:nilerr // cancelled while probing: not an error
			}
			if errors.Is(err, ErrServer) || !s.connected {
				return err
			}
			s.log.Warn("no primary to stream from; retrying", "err", errText(err))
			backoff = min(max(backoff*2, time.Second), 5*time.Second)
			continue
		}
		current = srv.dsn
		err = s.session(ctx, srv)
		s.connected = true
		if ctx.Err() != nil {
			return nil //nolint:nilerr // the session ended because Stream was cancelled
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			return fatal.err
		}
		if errors.Is(err, ErrConflict) || errors.Is(err, archive.ErrDamaged) {
			return err
		}
		// Make what we hold durable before waiting for a server.
		if ferr := s.flush(ctx); ferr != nil {
			return ferr
		}
		s.log.Warn("binlog stream interrupted; reconnecting", "server", srv.dsn.Addr(), "err", errText(err))
		backoff = time.Second
	}
}

// errText is an error's message for a log line: slog prints an error value
// with %+v, which makes go-mysql's traced errors print a stack.
func errText(err error) string { return err.Error() }

// fatalError ends Stream: retrying cannot help.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }

// pick chooses the server to stream: the only one, or the primary.
func (s *streamer) pick(ctx context.Context, current *mysqlx.DSN) (*server, error) {
	var errs []error
	var primaries []*server
	for _, d := range s.dsns {
		srv, err := probe(ctx, d, s.p.ServerID, s.reportHost)
		if err != nil {
			if errors.Is(err, ErrServer) {
				return nil, err
			}
			errs = append(errs, fmt.Errorf("%s: %w", d.Addr(), err))
			continue
		}
		if len(s.dsns) == 1 {
			return srv, nil
		}
		if srv.readOnly || srv.replica {
			errs = append(errs, fmt.Errorf("%s is a replica or read-only", d.Addr()))
			continue
		}
		if current != nil && d == current {
			return srv, nil
		}
		primaries = append(primaries, srv)
	}
	switch len(primaries) {
	case 0:
		return nil, fmt.Errorf("no reachable primary among %d servers: %w", len(s.dsns), errors.Join(errs...))
	case 1:
		return primaries[0], nil
	}
	addrs := make([]string, len(primaries))
	for i, p := range primaries {
		addrs[i] = p.dsn.Addr()
	}
	return nil, fmt.Errorf("%d servers look like primaries (writable, replicating from no one): %s; set read_only=ON on the replicas", len(primaries), strings.Join(addrs, ", "))
}

// session streams one connection until it fails or ctx ends.
func (s *streamer) session(ctx context.Context, srv *server) error {
	if srv.format != "ROW" {
		s.log.Warn("binlog_format is not ROW: statement events may not replay identically", "server", srv.dsn.Addr(), "binlog_format", srv.format)
	}
	if srv.flavor == "mysql" && s.mysqlGS == nil {
		s.mysqlGS, _ = gmysql.ParseMysqlGTIDSet("")
	}
	if s.pos == nil {
		s.pos = Position{}
	}
	start, err := s.startPoint(ctx, srv)
	if err != nil {
		return err
	}
	cfg := replication.BinlogSyncerConfig{
		ServerID:         s.p.ServerID,
		Flavor:           srv.flavor,
		Localhost:        s.reportHost,
		User:             srv.dsn.User(),
		Password:         srv.dsn.Config().Passwd,
		TLSConfig:        srv.tls,
		RawModeEnabled:   true,
		DisableRetrySync: true, // reconnects are ours
		HeartbeatPeriod:  s.p.Heartbeat,
		EventCacheCount:  32,                            // see batchPause
		Logger:           slog.New(slog.DiscardHandler), // its INFO/ERROR lines duplicate ours
	}
	if srv.flavor == "mariadb" {
		// Without this flag MariaDB leaves out Annotate_rows events (on by
		// default: binlog_annotate_row_events), and the archive would miss
		// bytes of the file.
		cfg.DumpCommandFlag = replication.BINLOG_SEND_ANNOTATE_ROWS_EVENT
	}
	addr := srv.dsn.Addr()
	if strings.HasPrefix(addr, "/") {
		cfg.Host = addr
	} else {
		host, port, err := splitHostPort(addr)
		if err != nil {
			return &fatalError{err}
		}
		cfg.Host, cfg.Port = host, port
	}
	// No ReadTimeout: go-mysql would set a read deadline on every packet
	// (8% of the streamer's CPU under load). The dump connection gets a
	// deadline for its setup only; then the session loop takes the
	// connection as dead when neither an event nor a heartbeat came for 4
	// heartbeat periods.
	var (
		connMu   sync.Mutex
		dumpConn net.Conn
	)
	cfg.Dialer = func(ctx context.Context, network, address string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		if err == nil {
			connMu.Lock()
			if dumpConn == nil {
				dumpConn = c
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			} else {
				// The connection Close opens to KILL the dump thread: a
				// hung server must not hold it long.
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			}
			connMu.Unlock()
		}
		return c, err
	}
	syncer := replication.NewBinlogSyncer(cfg)
	// Closed in the background: Close connects again to KILL the dump
	// thread, which waits on a hung server; Stream waits for it at the end.
	defer func() {
		s.bg.Add(1)
		go func() { defer s.bg.Done(); syncer.Close() }()
	}()
	var st *replication.BinlogStreamer
	if start.gtid != nil {
		s.log.Info("streaming from GTID position", "server", addr, "server_id", srv.serverID, "gtid", start.gtid.String())
		st, err = syncer.StartSyncGTID(start.gtid)
	} else {
		s.log.Info("streaming from file position", "server", addr, "server_id", srv.serverID, "file", start.file, "pos", start.pos)
		st, err = syncer.StartSync(gmysql.Position{Name: start.file, Pos: uint32(start.pos)})
	}
	if err != nil {
		return fmt.Errorf("starting the binlog dump on %s: %w", addr, err)
	}
	connMu.Lock()
	if dumpConn != nil {
		_ = dumpConn.SetDeadline(time.Time{})
	}
	connMu.Unlock()
	lastRecv := time.Now()
	deadAfter := 4 * s.p.Heartbeat
	// The liveness check runs once per heartbeat period; its deadline moves
	// that seldom, so the wait context is not made anew per event.
	liveCheck := lastRecv.Add(s.p.Heartbeat)
	ss := &sessionState{srv: srv, curFile: start.file}

	// One goroutine takes the events off go-mysql's channel and handles
	// them; each arrival is stamped when GetEvent returns it. GetEvent waits
	// under a deadline: the flush due, the retention check, or a short poll
	// while a piece's PUT is in flight. The deadline's context is made anew
	// only when the deadline moves (a few times per flush), not per event.
	retention := time.Now().Add(min(s.p.RetentionCheck, 5*time.Second))
	var wait deadlineCtx
	defer wait.stop()
	for {
		now := time.Now()
		if s.inflight != nil {
			select {
			case j := <-s.putDone:
				s.inflight = nil
				if err := s.finishPiece(j); err != nil {
					return err
				}
			default:
			}
		}
		dirty := s.cur.needsFlush() && s.inflight == nil
		if dirty && !now.Before(s.flushDue()) {
			s.startFlush(ctx)
			dirty = false
		}
		if !now.Before(retention) {
			retention = now.Add(s.p.RetentionCheck)
			if s.retentionBusy.CompareAndSwap(false, true) {
				// In the background: a server that hangs must not stall
				// the stream. It gets a copy of what it reads.
				done := make(map[string]bool, len(s.fileDone))
				for k, v := range s.fileDone {
					done[k] = v
				}
				s.bg.Add(1)
				go func(srv *server, cur string) {
					defer s.bg.Done()
					defer s.retentionBusy.Store(false)
					s.retention(ctx, srv, cur, done)
				}(ss.srv, ss.curFile)
			}
		}
		if !now.Before(liveCheck) {
			liveCheck = now.Add(s.p.Heartbeat)
		}
		due := retention
		if liveCheck.Before(due) {
			due = liveCheck
		}
		if dirty && s.flushDue().Before(due) {
			due = s.flushDue()
		}
		if s.inflight != nil {
			// Poll for the PUT's end every 10 ms (events arriving meanwhile
			// check it too), keeping a deadline already that close.
			if wait.at.After(now) && wait.at.Sub(now) <= 10*time.Millisecond {
				due = wait.at
			} else {
				due = now.Add(10 * time.Millisecond)
			}
		}
		// Nothing above blocks (flushes and retention run in the
		// background), so the loop's start is when the wait begins.
		waitFrom := now
		ev, err := st.GetEvent(wait.until(ctx, due))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) {
				// Dead only if this wait itself found nothing for a while:
				// after a long synchronous flush, events may be queued.
				if time.Since(lastRecv) >= deadAfter && time.Since(waitFrom) >= s.p.Heartbeat/2 {
					return fmt.Errorf("server %s sent neither an event nor a heartbeat for %s: taking the connection as dead", addr, time.Since(lastRecv).Round(time.Millisecond))
				}
				continue
			}
			return s.classify(ctx, ss, err)
		}
		lastRecv = time.Now()
		if err := s.handle(ctx, ss, ev.RawData, lastRecv); err != nil {
			return err
		}
		if lastRecv.Sub(waitFrom) > 100*time.Microsecond {
			// The wait found the queue empty: events trickle in one at a
			// time. Let a few accumulate (go-mysql's small queue fills and
			// the socket buffers the rest) rather than wake per event; the
			// RPO grows by the pause.
			time.Sleep(batchPause)
		}
	}
}

// batchPause is how long the session waits after an event that came to an
// empty queue: under a steady trickle of small events, waking for each cost
// more CPU than reading them (a read syscall and two goroutine hand-offs per
// event).
const batchPause = 10 * time.Millisecond

// deadlineCtx is a context with a deadline, made anew only when the
// deadline moves or has passed.
type deadlineCtx struct {
	at     time.Time
	ctx    context.Context
	cancel context.CancelFunc
}

func (d *deadlineCtx) until(parent context.Context, due time.Time) context.Context {
	if d.ctx != nil && d.at.Equal(due) && d.ctx.Err() == nil {
		return d.ctx
	}
	d.stop()
	d.ctx, d.cancel = context.WithDeadline(parent, due)
	d.at = due
	return d.ctx
}

func (d *deadlineCtx) stop() {
	if d.cancel != nil {
		d.cancel()
	}
}

// sessionState is what one connection tracks.
type sessionState struct {
	srv     *server
	curFile string
}

type startPoint struct {
	file string
	pos  uint64
	gtid gmysql.GTIDSet
}

// startPoint decides where to resume on srv. On the server the archive's
// last segment came from: by file and position, at the last complete
// transaction (what follows is sent again and compared with what is stored).
// On another server (failover): by GTID, after the open segment is closed at
// its last complete transaction. With nothing archived: the oldest binlog
// the server has.
func (s *streamer) startPoint(ctx context.Context, srv *server) (startPoint, error) {
	if s.last == nil {
		if len(srv.binlogs) == 0 {
			return startPoint{}, &fatalError{fmt.Errorf("%w: %s lists no binary logs (SHOW BINARY LOGS is empty)", ErrServer, srv.dsn.Addr())}
		}
		return startPoint{file: srv.binlogs[0], pos: 4}, nil
	}
	m := s.last
	if m.ServerID == srv.serverID && m.Flavor == srv.flavor {
		if s.cur != nil {
			return startPoint{file: m.File, pos: m.EndPos}, nil
		}
		if m.EndsFile {
			next := m.NextFile
			if next == "" {
				next = nextFileName(m.File, srv.binlogs)
			}
			if next == "" {
				return startPoint{}, fmt.Errorf("server %s: no binlog after %s yet", srv.dsn.Addr(), m.File)
			}
			return startPoint{file: next, pos: 4}, nil
		}
		return startPoint{file: m.File, pos: m.EndPos}, nil
	}
	// Another server: close the open segment at its watermark first, so a
	// transaction cut short on the old server is not left in the archive.
	if s.cur != nil {
		if err := s.closeSegment(ctx, true); err != nil {
			return startPoint{}, &fatalError{err}
		}
	}
	s.log.Warn("following the stream to another server", "from_server_id", m.ServerID, "to_server_id", srv.serverID, "server", srv.dsn.Addr(), "gtid", m.GTIDEnd)
	if srv.flavor == "mysql" {
		if !srv.gtidMode || s.mysqlGS == nil {
			return startPoint{}, &fatalError{fmt.Errorf("%w: %s is another server than the archive's (server_id %d, was %d) and MySQL GTIDs are off (gtid_mode): cannot find the same position there", ErrServer, srv.dsn.Addr(), srv.serverID, m.ServerID)}
		}
		return startPoint{gtid: s.mysqlGS.Clone()}, nil
	}
	gs, err := gmysql.ParseMariadbGTIDSet(s.pos.String())
	if err != nil {
		return startPoint{}, &fatalError{err}
	}
	return startPoint{gtid: gs}, nil
}

func nextFileName(file string, list []string) string {
	for i, f := range list {
		if f == file && i+1 < len(list) {
			return list[i+1]
		}
	}
	for _, f := range list {
		if f > file {
			return f
		}
	}
	return ""
}

// classify turns a stream error into a reconnect (returned as is), a gap
// (recorded, then reconnect from the oldest binlog) or a fatal error.
func (s *streamer) classify(ctx context.Context, ss *sessionState, err error) error {
	msg := err.Error()
	var merr *gmysql.MyError
	if errors.As(err, &merr) && merr.Code == 1236 || strings.Contains(msg, "ERROR 1236") {
		purged := strings.Contains(msg, "Could not find first log file name") ||
			strings.Contains(msg, "Could not find GTID state requested by slave in any binlog files") ||
			strings.Contains(msg, "purged")
		if !purged {
			if strings.Contains(msg, "not in the master's binlog") {
				// After a failover: the new primary lacks transactions the
				// archive holds (lost with the old primary, or still in
				// its relay log). Retried: a replica catching up is fine,
				// a diverged one needs an operator.
				s.log.Error("the server lacks transactions the archive already holds; waiting for it (if they were lost in a failover, the archive and the server have diverged)",
					"server", ss.srv.dsn.Addr(), "archive_gtid", s.gtidString(ss.srv.flavor), "err", msg)
			}
			return fmt.Errorf("server %s refused the binlog dump: %w", ss.srv.dsn.Addr(), err)
		}
		return s.recordPurgeGap(ctx, ss, msg)
	}
	if errors.As(err, &merr) && (merr.Code == 1045 || merr.Code == 1227 || merr.Code == 1044) {
		return &fatalError{fmt.Errorf("%w: %s: %w (the streamer's user needs REPLICATION SLAVE and REPLICATION CLIENT)", ErrServer, ss.srv.dsn.Addr(), err)}
	}
	return err
}

// recordPurgeGap handles a server that no longer has the binlog the archive
// continues from: the missing stretch becomes a recorded gap and streaming
// restarts at the server's oldest binlog.
func (s *streamer) recordPurgeGap(ctx context.Context, ss *sessionState, msg string) error {
	if s.last == nil {
		return fmt.Errorf("server %s: %s", ss.srv.dsn.Addr(), msg)
	}
	if s.cur != nil {
		if err := s.closeSegment(ctx, true); err != nil {
			return &fatalError{err}
		}
	}
	m := s.last
	g := &Gap{After: pointOf(m.SegmentInfo, false), AfterGTID: m.GTIDEnd, FromTime: m.LastTime, DetectedAt: time.Now().UTC(),
		Reason: fmt.Sprintf("server %s (server_id %d) no longer has the binlog after the archive's end (purged before it was archived): %s", ss.srv.dsn.Addr(), ss.srv.serverID, msg)}
	s.log.Error("binlog gap: the server purged binlog the archive does not hold; continuing from its oldest binlog", "after", g.After, "reason", msg)
	s.pendingGap = g
	// Forget the chain: the next segment starts wherever the server's
	// oldest binlog starts, and its Gtid_list gives the position.
	s.last = nil
	s.pos = Position{}
	s.mysqlGS = nil
	return errors.New("gap recorded; reconnecting at the oldest binlog")
}

func splitHostPort(addr string) (string, uint16, error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return addr, 3306, nil
	}
	var port uint16
	if _, err := fmt.Sscanf(addr[i+1:], "%d", &port); err != nil {
		return "", 0, fmt.Errorf("server address %q: bad port", addr)
	}
	return strings.Trim(addr[:i], "[]"), port, nil
}

// handle takes one event off the wire.
func (s *streamer) handle(ctx context.Context, ss *sessionState, raw []byte, at time.Time) error {
	s.evAt = at
	e, err := parseHeader(raw)
	if err != nil {
		return &fatalError{fmt.Errorf("server %s: %w", ss.srv.dsn.Addr(), err)}
	}
	if e.typ == evRotate && e.artificial() {
		// The fake Rotate at connect comes without a checksum (go-mysql
		// announces @master_binlog_checksum='NONE'), the one after a real
		// rotation with one: tell them by the checksum itself.
		ss.curFile, _ = rotateTarget(e, hasCRC(e.raw))
		return nil
	}
	if e.artificial() {
		return nil
	}
	if e.typ == evFormatDesc {
		return s.onFDE(ctx, ss, e)
	}
	c := s.cur
	if c == nil {
		if err := s.openMidFile(ss, e); err != nil {
			return err
		}
		c = s.cur
	}
	start := e.start()
	switch {
	case start < c.rawEnd:
		// Sent again after a reconnect: it must be what we stored.
		off := int64(start) - int64(c.meta.Base)
		if off < 0 || off+int64(len(raw)) > int64(len(c.buf)) || !bytes.Equal(c.buf[off:off+int64(len(raw))], raw) {
			return &fatalError{fmt.Errorf("binlog archive %s: %w: segment %s holds other bytes at %s:%d than server %s sends now (was the server's binlog reset, or is another streamer writing this instance?)",
				s.p.Instance, ErrConflict, c.meta.Name, c.meta.File, start, ss.srv.dsn.Addr())}
		}
		s.track(c, e, false)
		return nil
	case start > c.rawEnd:
		if c.header {
			// Connected by GTID: the server sent the file's header events
			// and then skipped to the transaction we asked for. The segment
			// starts there, with the file's Format_description before it.
			s.rebase(c, start)
		} else {
			return &fatalError{fmt.Errorf("binlog archive %s: server %s sent %s:%d after %s:%d: %d bytes of binlog would be missing",
				s.p.Instance, ss.srv.dsn.Addr(), c.meta.File, start, c.meta.File, c.rawEnd, start-c.rawEnd)}
		}
	}
	s.appendEvent(c, e)
	s.track(c, e, true)
	if e.typ == evRotate || e.typ == evStop {
		c.meta.EndsFile = true
		if e.typ == evRotate {
			c.meta.NextFile, _ = rotateTarget(e, c.crc)
		}
		s.setWatermark(c, e)
		return s.closeSegment(ctx, false)
	}
	if !c.inTxn && (int64(len(c.buf)) >= s.p.SegmentSize || time.Since(c.openedAt) >= s.p.SegmentAge) {
		return s.closeSegment(ctx, false)
	}
	return nil
}

// onFDE starts a segment at a file's Format_description, or checks it
// against the open segment's when the file is being resumed from its start.
func (s *streamer) onFDE(ctx context.Context, ss *sessionState, e event) error {
	key := fileKey(ss.srv.serverID, ss.curFile)
	if c := s.cur; c != nil && fileKey(c.meta.ServerID, c.meta.File) == key {
		if !bytes.Equal(c.meta.FDE, e.raw) {
			return &fatalError{fmt.Errorf("binlog archive %s: %w: %s on server %d starts with another Format_description than the archived one", s.p.Instance, ErrConflict, ss.curFile, ss.srv.serverID)}
		}
		if e.start() < c.rawEnd {
			return nil
		}
	}
	if s.cur != nil {
		if err := s.closeSegment(ctx, true); err != nil {
			return err
		}
	}
	s.fde, s.fdeFile = append([]byte(nil), e.raw...), key
	s.newSegment(ss, 4, 0)
	c := s.cur
	c.buf = append(c.buf, binlogMagicBytes...)
	s.appendEvent(c, e)
	c.header = true
	s.setWatermark(c, e)
	return nil
}

// openMidFile starts a segment in the middle of a file, behind a copy of the
// file's Format_description.
func (s *streamer) openMidFile(ss *sessionState, e event) error {
	key := fileKey(ss.srv.serverID, ss.curFile)
	if s.fdeFile != key {
		return &fatalError{fmt.Errorf("binlog archive %s: %s:%d on server %d arrived before the file's Format_description, which the archive does not hold", s.p.Instance, ss.curFile, e.start(), ss.srv.serverID)}
	}
	s.newSegment(ss, e.start(), e.start()-uint64(len(binlogMagicBytes)+len(s.fde)))
	c := s.cur
	c.buf = append(append(c.buf, binlogMagicBytes...), s.fde...)
	c.events = 1
	c.rawEnd = e.start()
	c.meta.EndPos = e.start()
	return nil
}

func (s *streamer) newSegment(ss *sessionState, start, base uint64) {
	s.seq++
	fde := s.fde
	c := &openSeg{openedAt: time.Now(), crc: fdeChecksum(mustHeader(fde)) == checksumCRC32,
		// Room for a full segment and its last transaction: growing by
		// doubling would hold twice the segment size.
		buf: make([]byte, 0, s.p.SegmentSize+1<<20)}
	gtidStart := ""
	if ss.srv.flavor == "mysql" {
		if s.mysqlGS != nil {
			gtidStart = s.mysqlGS.String()
		}
	} else {
		gtidStart = s.pos.String()
	}
	c.meta = segmentMeta{Version: layoutVersion, Instance: s.p.Instance, Seq: s.seq, Flavor: ss.srv.flavor, Host: ss.srv.dsn.Addr(),
		SegmentInfo: SegmentInfo{Name: segKey(s.seq, ss.srv.serverID, ss.curFile, start), ServerID: ss.srv.serverID, ServerUUID: ss.srv.uuid,
			File: ss.curFile, StartPos: start, EndPos: start, GTIDStart: gtidStart, GTIDEnd: gtidStart},
		Base: base, FDE: fde, GapBefore: s.pendingGap}
	s.pendingGap = nil
	s.cur = c
	m := c.meta
	s.last = &m
}

// rebase moves a segment holding only its file's header events to start at
// pos, keeping the Format_description in front.
func (s *streamer) rebase(c *openSeg, pos uint64) {
	c.buf = append(append(c.buf[:0], binlogMagicBytes...), c.meta.FDE...)
	c.events = 1
	c.meta.Base = pos - uint64(len(c.buf))
	c.meta.StartPos, c.meta.EndPos, c.rawEnd = pos, pos, pos
	c.meta.Name = segKey(c.meta.Seq, c.meta.ServerID, c.meta.File, pos)
	c.meta.Durable = int64(len(c.buf))
	c.meta.Events = 1
}

func (s *streamer) appendEvent(c *openSeg, e event) {
	c.buf = append(c.buf, e.raw...)
	c.events++
	c.rawEnd = uint64(e.logPos)
	if c.dirtyAt.IsZero() {
		c.dirtyAt = s.evAt
	}
	switch e.typ {
	case evFormatDesc, evMariaGTIDList, evMariaCkpt, evPreviousGTIDs:
	default:
		c.header = false
	}
}

// track follows transactions and moves the watermark past each complete one.
func (s *streamer) track(c *openSeg, e event, appended bool) {
	flavor := c.meta.Flavor
	switch e.typ {
	case evMariaGTID:
		g, flags, err := mariaGTID(e, c.crc)
		if err != nil {
			s.log.Warn("unreadable GTID event", "err", errText(err))
			return
		}
		if cur, ok := s.pos.Get(g.Domain); ok && g.Seq <= cur.Seq && appended {
			s.log.Warn("GTID sequence goes backwards in its domain (gtid_strict_mode off?)", "gtid", g.String(), "after", cur.String())
		}
		c.inTxn, c.standalone, c.pending = true, flags&mariaStandalone != 0, g
		return
	case evMySQLGTID:
		id, err := mysqlGTID(e, c.crc)
		if err == nil {
			c.pendingMy = id
		}
		c.inTxn, c.firstQuery = true, true
		return
	case evAnonymousGTID:
		c.inTxn, c.firstQuery, c.pendingMy = true, true, ""
		return
	case evMariaGTIDList:
		if l, err := mariaGTIDList(e, c.crc); err == nil {
			for _, g := range l {
				if _, ok := s.pos.Get(g.Domain); !ok {
					s.pos.Set(g)
				}
			}
			if c.meta.GTIDStart == "" {
				c.meta.GTIDStart = s.pos.String()
			}
		}
	case evPreviousGTIDs:
		var pe replication.PreviousGTIDsEvent
		if err := pe.Decode(e.body(c.crc)); err == nil && (s.mysqlGS == nil || s.mysqlGS.String() == "") {
			if gs, err := gmysql.ParseMysqlGTIDSet(pe.GTIDSets); err == nil {
				s.mysqlGS = gs
				if c.meta.GTIDStart == "" {
					c.meta.GTIDStart = gs.String()
				}
			}
		}
	case evXID:
		if c.inTxn {
			s.commit(c, e)
			return
		}
	case evQuery:
		text := queryText(e, c.crc)
		if c.inTxn {
			first := c.firstQuery
			c.firstQuery = false
			switch {
			case flavor == "mariadb" && c.standalone,
				flavor == "mysql" && first && text != "BEGIN",
				text == "COMMIT", strings.HasPrefix(text, "ROLLBACK"):
				s.commit(c, e)
			}
			return
		}
		if text == "BEGIN" {
			c.inTxn = true
			return
		}
	}
	if !c.inTxn {
		s.setWatermark(c, e)
	}
}

func (s *streamer) commit(c *openSeg, e event) {
	c.inTxn = false
	switch {
	case c.meta.Flavor == "mariadb" && c.pending != (GTID{}):
		s.pos.Set(c.pending)
		if c.meta.FirstGTID == "" {
			c.meta.FirstGTID = c.pending.String()
		}
		c.meta.LastGTID = c.pending.String()
		c.pending = GTID{}
	case c.pendingMy != "":
		if s.mysqlGS == nil {
			s.mysqlGS, _ = gmysql.ParseMysqlGTIDSet("")
		}
		_ = s.mysqlGS.Update(c.pendingMy)
		if c.meta.FirstGTID == "" {
			c.meta.FirstGTID = c.pendingMy
		}
		c.meta.LastGTID = c.pendingMy
		c.pendingMy = ""
	}
	s.setWatermark(c, e)
}

// setWatermark marks everything up to e's end as complete.
func (s *streamer) setWatermark(c *openSeg, e event) {
	end := uint64(e.logPos)
	off := int64(end) - int64(c.meta.Base)
	if off <= c.meta.Durable {
		return
	}
	m := &c.meta
	m.Durable, m.EndPos, m.Events = off, end, c.countTo(off)
	if m.FirstTime.IsZero() && e.timestamp != 0 {
		m.FirstTime = e.time()
	}
	if e.timestamp != 0 {
		m.LastTime = e.time()
	}
	m.GTIDEnd = s.gtidString(m.Flavor)
	m.Bytes = off
	c.metaDirty = true
	if c.dirtyAt.IsZero() {
		c.dirtyAt = s.evAt
	}
	mm := c.meta
	s.last = &mm
}

// countTo counts the events in buf[:off] (off is an event boundary). Events
// after the watermark are at most one transaction, so this walks back from
// the end.
func (c *openSeg) countTo(off int64) int {
	n := c.events
	p := int64(len(c.buf))
	if p == off {
		return n
	}
	// Walk forward from off to the end over event headers.
	q := off
	tail := 0
	for q < p {
		if q+headerLen > p {
			break
		}
		size := int64(uint32(c.buf[q+9]) | uint32(c.buf[q+10])<<8 | uint32(c.buf[q+11])<<16 | uint32(c.buf[q+12])<<24)
		if size <= 0 {
			break
		}
		q += size
		tail++
	}
	return n - tail
}

// flushDue is when the open segment's unflushed bytes must be sent: Flush
// after the oldest of them arrived, less the expected PUT time (at most half
// of Flush).
func (s *streamer) flushDue() time.Time {
	return s.cur.dirtyAt.Add(s.p.Flush - min(s.putTime, s.p.Flush/2))
}

// pieceJob is one flush: a piece built from the open segment, stored by a
// PUT in flight or kept after a failed one, to be stored again with the same
// bytes (a PUT that failed may have landed; other bytes under its name would
// then be a conflict).
type pieceJob struct {
	c    *openSeg
	name string
	body []byte
	meta segmentMeta // the segment as of the piece's end
	end  int64       // len(c.buf) the piece covers
	err  error
	took time.Duration
	done time.Time // when the PUT returned
}

// needsFlush: the open segment holds changes not yet stored. A segment
// holding only its file's header events is not stored: a GTID connection may
// still move its start (rebase), which would orphan pieces stored under its
// first name; and without a transaction it has nothing a restore needs.
func (c *openSeg) needsFlush() bool {
	return c != nil && !c.dirtyAt.IsZero() && !c.header
}

// buildPiece takes the open segment's unflushed bytes and state into a
// piece, or returns the piece a failed PUT left; nil when all is durable.
func (s *streamer) buildPiece(c *openSeg) (*pieceJob, error) {
	if c.retry != nil {
		return c.retry, nil
	}
	if c.header || int64(len(c.buf)) == c.flushed && !c.metaDirty {
		return nil, nil
	}
	h := pieceHeader{segmentMeta: c.meta, Piece: c.pieces, Offset: c.flushed, Raw: int64(len(c.buf)), RawEnd: c.rawEnd}
	body, err := encodePiece(h, c.buf[c.flushed:])
	if err != nil {
		return nil, err
	}
	c.dirtyAt, c.metaDirty = time.Time{}, false
	return &pieceJob{c: c, name: pieceName(s.p.Instance, c.meta.Name, c.pieces), body: body, meta: c.meta, end: int64(len(c.buf))}, nil
}

// storePiece PUTs a piece. Pieces are uncompressed: they live only until
// their segment is compacted (and are read back only by a resume or a
// restore of the open segment), the compacted segment is compressed, and
// compressing every byte twice was a tenth of the streamer's CPU. The cost
// is about three times the bytes in flight for the pieces.
func (s *streamer) storePiece(ctx context.Context, j *pieceJob) {
	t0 := time.Now()
	j.err = s.putOnce(ctx, j.name, j.body, archive.ObjectOptions{Compression: "none"})
	j.done = time.Now()
	j.took = j.done.Sub(t0)
}

// startFlush stores the open segment's new bytes in the background; the
// session loop picks the result up from putDone. One PUT at a time: pieces
// are numbered in order.
func (s *streamer) startFlush(ctx context.Context) {
	if s.inflight != nil || s.cur == nil {
		return
	}
	j, err := s.buildPiece(s.cur)
	if err != nil || j == nil {
		return // an encoding error shows again in the synchronous flush
	}
	s.inflight = j
	go func() {
		s.storePiece(ctx, j)
		s.putDone <- j
	}()
}

// finishPiece records a stored piece: the bytes it covers are durable.
func (s *streamer) finishPiece(j *pieceJob) error {
	c := j.c
	if j.err != nil {
		c.retry = j
		return j.err
	}
	c.retry = nil
	if c.pieces == 0 && j.meta.GapBefore != nil && s.p.OnGap != nil {
		// The segment after a gap is durable: the gap is in the archive.
		s.p.OnGap(completeGap(*j.meta.GapBefore, j.meta.SegmentInfo))
	}
	// A decaying maximum: one slow PUT moves the next flushes earlier for a
	// while, which is what keeps the tail of the RPO within Flush.
	s.putTime = max(j.took, s.putTime*7/8)
	c.pieces++
	c.flushed = j.end
	if j.meta.EndsFile && j.meta.Durable == j.end {
		s.fileDone[fileKey(j.meta.ServerID, j.meta.File)] = true
	}
	if s.p.OnWatermark != nil && j.meta.Events > 0 {
		s.p.OnWatermark(Watermark{Instance: s.p.Instance, GTID: j.meta.GTIDEnd, File: j.meta.File, Position: j.meta.EndPos,
			LastEventTime: j.meta.LastTime, DurableAt: j.done})
	}
	return nil
}

// flush makes everything the open segment holds durable before it returns:
// it waits for a PUT in flight, then stores what is left (one PUT, or two
// when a failed piece is stored again first).
func (s *streamer) flush(ctx context.Context) error {
	if j := s.inflight; j != nil {
		<-s.putDone
		s.inflight = nil
		// A failure (the session's context cancelled under it, or the
		// store) leaves the piece in c.retry, stored again below.
		_ = s.finishPiece(j)
	}
	c := s.cur
	if c == nil {
		return nil
	}
	for {
		j, err := s.buildPiece(c)
		if err != nil || j == nil {
			return err
		}
		s.storePiece(ctx, j)
		if err := s.finishPiece(j); err != nil {
			return err
		}
	}
}

// putOnce stores a create-only object. An object already there with the same
// bytes is our own earlier PUT (retried after a lost answer, or written before
// a crash); with other bytes it is a conflict, loudly.
func (s *streamer) putOnce(ctx context.Context, name string, b []byte, opts archive.ObjectOptions) error {
	for attempt := 0; ; attempt++ {
		err := s.p.Repo.PutObject(ctx, name, b, opts)
		if err == nil {
			return nil
		}
		if errors.Is(err, storage.ErrExists) {
			got, gerr := s.p.Repo.GetObject(ctx, name)
			if gerr == nil && bytes.Equal(got, b) {
				return nil
			}
			return fmt.Errorf("binlog archive %s: %w: %s already exists with other contents: another streamer is writing this instance (one streamer per instance), or the repository was changed by hand", s.p.Instance, ErrConflict, name)
		}
		if ctx.Err() != nil || attempt >= 4 {
			return fmt.Errorf("binlog archive %s: %w", s.p.Instance, err)
		}
		s.log.Warn("storing a binlog piece failed; retrying", "object", name, "err", errText(err))
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt+1) * 500 * time.Millisecond):
		}
	}
}

// closeSegment flushes the open segment and hands it to the compactor. With
// truncate it is cut at its watermark (a failover or gap: the tail is an
// incomplete transaction the next server sends again) and compacted now.
func (s *streamer) closeSegment(ctx context.Context, truncate bool) error {
	c := s.cur
	if c == nil {
		return nil
	}
	if err := s.flush(ctx); err != nil {
		return err
	}
	s.cur = nil
	m := c.meta
	m.Closed = true
	s.last = &m
	if c.header && c.pieces == 0 {
		// Only the file's header events, never stored: nothing to keep but
		// a gap it was to record, which goes to the next segment.
		if c.meta.GapBefore != nil && s.pendingGap == nil {
			s.pendingGap = c.meta.GapBefore
		}
		return nil
	}
	names := make([]string, c.pieces)
	for i := range names {
		names[i] = pieceName(s.p.Instance, m.Name, i)
	}
	data := c.buf[:m.Durable]
	if truncate {
		return s.compact(ctx, m, data, names)
	}
	s.compactSem <- struct{}{}
	s.compactWG.Add(1)
	go func() {
		defer func() { <-s.compactSem; s.compactWG.Done() }()
		// Its own context: a shutdown waits for the compaction rather than
		// leave it half done (it would be finished at the next start).
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := s.compact(cctx, m, data, names); err != nil {
			s.log.Error("compacting a closed binlog segment failed; its pieces stay and the next start compacts it", "segment", m.Name, "err", errText(err))
		}
	}()
	return nil
}

// compact writes a closed segment as one object, then its index entry, then
// deletes its pieces.
func (s *streamer) compact(ctx context.Context, m segmentMeta, data []byte, pieces []string) error {
	m.Closed = true
	if int64(len(data)) > m.Durable {
		data = data[:m.Durable]
	}
	sum := sha256.Sum256(data)
	m.SHA256 = hex.EncodeToString(sum[:])
	m.Bytes = int64(len(data))
	// zstd level 1 like the pieces: level 3 doubled the compaction's CPU,
	// a sixth of the streamer's, for a few percent of size.
	// A closed segment and its index entry are never rewritten nor deleted:
	// in an Object Lock repository they are kept like backups.
	if err := s.putOnce(ctx, segmentName(s.p.Instance, m.Name), data, archive.ObjectOptions{Compression: "zstd", Level: 1, Retain: true}); err != nil {
		return err
	}
	if err := compactFault("segment"); err != nil {
		return err
	}
	ij, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := s.putOnce(ctx, indexName(s.p.Instance, m.Name), ij, archive.ObjectOptions{Retain: true}); err != nil {
		return err
	}
	if err := compactFault("index"); err != nil {
		return err
	}
	for _, p := range pieces {
		if err := s.p.Repo.DeleteObject(ctx, p); err != nil {
			return err
		}
	}
	s.log.Info("binlog segment closed", "segment", m.Name, "bytes", len(data), "events", m.Events, "last_gtid", m.LastGTID)
	return nil
}

// compactFault lets tests stop a compaction after a step, as a crash would.
var compactFault = func(step string) error { return nil }

// shutdown flushes the open segment (it stays open: the next start resumes
// it) and waits for compactions.
func (s *streamer) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := s.flush(ctx)
	s.compactWG.Wait()
	s.bg.Wait()
	return err
}
