package apply

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Binlog event types this package looks at (MariaDB's log_event.h).
const (
	evQuery           = 2
	evStop            = 3
	evRotate          = 4
	evIntvar          = 5
	evRand            = 13
	evUserVar         = 14
	evFormatDesc      = 15
	evXID             = 16
	evIncident        = 26
	evHeartbeat       = 27
	evMySQLGTID       = 33
	evMySQLAnonGTID   = 34
	evMySQLPrevGTIDs  = 35
	evXAPrepare       = 38
	evMySQLPayload    = 40
	evBinlogCheckpt   = 161
	evGTID            = 162
	evGTIDList        = 163
	evStartEncryption = 164
)

const (
	headerLen      = 19
	binlogMagic    = "\xfebin"
	flagInUse      = 0x1  // LOG_EVENT_BINLOG_IN_USE_F: the file was not closed
	flagArtificial = 0x20 // LOG_EVENT_ARTIFICIAL_F: made up by the sender

	// MariaDB GTID event flags2.
	gtidStandalone   = 0x01
	gtidCompletedXA  = 0x80
	checksumCRC32    = 1
	fdeTrailerLen    = 5          // checksum algorithm byte + CRC32 (present even when the algorithm is off)
	maxEventSize     = 1<<30 + 64 // max_allowed_packet's ceiling; anything larger is damage
	fdeCreatedOffset = 2 + 50     // binlog_version, server_version[50], then created
)

// header is the 19-byte common header of a binlog event.
type header struct {
	Timestamp uint32
	Type      byte
	ServerID  uint32
	Size      uint32
	LogPos    uint32
	Flags     uint16
}

func parseHeader(b []byte) header {
	return header{
		Timestamp: binary.LittleEndian.Uint32(b[0:]),
		Type:      b[4],
		ServerID:  binary.LittleEndian.Uint32(b[5:]),
		Size:      binary.LittleEndian.Uint32(b[9:]),
		LogPos:    binary.LittleEndian.Uint32(b[13:]),
		Flags:     binary.LittleEndian.Uint16(b[17:]),
	}
}

// fde is what a Format_description event tells about the events after it.
type fde struct {
	raw            []byte // the whole event, as in the file
	checksum       bool   // events carry a CRC32 trailer
	queryPostHdr   int    // post-header length of Query events
	serverVersion  string
	created        uint32
	postHeaderLens []byte
}

func parseFDE(ev []byte) (*fde, error) {
	body := ev[headerLen:]
	if len(body) < 57+fdeTrailerLen {
		return nil, errors.New("format description event too short")
	}
	f := &fde{raw: ev}
	if v := binary.LittleEndian.Uint16(body); v != 4 {
		return nil, fmt.Errorf("binlog format version %d (only version 4, MySQL 5.0 and later, is supported)", v)
	}
	f.serverVersion = string(bytes.TrimRight(body[2:52], "\x00"))
	f.created = binary.LittleEndian.Uint32(body[fdeCreatedOffset:])
	if body[56] != headerLen {
		return nil, fmt.Errorf("event header length %d, expected %d", body[56], headerLen)
	}
	f.postHeaderLens = body[57 : len(body)-fdeTrailerLen]
	alg := body[len(body)-fdeTrailerLen]
	switch alg {
	case 0:
	case checksumCRC32:
		f.checksum = true
		// The server sets the in-use flag of an open file's FDE after
		// computing the checksum (and clears it at close): check without it.
		if err := verifyCRC(ev); err != nil && ev[17]&flagInUse != 0 {
			c := append([]byte(nil), ev...)
			c[17] &^= flagInUse
			if verifyCRC(c) != nil {
				return nil, err
			}
		} else if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown binlog checksum algorithm %d", alg)
	}
	f.queryPostHdr = 13
	if len(f.postHeaderLens) >= evQuery {
		f.queryPostHdr = int(f.postHeaderLens[evQuery-1])
	}
	return f, nil
}

func verifyCRC(ev []byte) error {
	n := len(ev) - 4
	if n < headerLen {
		return errors.New("event too short for its checksum")
	}
	if got, want := crc32.ChecksumIEEE(ev[:n]), binary.LittleEndian.Uint32(ev[n:]); got != want {
		return fmt.Errorf("event checksum mismatch (computed %08x, stored %08x): the file is damaged", got, want)
	}
	return nil
}

// setCRC rewrites an event's CRC32 trailer after its bytes were changed.
func setCRC(ev []byte) {
	n := len(ev) - 4
	binary.LittleEndian.PutUint32(ev[n:], crc32.ChecksumIEEE(ev[:n]))
}

// reader reads the events of one native binlog file in order.
type reader struct {
	r    *bufio.Reader
	name string
	pos  uint64 // offset of the next event
	fde  *fde
	buf  []byte
}

func newReader(r io.Reader, name string) (*reader, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var magic [4]byte
	if _, err := io.ReadFull(br, magic[:]); err != nil {
		return nil, fmt.Errorf("binlog file %s: reading the magic number: %w", name, err)
	}
	if string(magic[:]) != binlogMagic {
		return nil, fmt.Errorf("binlog file %s: not a binlog file (magic %x, expected fe62696e)", name, magic)
	}
	return &reader{r: br, name: name, pos: 4}, nil
}

// next returns the next event's header, its bytes (valid until the next
// call) and its offset; io.EOF at a clean end of file. A truncated last event
// (a file still being written) ends the file with errTruncated.
func (rd *reader) next() (header, []byte, uint64, error) {
	start := rd.pos
	if cap(rd.buf) < headerLen {
		rd.buf = make([]byte, 0, 64<<10)
	}
	hb := rd.buf[:headerLen]
	n, err := io.ReadFull(rd.r, hb)
	if errors.Is(err, io.EOF) {
		return header{}, nil, start, io.EOF
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return header{}, nil, start, fmt.Errorf("%w: %d bytes of an event header at %s:%d", errTruncated, n, rd.name, start)
	}
	if err != nil {
		return header{}, nil, start, fmt.Errorf("binlog file %s at %d: %w", rd.name, start, err)
	}
	h := parseHeader(hb)
	if h.Size < headerLen || h.Size > maxEventSize {
		return header{}, nil, start, fmt.Errorf("binlog file %s at %d: event size %d is impossible: the file is damaged", rd.name, start, h.Size)
	}
	// Positions are the source's. An archive segment that starts inside
	// its source file holds the file's Format_description and then events
	// from far into the file: their log_pos (where each ends in the source
	// file) is what a replica reports as Exec_Master_Log_Pos, what a user
	// names with --to-position, and what mariadb-binlog prints. In a whole
	// file the two agree.
	if h.Type != evFormatDesc && uint64(h.LogPos) >= uint64(h.Size)+4 {
		start = uint64(h.LogPos) - uint64(h.Size)
		rd.pos = start
	}
	if cap(rd.buf) < int(h.Size) {
		nb := make([]byte, h.Size, h.Size+h.Size/4)
		copy(nb, hb)
		rd.buf = nb
	}
	ev := rd.buf[:h.Size]
	if _, err := io.ReadFull(rd.r, ev[headerLen:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return header{}, nil, start, fmt.Errorf("%w: event of %d bytes at %s:%d", errTruncated, h.Size, rd.name, start)
		}
		return header{}, nil, start, fmt.Errorf("binlog file %s at %d: %w", rd.name, start, err)
	}
	rd.pos += uint64(h.Size)
	if h.Type == evFormatDesc {
		f, err := parseFDE(ev)
		if err != nil {
			return header{}, nil, start, fmt.Errorf("binlog file %s at %d: %w", rd.name, start, err)
		}
		f.raw = append([]byte(nil), ev...)
		rd.fde = f
	} else {
		if rd.fde == nil {
			return header{}, nil, start, fmt.Errorf("binlog file %s at %d: event type %d before the format description event", rd.name, start, h.Type)
		}
		if rd.fde.checksum {
			if err := verifyCRC(ev); err != nil {
				return header{}, nil, start, fmt.Errorf("binlog file %s at %d: %w", rd.name, start, err)
			}
		}
	}
	return h, ev, start, nil
}

var errTruncated = errors.New("binlog file ends inside an event")

// body is an event's bytes after the header and before the checksum.
func (rd *reader) body(ev []byte) []byte {
	b := ev[headerLen:]
	if rd.fde != nil && rd.fde.checksum && ev[4] != evFormatDesc {
		b = b[:len(b)-4]
	}
	return b
}

// gtidEvent is a MariaDB GTID event's content.
type gtidEvent struct {
	Seq    uint64
	Domain uint32
	Flags  byte
}

func parseGTIDEvent(b []byte) (gtidEvent, error) {
	if len(b) < 13 {
		return gtidEvent{}, errors.New("GTID event too short")
	}
	return gtidEvent{Seq: binary.LittleEndian.Uint64(b), Domain: binary.LittleEndian.Uint32(b[8:]), Flags: b[12]}, nil
}

// parseGTIDList reads a Gtid_list event: the binlog state at the start of a file.
func parseGTIDList(b []byte) (Position, error) {
	if len(b) < 4 {
		return nil, errors.New("gtid list event too short")
	}
	n := int(binary.LittleEndian.Uint32(b) & 0x0fffffff)
	b = b[4:]
	if len(b) < n*16 {
		return nil, errors.New("gtid list event too short for its count")
	}
	var p Position
	for i := 0; i < n; i++ {
		g := GTID{Domain: binary.LittleEndian.Uint32(b), Server: binary.LittleEndian.Uint32(b[4:]), Seq: binary.LittleEndian.Uint64(b[8:])}
		p = p.With(g)
		b = b[16:]
	}
	return p, nil
}

// queryText returns the statement of a Query event.
func (rd *reader) queryText(ev []byte) ([]byte, error) {
	b := rd.body(ev)
	ph := rd.fde.queryPostHdr
	if len(b) < ph || ph < 13 {
		return nil, errors.New("query event too short")
	}
	dbLen := int(b[8])
	statusLen := int(binary.LittleEndian.Uint16(b[11:]))
	off := ph + statusLen + dbLen + 1
	if off > len(b) {
		return nil, errors.New("query event too short for its status and schema")
	}
	return b[off:], nil
}
