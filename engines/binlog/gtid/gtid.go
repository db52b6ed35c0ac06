package gtid

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// GTID is one MariaDB global transaction id, domain-server-seq.
type GTID struct {
	Domain uint32
	Server uint32
	Seq    uint64
}

func (g GTID) String() string {
	return strconv.FormatUint(uint64(g.Domain), 10) + "-" + strconv.FormatUint(uint64(g.Server), 10) + "-" + strconv.FormatUint(g.Seq, 10)
}

// Parse parses "domain-server-seq".
func Parse(s string) (GTID, error) {
	parts := strings.Split(strings.TrimSpace(s), "-")
	if len(parts) != 3 {
		return GTID{}, fmt.Errorf("GTID %q: expected domain-server-sequence, e.g. 0-1-100 (a MySQL GTID is UUID:N)", s)
	}
	d, err1 := strconv.ParseUint(parts[0], 10, 32)
	sv, err2 := strconv.ParseUint(parts[1], 10, 32)
	q, err3 := strconv.ParseUint(parts[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return GTID{}, fmt.Errorf("GTID %q: expected three decimal numbers domain-server-sequence, e.g. 0-1-100", s)
	}
	return GTID{Domain: uint32(d), Server: uint32(sv), Seq: q}, nil
}

// Position is a MariaDB GTID position: at most one GTID per domain, sorted
// by domain (the form of @@gtid_slave_pos and @@gtid_binlog_pos).
type Position []GTID

// ParsePosition parses "0-1-100,1-2-7" (empty: no position). A domain named
// twice is refused: a position has one GTID per domain.
func ParsePosition(s string) (Position, error) {
	var p Position
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		g, err := Parse(f)
		if err != nil {
			return nil, err
		}
		if _, ok := p.Get(g.Domain); ok {
			return nil, fmt.Errorf("GTID position %q names domain %d twice", s, g.Domain)
		}
		p = p.With(g)
	}
	return p, nil
}

func (p Position) String() string {
	s := make([]string, len(p))
	for i, g := range p {
		s[i] = g.String()
	}
	return strings.Join(s, ",")
}

// Get returns the position's GTID in domain d.
func (p Position) Get(d uint32) (GTID, bool) {
	i, ok := slices.BinarySearchFunc(p, d, func(g GTID, d uint32) int { return cmp.Compare(g.Domain, d) })
	if !ok {
		return GTID{}, false
	}
	return p[i], true
}

// With returns a copy of p where g replaces the GTID of its domain.
func (p Position) With(g GTID) Position {
	i, ok := slices.BinarySearchFunc(p, g.Domain, func(x GTID, d uint32) int { return cmp.Compare(x.Domain, d) })
	q := slices.Clone(p)
	if ok {
		q[i] = g
		return q
	}
	return slices.Insert(q, i, g)
}

// Set replaces g's domain in place.
func (p *Position) Set(g GTID) {
	i, ok := slices.BinarySearchFunc(*p, g.Domain, func(x GTID, d uint32) int { return cmp.Compare(x.Domain, d) })
	if ok {
		(*p)[i] = g
		return
	}
	*p = slices.Insert(*p, i, g)
}

// Seq is the sequence number of domain d's GTID, 0 when p has none.
func (p Position) Seq(d uint32) uint64 {
	g, _ := p.Get(d)
	return g.Seq
}

// Beyond reports whether p holds a transaction q does not: a higher
// sequence number in some domain.
func (p Position) Beyond(q Position) bool {
	for _, g := range p {
		if g.Seq > q.Seq(g.Domain) {
			return true
		}
	}
	return false
}
