package gtid

import (
	"testing"

	"github.com/google/uuid"
)

const (
	ua = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	ub = "4e11fa47-71ca-11e1-9e33-c80aa9429562"
)

func TestMySQLSet(t *testing.T) {
	s, err := ParseMySQLSet(ub + ":1-3:7,\n" + ua + ":1-5:9-10")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.String(), ua+":1-5:9-10,"+ub+":1-3:7"; got != want {
		t.Fatalf("String = %s, want %s", got, want)
	}
	a := uuid.MustParse(ua)
	for n, want := range map[int64]bool{1: true, 5: true, 6: false, 8: false, 9: true, 10: true, 11: false} {
		if s.Contains(a, n) != want {
			t.Errorf("Contains(%d) = %v", n, !want)
		}
	}
	c := s.Clone()
	c.Add(a, 6)
	c.Add(a, 8)
	c.Add(a, 7)
	if got := c.String(); got != ua+":1-10,"+ub+":1-3:7" {
		t.Fatalf("after adds: %s", got)
	}
	if got := c.Sub(s).String(); got != ua+":6-8" {
		t.Fatalf("Sub = %s", got)
	}
	if !c.ContainsSet(s) || s.ContainsSet(c) {
		t.Fatal("ContainsSet is wrong")
	}
	d, err := DecodeMySQLSet(EncodeMySQLSet(s))
	if err != nil || d.String() != s.String() {
		t.Fatalf("round trip: %v %v", d, err)
	}
	if c.Last(a) != 10 || c.Last(uuid.New()) != 0 {
		t.Fatal("Last is wrong")
	}
	for _, bad := range []string{"x:1", ua + ":0", ua + ":5-3", ua + ":tag:1", ua} {
		if _, err := ParseMySQLSet(bad); err == nil {
			t.Errorf("ParseMySQLSet(%q) accepted", bad)
		}
	}
	if _, _, err := ParseMySQLGTID(ua + ":1-2"); err == nil {
		t.Error("ParseMySQLGTID accepted a range")
	}
	for in, want := range map[string]int64{ua + ":7": 7, ua + ":1-77": 77, " " + ua + ":5-9 ": 9} {
		if u, n, err := ParseMySQLTarget(in); err != nil || n != want || u != a {
			t.Errorf("ParseMySQLTarget(%q) = %v %d %v, want %d", in, u, n, err, want)
		}
	}
	for _, bad := range []string{ua + ":1-5:7", ua + ":1-5," + ub + ":1-3", "0-1-5"} {
		if _, _, err := ParseMySQLTarget(bad); err == nil {
			t.Errorf("ParseMySQLTarget(%q) accepted", bad)
		}
	}
	if !IsMySQLSet(ua+":1") || IsMySQLSet("0-1-5") {
		t.Error("IsMySQLSet is wrong")
	}
}
