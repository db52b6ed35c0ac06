package gtid

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// MySQLSet is a MySQL GTID set (@@gtid_executed, "uuid:1-5:7,uuid2:1-3"):
// per source UUID, sorted disjoint closed intervals of transaction numbers.
// The zero value is the empty set. Tagged GTIDs (MySQL 8.3+,
// "uuid:tag:N") are refused by ParseMySQLSet and DecodeMySQLSet.
type MySQLSet map[uuid.UUID][]Interval

// Interval is a closed range of transaction numbers, Start <= End.
type Interval struct{ Start, End int64 }

// IsMySQLSet reports whether s is written as a MySQL GTID set rather than
// a MariaDB position: only the MySQL form has a colon.
func IsMySQLSet(s string) bool { return strings.Contains(s, ":") }

// ParseMySQLSet parses "uuid:1-5:7,uuid2:3" (empty: the empty set; the
// newlines MySQL puts after the commas are allowed).
func ParseMySQLSet(s string) (MySQLSet, error) {
	set := MySQLSet{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		fields := strings.Split(part, ":")
		u, err := uuid.Parse(fields[0])
		if err != nil || len(fields) < 2 {
			return nil, fmt.Errorf("MySQL GTID set %q: %q is not UUID:N or UUID:N-M, e.g. 3e11fa47-71ca-11e1-9e33-c80aa9429562:1-100", s, part)
		}
		for _, iv := range fields[1:] {
			a, b, isRange := strings.Cut(iv, "-")
			lo, err1 := strconv.ParseInt(a, 10, 64)
			hi, err2 := lo, error(nil)
			if isRange {
				hi, err2 = strconv.ParseInt(b, 10, 64)
			}
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("MySQL GTID set %q: %q is not a transaction number or range (tagged GTIDs, UUID:TAG:N, are not supported)", s, iv)
			}
			if lo < 1 || hi < lo {
				return nil, fmt.Errorf("MySQL GTID set %q: interval %q is empty or starts below 1", s, iv)
			}
			set.addRange(u, lo, hi)
		}
	}
	return set, nil
}

// ParseMySQLGTID parses one MySQL GTID, "uuid:N".
func ParseMySQLGTID(s string) (uuid.UUID, int64, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	u, err := uuid.Parse(a)
	n, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err != nil || err2 != nil || n < 1 {
		return uuid.UUID{}, 0, fmt.Errorf("MySQL GTID %q: expected UUID:N, e.g. 3e11fa47-71ca-11e1-9e33-c80aa9429562:100", s)
	}
	return u, n, nil
}

// ParseMySQLTarget parses a point-in-time target on MySQL: one GTID,
// "uuid:N", or a set of one UUID and one interval, "uuid:1-N" (as copied
// from @@gtid_executed), which names its last transaction, N. A set of
// several UUIDs or intervals has no one last transaction and is refused.
func ParseMySQLTarget(s string) (uuid.UUID, int64, error) {
	if u, n, err := ParseMySQLGTID(s); err == nil {
		return u, n, nil
	}
	set, err := ParseMySQLSet(s)
	if err != nil {
		return uuid.UUID{}, 0, err
	}
	if len(set) != 1 {
		return uuid.UUID{}, 0, fmt.Errorf("MySQL GTID target %q names %d server UUIDs: name the one transaction to stop after, UUID:N", s, len(set))
	}
	for u, ivs := range set {
		if len(ivs) == 1 {
			return u, ivs[0].End, nil
		}
	}
	return uuid.UUID{}, 0, fmt.Errorf("MySQL GTID target %q has several intervals: name the one transaction to stop after, UUID:N", s)
}

// Clone returns a copy that shares nothing with s.
func (s MySQLSet) Clone() MySQLSet {
	c := MySQLSet{}
	for u, ivs := range s {
		c[u] = slices.Clone(ivs)
	}
	return c
}

// Contains reports whether transaction u:n is in s.
func (s MySQLSet) Contains(u uuid.UUID, n int64) bool {
	ivs := s[u]
	i, _ := slices.BinarySearchFunc(ivs, n, func(iv Interval, n int64) int {
		switch {
		case iv.End < n:
			return -1
		case iv.Start > n:
			return 1
		}
		return 0
	})
	return i < len(ivs) && ivs[i].Start <= n && n <= ivs[i].End
}

// Add adds transaction u:n.
func (s MySQLSet) Add(u uuid.UUID, n int64) { s.addRange(u, n, n) }

// AddSet adds every transaction of o.
func (s MySQLSet) AddSet(o MySQLSet) {
	for u, ivs := range o {
		for _, iv := range ivs {
			s.addRange(u, iv.Start, iv.End)
		}
	}
}

func (s MySQLSet) addRange(u uuid.UUID, lo, hi int64) {
	ivs := s[u]
	// Fast path: appending after the last interval (transactions in order).
	if n := len(ivs); n > 0 && lo >= ivs[n-1].Start {
		if lo <= ivs[n-1].End+1 {
			ivs[n-1].End = max(ivs[n-1].End, hi)
			return
		}
		s[u] = append(ivs, Interval{lo, hi})
		return
	}
	ivs = append(ivs, Interval{lo, hi})
	slices.SortFunc(ivs, func(a, b Interval) int { return cmp.Compare(a.Start, b.Start) })
	out := ivs[:1]
	for _, iv := range ivs[1:] {
		last := &out[len(out)-1]
		if iv.Start <= last.End+1 {
			last.End = max(last.End, iv.End)
			continue
		}
		out = append(out, iv)
	}
	s[u] = out
}

// Sub returns the transactions of s that are not in o.
func (s MySQLSet) Sub(o MySQLSet) MySQLSet {
	out := MySQLSet{}
	for u, ivs := range s {
		for _, iv := range ivs {
			lo := iv.Start
			for _, x := range o[u] {
				if x.End < lo || x.Start > iv.End {
					continue
				}
				if x.Start > lo {
					out.addRange(u, lo, x.Start-1)
				}
				lo = x.End + 1
			}
			if lo <= iv.End {
				out.addRange(u, lo, iv.End)
			}
		}
	}
	return out
}

// ContainsSet reports whether every transaction of o is in s.
func (s MySQLSet) ContainsSet(o MySQLSet) bool { return o.Sub(s).IsEmpty() }

// IsEmpty reports whether s holds no transaction.
func (s MySQLSet) IsEmpty() bool {
	for _, ivs := range s {
		if len(ivs) > 0 {
			return false
		}
	}
	return true
}

// Last returns the highest transaction number of u in s (0: none).
func (s MySQLSet) Last(u uuid.UUID) int64 {
	if ivs := s[u]; len(ivs) > 0 {
		return ivs[len(ivs)-1].End
	}
	return 0
}

// String formats s as MySQL does: UUIDs sorted, "uuid:1-5:7", joined by
// commas.
func (s MySQLSet) String() string {
	var us []uuid.UUID
	for u, ivs := range s {
		if len(ivs) > 0 {
			us = append(us, u)
		}
	}
	slices.SortFunc(us, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
	var b strings.Builder
	for i, u := range us {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(u.String())
		for _, iv := range s[u] {
			b.WriteByte(':')
			b.WriteString(strconv.FormatInt(iv.Start, 10))
			if iv.End != iv.Start {
				b.WriteByte('-')
				b.WriteString(strconv.FormatInt(iv.End, 10))
			}
		}
	}
	return b.String()
}

// DecodeMySQLSet decodes the binary form of a GTID set (a Previous_gtids
// event's body, COM_BINLOG_DUMP_GTID's data): n_sids, then per UUID its
// 16 bytes, n_intervals and [start, end) pairs, all little-endian.
func DecodeMySQLSet(b []byte) (MySQLSet, error) {
	if len(b) < 8 {
		return nil, errors.New("GTID set: too short")
	}
	if b[7] != 0 {
		return nil, errors.New("GTID set: tagged GTIDs (MySQL 8.3+) are not supported")
	}
	n := binary.LittleEndian.Uint64(b)
	b = b[8:]
	set := MySQLSet{}
	for range n {
		if len(b) < 24 {
			return nil, errors.New("GTID set: too short for its count")
		}
		u, _ := uuid.FromBytes(b[:16])
		k := binary.LittleEndian.Uint64(b[16:])
		b = b[24:]
		if uint64(len(b)) < k*16 {
			return nil, errors.New("GTID set: too short for its intervals")
		}
		for range k {
			lo, hi := int64(binary.LittleEndian.Uint64(b)), int64(binary.LittleEndian.Uint64(b[8:]))
			b = b[16:]
			if lo < 1 || hi <= lo {
				return nil, fmt.Errorf("GTID set: bad interval [%d, %d)", lo, hi)
			}
			set.addRange(u, lo, hi-1)
		}
	}
	return set, nil
}

// EncodeMySQLSet is DecodeMySQLSet's inverse.
func EncodeMySQLSet(s MySQLSet) []byte {
	var us []uuid.UUID
	for u, ivs := range s {
		if len(ivs) > 0 {
			us = append(us, u)
		}
	}
	slices.SortFunc(us, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(us)))
	for _, u := range us {
		b = append(b, u[:]...)
		b = binary.LittleEndian.AppendUint64(b, uint64(len(s[u])))
		for _, iv := range s[u] {
			b = binary.LittleEndian.AppendUint64(b, uint64(iv.Start))
			b = binary.LittleEndian.AppendUint64(b, uint64(iv.End+1))
		}
	}
	return b
}
