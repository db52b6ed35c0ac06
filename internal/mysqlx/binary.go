package mysqlx

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// The binary protocol. A server sending rows as text formats every number
// and date itself, and that is much of its work in a dump: about half of
// the server's CPU on tables of DOUBLEs, DECIMALs and DATETIMEs, measured
// here, DOUBLE going through dtoa's big-number arithmetic. Rows of a
// prepared statement come in the binary protocol instead: integers, floats
// and dates as fixed-width binary, strings and DECIMAL as text. QueryBinary
// reads them and turns each value into the text the dump writes, on our
// side of the socket, where Go formats a double several times faster.

// ErrNoBinary says the server refused to prepare the statement (for example
// max_prepared_stmt_count = 0); the connection is still usable and Query
// reads the same rows as text.
var ErrNoBinary = errors.New("the server refused a prepared statement")

// Column types (enum_field_types) and flags of column definitions.
const (
	typeTiny       = 1
	typeShort      = 2
	typeLong       = 3
	typeFloat      = 4
	typeDouble     = 5
	typeNull       = 6
	typeTimestamp  = 7
	typeLongLong   = 8
	typeInt24      = 9
	typeDate       = 10
	typeTime       = 11
	typeDatetime   = 12
	typeYear       = 13
	typeNewDate    = 14
	typeTimestamp2 = 17
	typeDatetime2  = 18
	typeTime2      = 19

	flagUnsigned = 32
)

// binCol is what decoding a column's binary value needs.
type binCol struct {
	typ      byte
	unsigned bool
	decimals int // fractional digits of a temporal type, 0-6
}

// QueryBinary runs query (a SELECT without parameters) as a prepared
// statement and calls row for every row, as Query does, with every value as
// text: integers in decimal; FLOAT and DOUBLE as the shortest decimal that
// reads back as the same value (a FLOAT's is checked through the double
// conversion a server makes when it loads one, else the double's is used);
// DATE, DATETIME, TIMESTAMP and TIME as the text protocol writes them, with
// as many fractional digits as the column has; YEAR in four digits (a "0"
// would load as 2000); everything else (strings, DECIMAL, BIT, ENUM, SET,
// JSON, spatial) as the server sent it. A refused prepare returns
// ErrNoBinary with the connection still usable.
func (w *Wire) QueryBinary(ctx context.Context, query string, row func(fields [][]byte) error) error {
	return w.run(ctx, func() error {
		if err := w.writeCommand(comStmtPrepare, nil, query); err != nil {
			return err
		}
		p, err := w.packet()
		if err != nil {
			return err
		}
		if len(p) > 0 && p[0] == 0xff {
			return inSync{fmt.Errorf("%w: %w", ErrNoBinary, serverError(p))}
		}
		if len(p) < 9 || p[0] != 0x00 {
			return fmt.Errorf("wire: bad prepare response (% x)", head(p))
		}
		id := binary.LittleEndian.Uint32(p[1:5])
		ncols := int(binary.LittleEndian.Uint16(p[5:7]))
		nparams := int(binary.LittleEndian.Uint16(p[7:9]))
		if nparams != 0 || ncols == 0 {
			return fmt.Errorf("wire: prepared statement has %d parameters and %d columns, want none and some", nparams, ncols)
		}
		if cap(w.cols) < ncols {
			w.cols = make([]binCol, ncols)
		}
		cols := w.cols[:ncols]
		if err := w.columnDefs(cols); err != nil {
			return err
		}

		// Execute: no cursor, one iteration, no parameters.
		var args [9]byte
		binary.LittleEndian.PutUint32(args[0:4], id)
		binary.LittleEndian.PutUint32(args[5:9], 1)
		if err := w.writeCommand(comStmtExecute, args[:], ""); err != nil {
			return err
		}
		p, err = w.packet()
		if err != nil {
			return err
		}
		if len(p) > 0 && p[0] == 0xff {
			return serverError(p)
		}
		n, m, ok := lenencInt(p)
		if !ok || int(n) != ncols {
			return fmt.Errorf("wire: execute returned a bad column count packet (% x) for %d columns", head(p), ncols)
		}
		// MariaDB with MARIADB_CLIENT_CACHE_METADATA (go-sql-driver asks
		// for it) adds a byte: 0 when the definitions are left out because
		// the prepare response gave them.
		if len(p) == m || p[m] != 0 {
			if err := w.columnDefs(cols); err != nil {
				return err
			}
		}
		fields := w.fieldSlice(ncols)
		for {
			p, err := w.rowPacket()
			if err != nil {
				return err
			}
			if p == nil {
				break
			}
			if err := w.parseBinaryRow(p, cols, fields); err != nil {
				return err
			}
			if err := row(fields); err != nil {
				return err
			}
		}
		// No reply: the next command starts a new sequence.
		binary.LittleEndian.PutUint32(args[0:4], id)
		return w.writeCommand(comStmtClose, args[:4], "")
	})
}

// columnDefs reads len(cols) column definitions and the EOF packet that may
// follow them.
func (w *Wire) columnDefs(cols []binCol) error {
	for i := range cols {
		p, err := w.packet()
		if err != nil {
			return err
		}
		if cols[i], err = parseColumnDef(p); err != nil {
			return fmt.Errorf("wire: column %d: %w", i+1, err)
		}
	}
	return w.endOfMetadata()
}

// parseColumnDef reads what QueryBinary needs from a column definition
// (Protocol::ColumnDefinition41): six length-encoded strings, then a block
// of fixed fields.
func parseColumnDef(p []byte) (binCol, error) {
	pos := 0
	for range 6 {
		n, m, ok := lenencInt(p[pos:])
		if !ok || uint64(len(p)-pos-m) < n {
			return binCol{}, errors.New("bad column definition")
		}
		pos += m + int(n)
	}
	// length of the fixed fields (0x0c), charset (2), length (4), type,
	// flags (2), decimals.
	if len(p)-pos < 1+2+4+1+2+1 {
		return binCol{}, errors.New("short column definition")
	}
	f := p[pos+1:]
	c := binCol{typ: f[6], unsigned: binary.LittleEndian.Uint16(f[7:9])&flagUnsigned != 0, decimals: int(f[9])}
	if c.decimals > 6 {
		c.decimals = 6 // 31 (not fixed) and the like: not a temporal column's
	}
	return c, nil
}

// parseBinaryRow decodes one binary row (a 0x00 header, a NULL bitmap
// offset by two bits, then the values of the non-NULL columns) into fields.
// Values formatted as text go into w.text, sized for the longest (26
// bytes); were it to grow anyway, the slices handed out before still point
// at the old array, which nothing writes again.
func (w *Wire) parseBinaryRow(p []byte, cols []binCol, fields [][]byte) error {
	nb := (len(cols) + 7 + 2) / 8
	if len(p) < 1+nb || p[0] != 0x00 {
		return fmt.Errorf("wire: bad binary row header (% x)", head(p))
	}
	nulls := p[1 : 1+nb]
	pos := 1 + nb
	if need := len(cols) * 32; cap(w.text) < need {
		w.text = make([]byte, 0, need)
	}
	text := w.text[:0]
	for i, c := range cols {
		if nulls[(i+2)/8]&(1<<((i+2)%8)) != 0 || c.typ == typeNull {
			fields[i] = nil
			continue
		}
		size := fixedSize(c.typ)
		switch {
		case size < 0: // strings, DECIMAL, BIT, ENUM, SET, JSON, GEOMETRY: as text
			n, m, ok := lenencInt(p[pos:])
			if !ok || uint64(len(p)-pos-m) < n {
				return fmt.Errorf("wire: column %d overruns its row", i+1)
			}
			fields[i] = p[pos+m : pos+m+int(n) : pos+m+int(n)]
			pos += m + int(n)
			continue
		case size == 0: // temporal: a length byte, then that many bytes
			if pos < len(p) {
				size = 1 + int(p[pos])
			}
		}
		if size == 0 || size > len(p)-pos {
			return fmt.Errorf("wire: column %d (type %d) overruns its row", i+1, c.typ)
		}
		v := p[pos : pos+size]
		pos += size
		start := len(text)
		switch c.typ {
		case typeTiny:
			if c.unsigned {
				text = strconv.AppendUint(text, uint64(v[0]), 10)
			} else {
				text = strconv.AppendInt(text, int64(int8(v[0])), 10)
			}
		case typeYear:
			text = appendPadded(text, int(binary.LittleEndian.Uint16(v)), 4)
		case typeShort:
			if c.unsigned {
				text = strconv.AppendUint(text, uint64(binary.LittleEndian.Uint16(v)), 10)
			} else {
				text = strconv.AppendInt(text, int64(int16(binary.LittleEndian.Uint16(v))), 10)
			}
		case typeLong, typeInt24:
			if c.unsigned {
				text = strconv.AppendUint(text, uint64(binary.LittleEndian.Uint32(v)), 10)
			} else {
				text = strconv.AppendInt(text, int64(int32(binary.LittleEndian.Uint32(v))), 10)
			}
		case typeLongLong:
			if c.unsigned {
				text = strconv.AppendUint(text, binary.LittleEndian.Uint64(v), 10)
			} else {
				text = strconv.AppendInt(text, int64(binary.LittleEndian.Uint64(v)), 10)
			}
		case typeFloat:
			text = appendFloat32(text, math.Float32frombits(binary.LittleEndian.Uint32(v)))
		case typeDouble:
			text = strconv.AppendFloat(text, math.Float64frombits(binary.LittleEndian.Uint64(v)), 'g', -1, 64)
		default:
			var err error
			if text, err = appendTemporal(text, c, v[1:]); err != nil {
				return fmt.Errorf("wire: column %d: %w", i+1, err)
			}
		}
		fields[i] = text[start:len(text):len(text)]
	}
	if pos != len(p) {
		return fmt.Errorf("wire: binary row has %d bytes after its %d columns", len(p)-pos, len(cols))
	}
	return nil
}

// fixedSize is the size of a binary value of type typ: -1 for a
// length-encoded string, 0 for a temporal value (a length byte first).
func fixedSize(typ byte) int {
	switch typ {
	case typeTiny:
		return 1
	case typeShort, typeYear:
		return 2
	case typeLong, typeInt24, typeFloat:
		return 4
	case typeLongLong, typeDouble:
		return 8
	case typeDate, typeNewDate, typeDatetime, typeDatetime2, typeTimestamp, typeTimestamp2, typeTime, typeTime2:
		return 0
	}
	return -1
}

// appendFloat32 writes f as the shortest decimal that a server loading it
// (strtod to a double, then a cast to float) turns back into f, checked
// here the same way; the rare one that fails gets the double's shortest
// decimal, which is exact.
func appendFloat32(dst []byte, f float32) []byte {
	start := len(dst)
	dst = strconv.AppendFloat(dst, float64(f), 'g', -1, 32)
	if d, err := strconv.ParseFloat(string(dst[start:]), 64); err == nil && float32(d) == f {
		return dst
	}
	return strconv.AppendFloat(dst[:start], float64(f), 'g', -1, 64)
}

// appendTemporal formats a binary DATE, DATETIME, TIMESTAMP or TIME value
// (its bytes after the length byte) as the text protocol does.
func appendTemporal(dst []byte, c binCol, b []byte) ([]byte, error) {
	isTime := c.typ == typeTime || c.typ == typeTime2
	var micro int
	if isTime {
		// negative, days (4), hour, minute, second[, microseconds (4)]
		if len(b) != 0 && len(b) != 8 && len(b) != 12 {
			return dst, fmt.Errorf("TIME value of %d bytes", len(b))
		}
		var neg bool
		var days, h, m, s int
		if len(b) >= 8 {
			neg = b[0] == 1
			days = int(binary.LittleEndian.Uint32(b[1:5]))
			h, m, s = int(b[5]), int(b[6]), int(b[7])
		}
		if len(b) == 12 {
			micro = int(binary.LittleEndian.Uint32(b[8:12]))
		}
		if neg {
			dst = append(dst, '-')
		}
		dst = appendPadded(dst, days*24+h, 2)
		dst = append(dst, ':')
		dst = appendPadded(dst, m, 2)
		dst = append(dst, ':')
		dst = appendPadded(dst, s, 2)
		return appendFraction(dst, micro, c.decimals), nil
	}
	// year (2), month, day[, hour, minute, second[, microseconds (4)]]
	if len(b) != 0 && len(b) != 4 && len(b) != 7 && len(b) != 11 {
		return dst, fmt.Errorf("date value of %d bytes", len(b))
	}
	var y, mo, d, h, mi, s int
	if len(b) >= 4 {
		y, mo, d = int(binary.LittleEndian.Uint16(b[0:2])), int(b[2]), int(b[3])
	}
	if len(b) >= 7 {
		h, mi, s = int(b[4]), int(b[5]), int(b[6])
	}
	if len(b) == 11 {
		micro = int(binary.LittleEndian.Uint32(b[7:11]))
	}
	dst = appendPadded(dst, y, 4)
	dst = append(dst, '-')
	dst = appendPadded(dst, mo, 2)
	dst = append(dst, '-')
	dst = appendPadded(dst, d, 2)
	if c.typ == typeDate || c.typ == typeNewDate {
		return dst, nil
	}
	dst = append(dst, ' ')
	dst = appendPadded(dst, h, 2)
	dst = append(dst, ':')
	dst = appendPadded(dst, mi, 2)
	dst = append(dst, ':')
	dst = appendPadded(dst, s, 2)
	return appendFraction(dst, micro, c.decimals), nil
}

// appendFraction writes ".ffffff" cut to digits places (none for 0).
func appendFraction(dst []byte, micro, digits int) []byte {
	if digits <= 0 {
		return dst
	}
	dst = append(dst, '.')
	var f [6]byte
	for i := 5; i >= 0; i-- {
		f[i] = byte('0' + micro%10)
		micro /= 10
	}
	return append(dst, f[:digits]...)
}

// appendPadded writes v in decimal with at least width digits.
func appendPadded(dst []byte, v, width int) []byte {
	var b [20]byte
	i := len(b)
	for v >= 10 || len(b)-i < width-1 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	i--
	b[i] = byte('0' + v)
	return append(dst, b[i:]...)
}
