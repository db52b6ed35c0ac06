package tlsx

import (
	"fmt"
	"net"
	"strings"
)

// RequireLoopback refuses plaintext (--insecure) unless every address is a
// loopback one: without TLS anyone who reaches the port can drive the
// fleet, so plaintext is for one machine only. Host names other than
// "localhost" are refused rather than resolved (a name can change what it
// resolves to).
func RequireLoopback(what string, addrs ...string) error {
	var bad []string
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		}
		if host == "localhost" {
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			continue
		}
		bad = append(bad, a)
	}
	if len(bad) > 0 {
		return fmt.Errorf("--insecure (plaintext) is only allowed on loopback addresses, and %s %s is not loopback: use TLS (--tls-ca/--tls-cert/--tls-key, --credentials, or the cluster CA)",
			what, strings.Join(bad, ", "))
	}
	return nil
}
