package apply

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"strings"
	"testing"

	gmysql "github.com/go-mysql-org/go-mysql/mysql"
)

func TestIsStmt(t *testing.T) {
	for q, want := range map[string]bool{
		"COMMIT": true, "commit": true, " COMMIT /* implicit */": true, "ROLLBACK": true,
		"ROLLBACK TO SAVEPOINT s": false, "ROLLBACK TO `s`": false, "COMMITTED": false, "BEGIN": false,
	} {
		if got := isStmt([]byte(q), "COMMIT") || isStmt([]byte(q), "ROLLBACK"); got != want {
			t.Errorf("%q ends a transaction: %v, want %v", q, got, want)
		}
	}
}

// TestWritePacketSplits: a payload of 16 MiB - 1 or more goes out as
// several packets, the last one shorter than 16 MiB - 1 (empty if need be),
// with consecutive sequence numbers.
func TestWritePacketSplits(t *testing.T) {
	for _, n := range []int{10, maxPacket - 2, maxPacket - 1, maxPacket, 2 * maxPacket} {
		var buf bytes.Buffer
		p := &pconn{w: bufio.NewWriter(&buf), seq: 3}
		body := bytes.Repeat([]byte{'x'}, n-1)
		if err := p.writePacket([]byte{0}, body); err != nil {
			t.Fatal(err)
		}
		_ = p.w.Flush()
		r := &pconn{r: bufio.NewReader(&buf)}
		got, err := r.readPacket()
		if err != nil || len(got) != n || got[0] != 0 {
			t.Errorf("payload of %d: read back %d bytes, %v", n, len(got), err)
		}
		wantPackets := n/maxPacket + 1
		if r.seq != byte(3+wantPackets) {
			t.Errorf("payload of %d: next sequence number %d, want %d", n, r.seq, 3+wantPackets)
		}
	}
}

func TestCheckNativePassword(t *testing.T) {
	scramble := []byte(strings.Repeat("abcd", 5))
	// The client side of mysql_native_password, as the replica computes it.
	h1 := sha1Sum([]byte("secret"))
	h2 := sha1Sum(h1)
	h3 := sha1Sum(append(append([]byte(nil), scramble...), h2...))
	for i := range h3 {
		h3[i] ^= h1[i]
	}
	if !checkNativePassword(scramble, "secret", h3) {
		t.Error("the right password was refused")
	}
	if checkNativePassword(scramble, "other", h3) || checkNativePassword(scramble, "secret", nil) {
		t.Error("a wrong password was accepted")
	}
}

func sha1Sum(b []byte) []byte {
	h := sha1.Sum(b)
	return h[:]
}

// TestCachingSHA2Scramble checks the source's caching_sha2_password check
// against go-mysql's client implementation of the scramble, written
// independently of ours.
func TestCachingSHA2Scramble(t *testing.T) {
	scramble := []byte("0123456789abcdefghij")
	got := gmysql.CalcCachingSha2Password(scramble, []byte("s3cret"))
	if !checkCachingSHA2(scramble, "s3cret", got) {
		t.Fatal("a scramble go-mysql computed for the right password is refused")
	}
	if checkCachingSHA2(scramble, "other", got) || checkCachingSHA2(scramble, "s3cret", nil) || checkCachingSHA2([]byte("0123456789abcdefghiX"), "s3cret", got) {
		t.Fatal("a wrong password, an empty answer or another scramble is accepted")
	}
}

// TestMySQLStatements: each MySQL version gets the spellings it has.
func TestMySQLStatements(t *testing.T) {
	for v, want := range map[string][2]string{
		"5.7.44":     {"CHANGE MASTER TO MASTER_HOST='h' FOR CHANNEL 'c'", "SHOW SLAVE STATUS FOR CHANNEL 'c'"},
		"8.0.22":     {"CHANGE MASTER TO MASTER_HOST='h' FOR CHANNEL 'c'", "SHOW REPLICA STATUS FOR CHANNEL 'c'"},
		"8.0.23":     {"CHANGE REPLICATION SOURCE TO SOURCE_HOST='h' FOR CHANNEL 'c'", "SHOW REPLICA STATUS FOR CHANNEL 'c'"},
		"8.4.3-log":  {"CHANGE REPLICATION SOURCE TO SOURCE_HOST='h' FOR CHANNEL 'c'", "SHOW REPLICA STATUS FOR CHANNEL 'c'"},
		"9.1.0-tdm1": {"CHANGE REPLICATION SOURCE TO SOURCE_HOST='h' FOR CHANNEL 'c'", "SHOW REPLICA STATUS FOR CHANNEL 'c'"},
	} {
		m := &mysqlTarget{ver: parseVersion(v)}
		tg := &target{mysql: m}
		if got := m.change("MASTER_HOST='h'", "c"); got != want[0] {
			t.Errorf("%s: %q, want %q", v, got, want[0])
		}
		if got := tg.stmts("c").status; got != want[1] {
			t.Errorf("%s: %q, want %q", v, got, want[1])
		}
	}
	if v := parseVersion("8.0.36-28"); v != [3]int{8, 0, 36} {
		t.Errorf("parseVersion = %v", v)
	}
	if got := (&target{}).stmts("tidemark_pitr").status; got != "SHOW SLAVE 'tidemark_pitr' STATUS" {
		t.Errorf("MariaDB: %q", got)
	}
}
