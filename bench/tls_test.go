package bench

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/tidemark-backup/tidemark/internal/testenv"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
)

// tlsRecord is the most plaintext one TLS record carries.
const tlsRecord = 16 << 10

// BenchmarkTLSCost separates what mutual TLS costs the relay (issue 13)
// from the rest of its pipeline, on the connections the agent and the
// controller really use (tlsx.GRPC over loopback TCP, the cluster CA's
// certificates, the suite they negotiate):
//
//   - aead: seal and open of 16 KiB records with the negotiated AEAD and
//     nothing else: the crypto's CPU per GB at both ends together.
//   - stream/plain and stream/tls: the stream pushed through one connection
//     in 32 KiB writes (gRPC's write buffer) and read on the other end.
//     Their difference is everything TLS adds below gRPC: the crypto,
//     record framing, the coalescing copy and the extra reads.
//
// Reported: MB/s and CPU-seconds per GB of this process (both ends of the
// connection, as in BenchmarkArchive's relay runs).
func BenchmarkTLSCost(b *testing.B) {
	size := benchBytes(b)
	ca := testenv.NewTestCA(b)
	srvCfg := ca.Source(b, testenv.Controller("bench")).ServerConfig()
	cliCfg := ca.Source(b, testenv.Agent("bench")).ClientConfig()

	tlsW, tlsR, state := tlsPair(b, srvCfg, cliCfg)
	b.Logf("negotiated %s over %s", tls.CipherSuiteName(state.CipherSuite), state.CurveID)
	aead, err := suiteAEAD(state.CipherSuite)
	if err != nil {
		b.Fatal(err)
	}
	plainW, plainR := tcpPair(b)

	b.Run("aead", func(b *testing.B) {
		plain := make([]byte, tlsRecord)
		sealed := make([]byte, 0, tlsRecord+aead.Overhead())
		opened := make([]byte, 0, tlsRecord)
		nonce := make([]byte, aead.NonceSize())
		ad := []byte{23, 3, 3, 0x40, 0x11} // a record header
		b.SetBytes(size)
		cpu0, start := takeCPUSnapshot(0), time.Now()
		for i := 0; i < b.N; i++ {
			for n := int64(0); n < size; n += tlsRecord {
				nonce[len(nonce)-1]++
				sealed = aead.Seal(sealed[:0], nonce, plain, ad)
				if opened, err = aead.Open(opened[:0], nonce, sealed, ad); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.StopTimer()
		reportCPU(b, cpu0, start, int64(b.N)*size)
	})
	for _, tc := range []struct {
		name string
		w, r net.Conn
	}{{"stream/plain", plainW, plainR}, {"stream/tls", tlsW, tlsR}} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(size)
			cpu0, start := takeCPUSnapshot(0), time.Now()
			for i := 0; i < b.N; i++ {
				if err := push(tc.w, tc.r, size); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportCPU(b, cpu0, start, int64(b.N)*size)
		})
	}
}

// push writes size bytes into w in 32 KiB writes and reads them from r. A
// failing end closes its connection, so the other one fails too instead of
// waiting for bytes that will not come.
func push(w, r net.Conn, size int64) error {
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		for n := int64(0); n < size; {
			m := min(int64(len(buf)), size-n)
			if _, err := w.Write(buf[:m]); err != nil {
				_ = w.Close()
				errc <- fmt.Errorf("writing: %w", err)
				return
			}
			n += m
		}
		errc <- nil
	}()
	got, rerr := io.CopyBuffer(io.Discard, io.LimitReader(r, size), make([]byte, 32<<10))
	if rerr != nil {
		_ = r.Close()
		rerr = fmt.Errorf("reading: %w", rerr)
	}
	werr := <-errc
	if rerr == nil && got != size {
		rerr = fmt.Errorf("read %d of %d bytes", got, size)
	}
	return errors.Join(werr, rerr)
}

// tcpPair is a connected loopback TCP pair: writer (client) and reader.
func tcpPair(b *testing.B) (w, r net.Conn) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	type accepted struct {
		c   net.Conn
		err error
	}
	ac := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ac <- accepted{c, err}
	}()
	w, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	a := <-ac
	if a.err != nil {
		b.Fatal(a.err)
	}
	b.Cleanup(func() { _ = w.Close(); _ = a.c.Close() })
	return w, a.c
}

// tlsPair hands a loopback TCP pair to tlsx.GRPC's handshakes, as gRPC
// does: the agent's end writes, the controller's reads.
func tlsPair(b *testing.B, srvCfg, cliCfg *tls.Config) (w, r net.Conn, state tls.ConnectionState) {
	b.Helper()
	rawW, rawR := tcpPair(b)
	type shaken struct {
		c   net.Conn
		err error
	}
	sc := make(chan shaken, 1)
	go func() {
		c, _, err := tlsx.GRPC(srvCfg).ServerHandshake(rawR)
		sc <- shaken{c, err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(30*time.Second))
	defer cancel()
	w, info, err := tlsx.GRPC(cliCfg).ClientHandshake(ctx, tlsx.ControllerServerName, rawW)
	if err != nil {
		b.Fatalf("client handshake: %v", err)
	}
	s := <-sc
	if s.err != nil {
		b.Fatalf("server handshake: %v", s.err)
	}
	return w, s.c, info.(credentials.TLSInfo).State
}

// suiteAEAD is the record cipher of a TLS 1.3 suite, with a zero key.
func suiteAEAD(suite uint16) (cipher.AEAD, error) {
	var keyLen int
	switch suite {
	case tls.TLS_AES_128_GCM_SHA256:
		keyLen = 16
	case tls.TLS_AES_256_GCM_SHA384:
		keyLen = 32
	default:
		return nil, fmt.Errorf("negotiated %s: only the AES-GCM suites are measured here (this CPU may lack AES instructions)", tls.CipherSuiteName(suite))
	}
	block, err := aes.NewCipher(make([]byte, keyLen))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
