package gtid

import "testing"

func TestParsePosition(t *testing.T) {
	p, err := ParsePosition(" 1-2-30, 0-1-100 ")
	if err != nil || p.String() != "0-1-100,1-2-30" {
		t.Fatalf("ParsePosition: %v %v", p, err)
	}
	if g, ok := p.Get(1); !ok || g.Seq != 30 {
		t.Errorf("Get(1) = %v %v", g, ok)
	}
	if q := p.With(GTID{Domain: 0, Server: 5, Seq: 101}); q.String() != "0-5-101,1-2-30" || p.String() != "0-1-100,1-2-30" {
		t.Errorf("With: %v (p now %v)", q, p)
	}
	for _, bad := range []string{"0-1", "a-b-c", "0-1-2,0-3-4", "3E0F:1-5"} {
		if _, err := ParsePosition(bad); err == nil {
			t.Errorf("ParsePosition(%q) accepted", bad)
		}
	}
	if p, err := ParsePosition(""); err != nil || len(p) != 0 {
		t.Errorf("empty position: %v %v", p, err)
	}
}

func TestSeqAndBeyond(t *testing.T) {
	p, _ := ParsePosition("0-1-100,2-1-7")
	q, _ := ParsePosition("0-1-100,1-3-5")
	if p.Seq(0) != 100 || p.Seq(1) != 0 || p.Seq(2) != 7 {
		t.Errorf("Seq: %d %d %d", p.Seq(0), p.Seq(1), p.Seq(2))
	}
	// Domain 2 is only in p, domain 1 only in q: each holds one the
	// other lacks.
	if !p.Beyond(q) || !q.Beyond(p) {
		t.Errorf("Beyond: %v %v", p.Beyond(q), q.Beyond(p))
	}
	r, _ := ParsePosition("0-1-99")
	if r.Beyond(p) || !p.Beyond(r) || p.Beyond(p) {
		t.Errorf("Beyond on one domain: %v %v %v", r.Beyond(p), p.Beyond(r), p.Beyond(p))
	}
}
