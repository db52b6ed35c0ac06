// Package dumpgen generates deterministic, dump-like text (tab-separated
// rows of ids, names, e-mails, amounts, timestamps and prose) at memory
// speed, for archive tests and benchmarks that need realistic compressibility
// without storing data.
package dumpgen

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
	"strconv"
)

// templateSize is larger than any chunk size, so a chunk never contains a
// repeat of the template that a compressor could exploit.
const templateSize = 32 << 20

// stampEvery makes every 4 KiB unique per pass, so no two chunks of one
// stream are identical and deduplication does not flatter the figures.
const stampEvery = 4096

var words = []string{"alpha", "bravo", "order", "invoice", "shipped", "pending", "customer", "refund",
	"warehouse", "Lisbon", "Zürich", "Kraków", "delivery", "priority", "standard", "express", "note",
	"the", "and", "for", "with", "payment", "received", "cancelled", "returned", "gift", "wrap"}

// Template returns the 32 MiB base text for a seed.
func Template(seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, 0, templateSize+512)
	id := int64(1)
	for len(b) < templateSize {
		b = strconv.AppendInt(b, id, 10)
		b = append(b, '\t')
		b = append(b, words[r.IntN(len(words))]...)
		b = append(b, ' ')
		b = append(b, words[r.IntN(len(words))]...)
		b = append(b, '\t')
		b = append(b, words[r.IntN(len(words))]...)
		b = strconv.AppendInt(b, int64(r.IntN(100000)), 10)
		b = append(b, "@example.com\t"...)
		b = strconv.AppendInt(b, int64(r.IntN(1000000)), 10)
		b = append(b, '.')
		b = strconv.AppendInt(b, int64(10+r.IntN(90)), 10)
		b = append(b, "\t2026-"...)
		b = strconv.AppendInt(b, int64(10+r.IntN(3)), 10)
		b = append(b, '-')
		b = strconv.AppendInt(b, int64(10+r.IntN(18)), 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(10+r.IntN(14)), 10)
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(10+r.IntN(50)), 10)
		b = append(b, ":00."...)
		b = strconv.AppendInt(b, int64(100000+r.IntN(900000)), 10)
		b = append(b, '\t')
		if r.IntN(5) == 0 {
			b = append(b, `\N`...)
		} else {
			for range 3 + r.IntN(12) {
				b = append(b, words[r.IntN(len(words))]...)
				b = append(b, ' ')
			}
		}
		b = append(b, '\n')
		id++
	}
	return b[:templateSize]
}

// Reader yields n bytes of dump-like text. Two readers with the same seed and
// pass yield the same bytes; a different pass changes every 4 KiB block.
type Reader struct {
	tmpl []byte
	off  int64
	n    int64
	pass uint64
}

// NewReader returns a reader of n bytes over a template from Template.
// pass distinguishes otherwise identical streams.
func NewReader(tmpl []byte, n int64, pass uint64) *Reader {
	return &Reader{tmpl: tmpl, n: n, pass: pass}
}

func (r *Reader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	if int64(len(p)) > r.n-r.off {
		p = p[:r.n-r.off]
	}
	total := 0
	for len(p) > 0 {
		pos := r.off % int64(len(r.tmpl))
		k := copy(p, r.tmpl[pos:])
		// Stamp the 8 bytes at each 4 KiB boundary inside what was copied
		// with (pass, offset): unique per block, same per (seed, pass).
		end := r.off + int64(k)
		for st := r.off / stampEvery * stampEvery; st < end; st += stampEvery {
			var stamp [8]byte
			binary.LittleEndian.PutUint64(stamp[:], uint64(st)^(r.pass<<48))
			// The stamp may straddle two reads: write the part inside this one.
			for i := int64(0); i < 8; i++ {
				if o := st + i; o >= r.off && o < end {
					p[o-r.off] = stamp[i]
				}
			}
		}
		p = p[k:]
		r.off += int64(k)
		total += k
	}
	return total, nil
}
