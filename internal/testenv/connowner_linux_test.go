//go:build linux

package testenv

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestConnOwner: a connection dialled by this process and one dialled by a
// child (bash's /dev/tcp) are each found in the right process, and in no
// other.
func TestConnOwner(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	mine, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = mine.Close() }()
	accepted, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = accepted.Close() }()

	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	child := exec.Command("bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/"+port+"; sleep 30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(Wait(10 * time.Second)))
	theirs, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = theirs.Close() }()

	self, kid := os.Getpid(), child.Process.Pid
	for _, c := range []struct {
		name string
		conn net.Conn
		want int
	}{{"this process", accepted, self}, {"the child", theirs, kid}} {
		got, err := ConnOwner(c.conn, []int{kid, self})
		if err != nil || got != c.want {
			t.Errorf("%s's connection: owner %d, %v; want %d", c.name, got, err, c.want)
		}
	}
	if got, err := ConnOwner(theirs, []int{self}); err == nil || !strings.Contains(err.Error(), "is held by none of pids") {
		t.Errorf("the child's connection among this process only: %d, %v; want an error", got, err)
	}
}
