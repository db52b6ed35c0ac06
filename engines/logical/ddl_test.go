package logical

import (
	"strings"
	"testing"
)

func TestUnqualifyTrigger(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"CREATE DEFINER=`root`@`localhost` TRIGGER rt.big_bi BEFORE INSERT ON rt.big FOR EACH ROW SET NEW.n = 1",
			"CREATE DEFINER=`root`@`localhost` TRIGGER `big_bi` BEFORE INSERT ON `big` FOR EACH ROW SET NEW.n = 1"},
		{"CREATE DEFINER=`root`@`%` trigger `a b` after update on `my``t` for each row begin end",
			"CREATE DEFINER=`root`@`%` trigger `a b` after update on `my``t` for each row begin end"},
		{"CREATE TRIGGER `x`.`t1` AFTER DELETE ON `x` . `t` FOR EACH ROW DELETE FROM x.t2",
			"CREATE TRIGGER `t1` AFTER DELETE ON `t` FOR EACH ROW DELETE FROM x.t2"},
	} {
		name, table := "big_bi", "big"
		switch tc.in[len(tc.in)-3:] {
		case "end":
			name, table = "a b", "my`t"
		case ".t2":
			name, table = "t1", "t"
		}
		if got := unqualifyTrigger(tc.in, name, table); got != tc.want {
			t.Errorf("unqualifyTrigger(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestSplitSecondaryIndexes(t *testing.T) {
	in := "CREATE TABLE `t` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `a` int(11) DEFAULT NULL,\n  `b` text,\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `u` (`a`),\n  KEY `k_a` (`a`,`id`),\n  FULLTEXT KEY `ft` (`b`),\n  KEY `k_b` (`b`(10))\n) ENGINE=InnoDB AUTO_INCREMENT=5"
	got, adds := splitSecondaryIndexes(in, false)
	want := "CREATE TABLE `t` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `a` int(11) DEFAULT NULL,\n  `b` text,\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `u` (`a`),\n  FULLTEXT KEY `ft` (`b`)\n) ENGINE=InnoDB AUTO_INCREMENT=5"
	if got != want || len(adds) != 2 || adds[0] != "ADD KEY `k_a` (`a`,`id`)" || adds[1] != "ADD KEY `k_b` (`b`(10))" {
		t.Errorf("got %q %q", got, adds)
	}
	// The AUTO_INCREMENT column's only key must stay.
	in = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  KEY `id` (`id`)\n) ENGINE=Aria"
	if got, adds := splitSecondaryIndexes(in, false); got != in || adds != nil {
		t.Errorf("auto-increment key moved: %q %q", got, adds)
	}
}

func TestLikeMatch(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		ok   bool
	}{{"app", "app", true}, {"app%", "app_1", true}, {"app\\_1", "app_1", true}, {"app\\_1", "appx1", false}, {"a_p", "abp", true}, {"%", "", true}, {"app", "apps", false}} {
		if likeMatch(tc.p, tc.s) != tc.ok {
			t.Errorf("likeMatch(%q, %q) != %v", tc.p, tc.s, tc.ok)
		}
	}
}

// TestPieceOrder: pieces are dealt round by round, biggest table first, so
// neighbours in the queue come from different tables while any remain.
func TestPieceOrder(t *testing.T) {
	mk := func(name string, size int64, n int) *tableInfo {
		tb := &tableInfo{}
		tb.Name, tb.DataLength = name, size
		for i := range n {
			tb.pieces = append(tb.pieces, piece{table: tb, n: i})
		}
		return tb
	}
	tables := []*tableInfo{mk("small", 10, 1), mk("big", 300, 3), mk("mid", 200, 2), mk("empty", 0, 0)}
	var got []string
	for _, p := range pieceOrder(tables) {
		got = append(got, p.table.Name+":"+string(rune('0'+p.n)))
	}
	want := "big:0 mid:0 small:0 big:1 mid:1 big:2"
	if g := strings.Join(got, " "); g != want {
		t.Errorf("order %s, want %s", g, want)
	}
}

func TestNamesUnquoted(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want bool
	}{
		{"DELETE FROM rt.nopk WHERE a < 0", true},
		{"RETURN (SELECT COUNT(*) FROM rt . big)", true},
		{"rt.t", true},
		{"SELECT * FROM `rt`.`t`", false},     // quoted: renamed
		{"SELECT * FROM art.t, rt2.t", false}, // other names that end or start alike
		{"SELECT x.rt.c FROM t", false},       // a column of table rt in x: not a qualifier of rt
		{"SELECT 1", false},
	} {
		if got := namesUnquoted(tc.sql, "rt"); got != tc.want {
			t.Errorf("namesUnquoted(%q, rt) = %v, want %v", tc.sql, got, tc.want)
		}
	}
}
