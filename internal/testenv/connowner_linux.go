//go:build linux

package testenv

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// ConnOwner returns which of pids holds the dialing end of c, a TCP
// connection a test proxy accepted on IPv4 loopback. Every process dials
// from 127.0.0.1, so the address alone cannot tell a proxy which process
// is calling (per-link fault injection needs that): the dialing socket is
// found in /proc/net/tcp (its local address is c's remote one and the
// other way round), and its inode in /proc/PID/fd of each candidate. The
// caller must ask while the dialer still holds the connection; an error
// says the owner is none of pids, or that it could not be read.
func ConnOwner(c net.Conn, pids []int) (int, error) {
	local, ok1 := c.RemoteAddr().(*net.TCPAddr)
	remote, ok2 := c.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 || local.IP.To4() == nil || remote.IP.To4() == nil {
		return 0, fmt.Errorf("connection %s -> %s: ConnOwner reads IPv4 TCP only", c.RemoteAddr(), c.LocalAddr())
	}
	inode, err := tcpInode(procTCPAddr(local), procTCPAddr(remote))
	if err != nil {
		return 0, err
	}
	want := "socket:[" + inode + "]"
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid) + "/fd"
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue // exited
		}
		for _, e := range ents {
			if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == want {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("socket %s -> %s (inode %s) is held by none of pids %v", local, remote, inode, pids)
}

// procTCPAddr writes an IPv4 address as /proc/net/tcp does: the address
// as a little-endian 32-bit word, then the port, both in upper-case hex.
func procTCPAddr(a *net.TCPAddr) string {
	ip := a.IP.To4()
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port)
}

// tcpInode finds the inode of the socket from local to remote.
func tcpInode(local, remote string) (string, error) {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
		fs := strings.Fields(sc.Text())
		if len(fs) > 9 && fs[1] == local && fs[2] == remote {
			return fs[9], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("no socket %s -> %s in /proc/net/tcp", local, remote)
}
