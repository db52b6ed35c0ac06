package binlog

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/tidemark-backup/tidemark/engines/binlog/gtid"
)

// Binlog event types this package looks at (the server's Log_event_type).
const (
	evQuery          = 2
	evStop           = 3
	evRotate         = 4
	evFormatDesc     = 15
	evXID            = 16
	evHeartbeat      = 27
	evMySQLGTID      = 33
	evAnonymousGTID  = 34
	evPreviousGTIDs  = 35
	evHeartbeatV2    = 41
	evMariaCkpt      = 161
	evMariaGTID      = 162
	evMariaGTIDList  = 163
	headerLen        = 19
	flagArtificial   = 0x20
	mariaStandalone  = 0x01 // FL_STANDALONE in a MariaDB GTID event's flags2
	checksumCRC32    = 1
	checksumLen      = 4
	binlogMagicBytes = "\xfebin"
)

// event is one binlog event as the server sent it: header fields decoded,
// raw bytes (header, body and checksum) untouched.
type event struct {
	raw       []byte
	typ       byte
	timestamp uint32
	serverID  uint32
	size      uint32
	logPos    uint32 // end position in the source file; 0 for some artificial events
	flags     uint16
}

func parseHeader(raw []byte) (event, error) {
	if len(raw) < headerLen {
		return event{}, fmt.Errorf("binlog event of %d bytes is shorter than its %d-byte header", len(raw), headerLen)
	}
	e := event{
		raw:       raw,
		timestamp: binary.LittleEndian.Uint32(raw[0:]),
		typ:       raw[4],
		serverID:  binary.LittleEndian.Uint32(raw[5:]),
		size:      binary.LittleEndian.Uint32(raw[9:]),
		logPos:    binary.LittleEndian.Uint32(raw[13:]),
		flags:     binary.LittleEndian.Uint16(raw[17:]),
	}
	if int(e.size) != len(raw) {
		return event{}, fmt.Errorf("binlog event type %d: header says %d bytes, got %d", e.typ, e.size, len(raw))
	}
	return e, nil
}

// start is the event's start position in its source file.
func (e event) start() uint64 { return uint64(e.logPos) - uint64(e.size) }

func (e event) time() time.Time { return time.Unix(int64(e.timestamp), 0).UTC() }

// artificial tells the events a dump connection adds and the file does not
// hold: the fake Rotate at the start (timestamp 0, log_pos 0, flag 0x20), a
// re-sent Format_description with log_pos 0, heartbeats.
func (e event) artificial() bool {
	switch {
	case e.typ == evHeartbeat || e.typ == evHeartbeatV2:
		return true
	case e.flags&flagArtificial != 0:
		return true
	case e.logPos == 0:
		return true
	}
	return false
}

// body is the event's payload without header and, when the file is
// checksummed, without the trailing CRC32.
func (e event) body(crc bool) []byte {
	b := e.raw[headerLen:]
	if crc && len(b) >= checksumLen {
		b = b[:len(b)-checksumLen]
	}
	return b
}

// hasCRC tells whether raw ends with the CRC32 of the rest.
func hasCRC(raw []byte) bool {
	n := len(raw) - checksumLen
	return n >= headerLen && crc32.ChecksumIEEE(raw[:n]) == binary.LittleEndian.Uint32(raw[n:])
}

// fdeChecksum reads the checksum algorithm a Format_description event
// announces: the byte before its own CRC (servers ≥ 5.6.1 / MariaDB 5.3).
func fdeChecksum(e event) byte {
	b := e.raw[headerLen:]
	// binlog_version(2) server_version(50) create_timestamp(4) header_len(1)
	// post-header lengths(n) alg(1) crc(4)
	if len(b) < 2+50+4+1+1+checksumLen {
		return 0
	}
	return b[len(b)-checksumLen-1]
}

// rotateTarget reads a Rotate event: the next file and its position.
func rotateTarget(e event, crc bool) (string, uint64) {
	b := e.body(crc)
	if len(b) < 8 {
		return "", 0
	}
	return string(b[8:]), binary.LittleEndian.Uint64(b)
}

// queryText reads a Query event's statement text.
func queryText(e event, crc bool) string {
	b := e.body(crc)
	// thread_id(4) exec_time(4) db_len(1) error_code(2) status_vars_len(2)
	if len(b) < 13 {
		return ""
	}
	dbLen := int(b[8])
	svLen := int(binary.LittleEndian.Uint16(b[11:]))
	off := 13 + svLen + dbLen + 1
	if off > len(b) {
		return ""
	}
	return string(b[off:])
}

// GTID and Position are the shared MariaDB GTID types.
type (
	GTID     = gtid.GTID
	Position = gtid.Position
)

// ParsePosition parses "0-1-100,1-2-7" (empty: no transaction yet).
func ParsePosition(s string) (Position, error) { return gtid.ParsePosition(s) }

// mariaGTID reads a MariaDB GTID event: the id and its flags2 byte.
func mariaGTID(e event, crc bool) (GTID, byte, error) {
	b := e.body(crc)
	if len(b) < 13 {
		return GTID{}, 0, fmt.Errorf("MariaDB GTID event at %d: %d-byte body is too short", e.start(), len(b))
	}
	return GTID{Domain: binary.LittleEndian.Uint32(b[8:]), Server: e.serverID, Seq: binary.LittleEndian.Uint64(b)}, b[12], nil
}

// mariaGTIDList reads a Gtid_list event: the GTID state at the start of its
// file.
func mariaGTIDList(e event, crc bool) (Position, error) {
	b := e.body(crc)
	if len(b) < 4 {
		return nil, fmt.Errorf("gtid_list event at %d is too short", e.start())
	}
	n := int(binary.LittleEndian.Uint32(b) & (1<<28 - 1))
	b = b[4:]
	if len(b) < n*16 {
		return nil, fmt.Errorf("gtid_list event at %d: %d entries in %d bytes", e.start(), n, len(b))
	}
	p := Position{}
	for i := 0; i < n; i++ {
		p.Set(GTID{Domain: binary.LittleEndian.Uint32(b), Server: binary.LittleEndian.Uint32(b[4:]), Seq: binary.LittleEndian.Uint64(b[8:])})
		b = b[16:]
	}
	return p, nil
}

// mysqlGTID reads a MySQL GTID event as "uuid:gno".
func mysqlGTID(e event, crc bool) (string, error) {
	b := e.body(crc)
	if len(b) < 25 {
		return "", fmt.Errorf("GTID event at %d is too short", e.start())
	}
	sid := b[1:17]
	gno := binary.LittleEndian.Uint64(b[17:])
	return fmt.Sprintf("%x-%x-%x-%x-%x:%d", sid[0:4], sid[4:6], sid[6:8], sid[8:10], sid[10:16], gno), nil
}
