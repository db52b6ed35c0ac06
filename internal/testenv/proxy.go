package testenv

import "net"

// ProxyAccept is the accept loop of the tests' TCP proxies (fault
// injection that needs no iptables): it accepts on ln until ln is closed,
// dials target for each client and hands the pair to handle, which starts
// the forwarding. A failed dial drops that client. handle returns false
// when the proxy is closing; the pair is then closed and the loop ends.
func ProxyAccept(ln net.Listener, target string, handle func(client, upstream net.Conn) bool) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", target)
		if err != nil {
			_ = c.Close()
			continue
		}
		if !handle(c, u) {
			_ = c.Close()
			_ = u.Close()
			return
		}
	}
}
