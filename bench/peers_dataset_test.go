package bench

import (
	"bufio"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"golang.org/x/sync/errgroup"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// The "realistic" dataset: an online shop's customers, orders, click events
// and uploaded documents. Unlike sysbench's random digits it mixes names
// and addresses in several scripts, prose, JSON documents, DECIMAL, DOUBLE
// and FLOAT numbers, timestamps with fractions, NULLs, short binary values
// and BLOBs, about a third of whose bytes are random (photos, archives) and
// so do not compress. At TIDEMARK_BENCH_ROWS=1000000 it holds about 0.9 GB
// (InnoDB data and indexes). Rows are generated in Go from fixed seeds, so
// every run loads the same bytes, and sent with LOAD DATA LOCAL INFILE.

const realisticDB = "realistic"

var realisticSchema = []string{
	`CREATE TABLE customers (
	id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
	first_name VARCHAR(50) NOT NULL,
	last_name VARCHAR(50) NOT NULL,
	email VARCHAR(120) NOT NULL,
	phone VARCHAR(32) NULL,
	street VARCHAR(120) NOT NULL,
	city VARCHAR(60) NOT NULL,
	postcode VARCHAR(12) NOT NULL,
	country CHAR(2) NOT NULL,
	birth_date DATE NULL,
	created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
	balance DECIMAL(14,2) NOT NULL,
	risk_score DOUBLE NOT NULL,
	bio TEXT NULL,
	KEY idx_email (email),
	KEY idx_name (last_name, first_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
	`CREATE TABLE orders (
	id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
	customer_id BIGINT UNSIGNED NOT NULL,
	status ENUM('new','paid','shipped','delivered','cancelled','refunded') NOT NULL,
	currency CHAR(3) NOT NULL,
	subtotal DECIMAL(12,2) NOT NULL,
	tax DECIMAL(12,2) NOT NULL,
	weight_kg FLOAT NULL,
	placed_at DATETIME(3) NOT NULL,
	shipped_at DATETIME NULL,
	shipping_address VARCHAR(255) NOT NULL,
	items JSON NOT NULL,
	note VARCHAR(500) NULL,
	KEY idx_customer (customer_id),
	KEY idx_placed (placed_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
	`CREATE TABLE events (
	id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
	occurred_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
	customer_id BIGINT UNSIGNED NULL,
	kind VARCHAR(32) NOT NULL,
	ip VARBINARY(16) NOT NULL,
	latitude DOUBLE NULL,
	longitude DOUBLE NULL,
	user_agent VARCHAR(255) NOT NULL,
	payload JSON NOT NULL,
	KEY idx_time (occurred_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
	`CREATE TABLE documents (
	id INT UNSIGNED NOT NULL PRIMARY KEY,
	customer_id BIGINT UNSIGNED NOT NULL,
	filename VARCHAR(200) NOT NULL,
	mime VARCHAR(64) NOT NULL,
	sha256 BINARY(32) NOT NULL,
	uploaded_at DATETIME NOT NULL,
	body LONGBLOB NOT NULL,
	KEY idx_customer (customer_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
}

// genTable generates one table: rows at scale 1 (TIDEMARK_BENCH_ROWS =
// 1,000,000), loaded in LOAD DATA statements of chunk rows each.
type genTable struct {
	name  string
	cols  string
	rows  int64
	chunk int64
	row   func(g *gen, id int64, w *rowWriter)
}

// customersAtScale1 is the range of the customer ids other tables refer to.
const customersAtScale1 = 400_000

var realisticTables = []genTable{
	{name: "customers", rows: customersAtScale1, chunk: 50_000, row: customerRow,
		cols: "id, first_name, last_name, email, phone, street, city, postcode, country, birth_date, created_at, balance, risk_score, bio"},
	{name: "orders", rows: 600_000, chunk: 100_000, row: orderRow,
		cols: "id, customer_id, status, currency, subtotal, tax, weight_kg, placed_at, shipped_at, shipping_address, items, note"},
	{name: "events", rows: 500_000, chunk: 100_000, row: eventRow,
		cols: "id, occurred_at, customer_id, kind, ip, latitude, longitude, user_agent, payload"},
	{name: "documents", rows: 1_500, chunk: 150, row: documentRow,
		cols: "id, customer_id, filename, mime, sha256, uploaded_at, body"},
}

var genSeq atomic.Int64

// fillRealistic creates and loads the realistic database on src, scaled by
// scale (1.0 at the default size), with two loaders and without binlogging
// the load (nothing replicates from the source).
func fillRealistic(b *testing.B, src *testenv.MariaDB, scale float64) {
	b.Helper()
	stmts := []string{"CREATE DATABASE " + realisticDB, "USE " + realisticDB}
	src.Exec(b, append(stmts, realisticSchema...)...)
	db, err := sql.Open("mysql", src.RootDSN+realisticDB)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	type job struct {
		t        *genTable
		from, to int64 // ids, inclusive
	}
	var jobs []job
	for i := range realisticTables {
		t := &realisticTables[i]
		n := max(int64(float64(t.rows)*scale), 10)
		for from := int64(1); from <= n; from += t.chunk {
			jobs = append(jobs, job{t, from, min(from+t.chunk-1, n)})
		}
	}
	ctx := context.Background()
	next := atomic.Int64{}
	g, ctx := errgroup.WithContext(ctx)
	for w := 0; w < 2; w++ {
		g.Go(func() error {
			conn, err := db.Conn(ctx)
			if err != nil {
				return err
			}
			defer func() { _ = conn.Close() }()
			if _, err := conn.ExecContext(ctx, "SET SESSION sql_log_bin = 0, SESSION time_zone = '+00:00'"); err != nil {
				return err
			}
			for {
				i := next.Add(1) - 1
				if i >= int64(len(jobs)) {
					return nil
				}
				j := jobs[i]
				if err := loadChunk(ctx, conn, j.t, j.from, j.to); err != nil {
					return fmt.Errorf("realistic.%s rows %d-%d: %w", j.t.name, j.from, j.to, err)
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
}

// loadChunk generates rows from..to of t into a pipe that one LOAD DATA
// LOCAL INFILE reads.
func loadChunk(ctx context.Context, conn *sql.Conn, t *genTable, from, to int64) error {
	pr, pw := io.Pipe()
	name := "bench-gen-" + strconv.FormatInt(genSeq.Add(1), 10)
	mysql.RegisterReaderHandler(name, func() io.Reader { return pr })
	defer mysql.DeregisterReaderHandler(name)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// One stream of random numbers per table and chunk start: the same
		// rows whichever loader takes the chunk.
		h := fnv.New64a()
		_, _ = h.Write([]byte(t.name))
		g := &gen{r: rand.New(rand.NewPCG(h.Sum64(), uint64(from)))}
		bw := bufio.NewWriterSize(pw, 1<<20)
		w := &rowWriter{}
		var err error
		for id := from; id <= to && err == nil; id++ {
			w.buf = w.buf[:0]
			w.first = true
			t.row(g, id, w)
			w.buf = append(w.buf, '\n')
			_, err = bw.Write(w.buf)
		}
		if err == nil {
			err = bw.Flush()
		}
		_ = pw.CloseWithError(err)
	}()
	res, err := conn.ExecContext(ctx, "LOAD DATA LOCAL INFILE 'Reader::"+name+"' INTO TABLE "+t.name+" CHARACTER SET binary ("+t.cols+")")
	_ = pr.CloseWithError(errors.New("load finished")) // unblocks the generator if the load failed
	<-done
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != to-from+1 {
		return fmt.Errorf("loaded %d rows of %d", n, to-from+1)
	}
	return nil
}

// rowWriter builds one line in LOAD DATA's default format: tab-separated,
// backslash escapes, \N for NULL.
type rowWriter struct {
	buf   []byte
	first bool
}

func (w *rowWriter) sep() {
	if !w.first {
		w.buf = append(w.buf, '\t')
	}
	w.first = false
}

func (w *rowWriter) str(s string) {
	w.sep()
	for i := 0; i < len(s); i++ {
		w.esc(s[i])
	}
}

func (w *rowWriter) bytes(p []byte) {
	w.sep()
	for _, c := range p {
		w.esc(c)
	}
}

func (w *rowWriter) esc(c byte) {
	switch c {
	case '\\':
		w.buf = append(w.buf, '\\', '\\')
	case '\t':
		w.buf = append(w.buf, '\\', 't')
	case '\n':
		w.buf = append(w.buf, '\\', 'n')
	case 0:
		w.buf = append(w.buf, '\\', '0')
	default:
		w.buf = append(w.buf, c)
	}
}

func (w *rowWriter) null() { w.sep(); w.buf = append(w.buf, '\\', 'N') }

func (w *rowWriter) int(n int64) { w.sep(); w.buf = strconv.AppendInt(w.buf, n, 10) }

// cents writes a DECIMAL(.., 2) from an amount in cents.
func (w *rowWriter) cents(c int64) {
	w.sep()
	if c < 0 {
		w.buf = append(w.buf, '-')
		c = -c
	}
	w.buf = strconv.AppendInt(w.buf, c/100, 10)
	w.buf = append(w.buf, '.', byte('0'+c%100/10), byte('0'+c%10))
}

func (w *rowWriter) float(f float64) { w.sep(); w.buf = strconv.AppendFloat(w.buf, f, 'g', -1, 64) }

func (w *rowWriter) time(t time.Time, layout string) {
	w.sep()
	w.buf = t.AppendFormat(w.buf, layout)
}

const (
	layoutMicro = "2006-01-02 15:04:05.000000"
	layoutMilli = "2006-01-02 15:04:05.000"
	layoutSec   = "2006-01-02 15:04:05"
)

// gen draws the values of one chunk.
type gen struct {
	r   *rand.Rand
	tmp []byte
}

func (g *gen) pick(list []string) string { return list[g.r.IntN(len(list))] }
func (g *gen) chance(p float64) bool     { return g.r.Float64() < p }
func (g *gen) between(lo, hi int) int    { return lo + g.r.IntN(hi-lo+1) }

var epoch2018 = time.Date(2018, 1, 1, 0, 0, 0, 0, time.UTC).Unix()

// when is a moment between 2018 and 2025 with microseconds.
func (g *gen) when() time.Time {
	return time.Unix(epoch2018+g.r.Int64N(8*365*86400), g.r.Int64N(1_000_000)*1000).UTC()
}

// sentence is 5 to 16 words of English with an occasional word from
// another script, capitalised and punctuated.
func (g *gen) sentence(dst []byte) []byte {
	n := g.between(5, 16)
	for i := 0; i < n; i++ {
		wd := g.pick(words)
		if g.chance(0.03) {
			wd = g.pick(foreignWords)
		}
		if i == 0 {
			dst = append(dst, strings.ToUpper(wd[:1])...)
			dst = append(dst, wd[1:]...)
		} else {
			dst = append(dst, ' ')
			dst = append(dst, wd...)
		}
		if i > 2 && i < n-2 && g.chance(0.08) {
			dst = append(dst, ',')
		}
	}
	switch g.r.IntN(10) {
	case 0:
		return append(dst, '?')
	case 1:
		return append(dst, '!')
	}
	return append(dst, '.')
}

func (g *gen) prose(sentences int) string {
	g.tmp = g.tmp[:0]
	for i := 0; i < sentences; i++ {
		if i > 0 {
			g.tmp = append(g.tmp, ' ')
		}
		g.tmp = g.sentence(g.tmp)
	}
	return string(g.tmp)
}

// pattern fills 9 with a digit and A with a capital letter.
func (g *gen) pattern(p string) string {
	b := []byte(p)
	for i, c := range b {
		switch c {
		case '9':
			b[i] = byte('0' + g.r.IntN(10))
		case 'A':
			b[i] = byte('A' + g.r.IntN(26))
		}
	}
	return string(b)
}

func (g *gen) randomBytes(n int) []byte {
	p := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(p[i:], g.r.Uint64())
	}
	return p[:n]
}

// logSize is between lo and hi bytes, log-uniformly.
func (g *gen) logSize(lo, hi int) int {
	return int(float64(lo) * math.Pow(float64(hi)/float64(lo), g.r.Float64()))
}

func asciiLower(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z':
			b = append(b, c)
		case 'A' <= c && c <= 'Z':
			b = append(b, c+'a'-'A')
		}
	}
	if len(b) == 0 {
		return "user"
	}
	return string(b)
}

func customerRow(g *gen, id int64, w *rowWriter) {
	first, last := g.pick(firstNames), g.pick(lastNames)
	c := &cities[g.r.IntN(len(cities))]
	w.int(id)
	w.str(first)
	w.str(last)
	w.str(fmt.Sprintf("%s.%s%d@%s", asciiLower(first), asciiLower(last), g.r.IntN(1000), g.pick(mailDomains)))
	if g.chance(0.15) {
		w.null()
	} else {
		w.str(g.pattern(c.phone))
	}
	w.str(fmt.Sprintf("%d %s %s", g.between(1, 2500), g.pick(streetNames), g.pick(streetKinds)))
	w.str(c.name)
	w.str(g.pattern(c.postcode))
	w.str(c.country)
	if g.chance(0.1) {
		w.null()
	} else {
		w.time(time.Date(g.between(1940, 2006), time.Month(g.between(1, 12)), g.between(1, 28), 0, 0, 0, 0, time.UTC), "2006-01-02")
	}
	w.time(g.when(), layoutMicro)
	w.cents(g.r.Int64N(5_000_000) - 200_000)
	w.float(g.r.Float64()) // a model's score: every bit matters
	if g.chance(0.3) {
		w.null()
	} else {
		w.str(g.prose(g.between(1, 4)))
	}
}

var orderStatuses = []string{"new", "paid", "shipped", "delivered", "delivered", "delivered", "cancelled", "refunded"}

func orderRow(g *gen, id int64, w *rowWriter) {
	w.int(id)
	w.int(1 + g.r.Int64N(customersAtScale1))
	status := g.pick(orderStatuses)
	w.str(status)
	w.str(g.pick(currencies))
	var sub int64
	items := make([]byte, 0, 512)
	items = append(items, '[')
	for i, n := 0, g.between(1, 5); i < n; i++ {
		if i > 0 {
			items = append(items, ", "...)
		}
		qty, price := int64(g.between(1, 4)), 99+g.r.Int64N(25_000)
		sub += qty * price
		items = fmt.Appendf(items, `{"sku": "SKU-%06d", "name": "%s %s %s", "qty": %d, "unit_price": %d.%02d, "tags": ["%s", "%s"]}`,
			g.r.IntN(1_000_000), g.pick(adjectives), g.pick(materials), g.pick(products), qty, price/100, price%100, g.pick(tags), g.pick(tags))
	}
	items = append(items, ']')
	w.cents(sub)
	w.cents(sub * int64(g.between(0, 25)) / 100)
	if g.chance(0.05) {
		w.null()
	} else {
		w.sep()
		w.buf = strconv.AppendFloat(w.buf, float64(g.r.IntN(50_000))/1000, 'f', -1, 32)
	}
	placed := g.when()
	w.time(placed, layoutMilli)
	if status == "shipped" || status == "delivered" || status == "refunded" {
		w.time(placed.Add(time.Duration(g.between(3600, 10*86400))*time.Second).Truncate(time.Second), layoutSec)
	} else {
		w.null()
	}
	c := &cities[g.r.IntN(len(cities))]
	w.str(fmt.Sprintf("%s %s, %d %s %s, %s %s, %s", g.pick(firstNames), g.pick(lastNames), g.between(1, 2500),
		g.pick(streetNames), g.pick(streetKinds), g.pattern(c.postcode), c.name, c.country))
	w.bytes(items)
	if g.chance(0.8) {
		w.null()
	} else {
		w.str(g.prose(1))
	}
}

var eventKinds = []string{"page_view", "page_view", "page_view", "search", "add_to_cart", "checkout", "login"}

func eventRow(g *gen, id int64, w *rowWriter) {
	w.int(id)
	w.time(g.when(), layoutMicro)
	if g.chance(0.2) {
		w.null()
	} else {
		w.int(1 + g.r.Int64N(customersAtScale1))
	}
	kind := g.pick(eventKinds)
	w.str(kind)
	if g.chance(0.7) {
		w.bytes(g.randomBytes(4))
	} else {
		w.bytes(g.randomBytes(16))
	}
	if g.chance(0.25) {
		w.null()
		w.null()
	} else {
		c := &cities[g.r.IntN(len(cities))]
		w.float(math.Round((c.lat+g.r.NormFloat64()*0.05)*1e6) / 1e6)
		w.float(math.Round((c.lon+g.r.NormFloat64()*0.05)*1e6) / 1e6)
	}
	w.str(fmt.Sprintf(g.pick(userAgents), g.between(90, 130), g.between(0, 9), g.between(1000, 6999)))
	session := g.r.Uint64()
	var p []byte
	switch kind {
	case "page_view":
		p = fmt.Appendf(nil, `{"session": "%016x", "path": "/%s/%d", "referrer": %s, "duration_ms": %d, "device": {"os": "%s", "version": "%d.%d", "mobile": %t}, "utm": {"source": "%s", "campaign": "%s-%d"}}`,
			session, g.pick(products), g.r.IntN(100_000), g.pick(referrers), g.r.IntN(120_000), g.pick(oses), g.between(8, 17), g.between(0, 6), g.chance(0.6),
			g.pick(utmSources), g.pick(tags), g.between(2018, 2025))
	case "search":
		p = fmt.Appendf(nil, `{"session": "%016x", "query": "%s %s", "results": %d, "page": %d, "filters": {"color": "%s", "max_price": %d, "in_stock": %t}}`,
			session, g.pick(adjectives), g.pick(products), g.r.IntN(500), g.between(1, 5), g.pick(colors), g.between(10, 500), g.chance(0.5))
	case "add_to_cart":
		p = fmt.Appendf(nil, `{"session": "%016x", "sku": "SKU-%06d", "qty": %d, "price": %d.%02d, "currency": "%s", "recommended": %t}`,
			session, g.r.IntN(1_000_000), g.between(1, 3), g.between(1, 250), g.r.IntN(100), g.pick(currencies), g.chance(0.2))
	case "checkout":
		p = fmt.Appendf(nil, `{"session": "%016x", "order_id": %d, "total": %d.%02d, "payment": "%s", "coupon": %s, "steps": [%d, %d, %d]}`,
			session, 1+g.r.IntN(1_000_000), g.between(5, 2000), g.r.IntN(100), g.pick(payments), g.pick(coupons), g.r.IntN(9000), g.r.IntN(9000), g.r.IntN(9000))
	default:
		p = fmt.Appendf(nil, `{"session": "%016x", "method": "%s", "mfa": %t, "ok": %t, "attempt": %d}`,
			session, g.pick(loginMethods), g.chance(0.4), g.chance(0.93), g.between(1, 3))
	}
	w.bytes(p)
}

func documentRow(g *gen, id int64, w *rowWriter) {
	size := g.logSize(4<<10, 256<<10)
	var body []byte
	var mime, ext string
	switch k := g.r.IntN(20); {
	case k < 7: // a photo: random bytes behind a JPEG header
		mime, ext = "image/jpeg", "jpg"
		body = append([]byte("\xff\xd8\xff\xe0\x00\x10JFIF\x00"), g.randomBytes(size)...)
	case k < 9:
		mime, ext = "application/zip", "zip"
		body = append([]byte("PK\x03\x04"), g.randomBytes(size)...)
	case k < 15: // an export: CSV rows
		mime, ext = "text/csv", "csv"
		body = append(body, "date,sku,description,qty,unit_price,customer\n"...)
		for len(body) < size {
			body = g.when().AppendFormat(body, "2006-01-02")
			body = fmt.Appendf(body, ",SKU-%06d,%s %s,%d,%d.%02d,%s %s\n", g.r.IntN(1_000_000), g.pick(colors), g.pick(products),
				g.between(1, 20), g.between(1, 500), g.r.IntN(100), g.pick(firstNames), g.pick(lastNames))
		}
	case k < 18: // a letter: text in a PDF-like wrapper
		mime, ext = "application/pdf", "pdf"
		body = append(body, "%PDF-1.4\n1 0 obj << /Type /Page >> stream\n"...)
		for len(body) < size {
			body = append(body, "BT /F1 11 Tf ("...)
			body = g.sentence(body)
			body = append(body, ") Tj ET\n"...)
		}
		body = append(body, "endstream endobj\n%%EOF\n"...)
	default:
		mime, ext = "text/html", "html"
		body = append(body, "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Invoice</title></head><body>\n"...)
		for len(body) < size {
			body = append(body, "<p class=\"line\">"...)
			body = g.sentence(body)
			body = append(body, "</p>\n"...)
		}
		body = append(body, "</body></html>\n"...)
	}
	sum := sha256.Sum256(body)
	w.int(id)
	w.int(1 + g.r.Int64N(customersAtScale1))
	w.str(fmt.Sprintf("%s-%s-%d.%s", g.pick(tags), g.pick(products), g.r.IntN(100_000), ext))
	w.str(mime)
	w.bytes(sum[:])
	w.time(g.when().Truncate(time.Second), layoutSec)
	w.bytes(body)
}

type city struct {
	name, country, postcode, phone string
	lat, lon                       float64
}

var cities = []city{
	{"London", "GB", "AA9 9AA", "+44 20 9999 9999", 51.507, -0.128},
	{"Manchester", "GB", "M99 9AA", "+44 161 999 9999", 53.481, -2.242},
	{"Paris", "FR", "750099", "+33 1 99 99 99 99", 48.857, 2.352},
	{"Lyon", "FR", "690099", "+33 4 99 99 99 99", 45.764, 4.836},
	{"Berlin", "DE", "99999", "+49 30 99999999", 52.520, 13.405},
	{"München", "DE", "80999", "+49 89 9999999", 48.137, 11.575},
	{"Zürich", "CH", "8099", "+41 44 999 99 99", 47.377, 8.541},
	{"Kraków", "PL", "30-999", "+48 12 999 99 99", 50.065, 19.945},
	{"São Paulo", "BR", "09999-999", "+55 11 99999-9999", -23.551, -46.633},
	{"México", "MX", "09999", "+52 55 9999 9999", 19.433, -99.133},
	{"New York", "US", "10099", "+1 212 999 9999", 40.713, -74.006},
	{"San Francisco", "US", "94199", "+1 415 999 9999", 37.775, -122.419},
	{"Chicago", "US", "60699", "+1 312 999 9999", 41.878, -87.630},
	{"Toronto", "CA", "A9A 9A9", "+1 416 999 9999", 43.653, -79.383},
	{"東京", "JP", "999-9999", "+81 3-9999-9999", 35.676, 139.650},
	{"大阪", "JP", "599-9999", "+81 6-9999-9999", 34.694, 135.502},
	{"Sydney", "AU", "2999", "+61 2 9999 9999", -33.869, 151.209},
	{"Göteborg", "SE", "499 99", "+46 31 999 99 99", 57.709, 11.975},
	{"København", "DK", "1999", "+45 99 99 99 99", 55.676, 12.568},
	{"Madrid", "ES", "28099", "+34 91 999 99 99", 40.417, -3.704},
	{"İstanbul", "TR", "34999", "+90 212 999 99 99", 41.008, 28.978},
	{"Москва", "RU", "199999", "+7 495 999-99-99", 55.756, 37.617},
	{"Bengaluru", "IN", "560099", "+91 80 9999 9999", 12.972, 77.595},
	{"Amsterdam", "NL", "1099 AA", "+31 20 999 9999", 52.368, 4.904},
}

var (
	firstNames = strings.Fields(`James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara
		Richard Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa Anthony Betty Mark Margaret
		Olivia Noah Emma Liam Amelia Oliver Sophia Elijah Ava Lucas Mia Mateo Isabella Ethan Harper Léa Chloé Zoë
		José María Álvaro Sofía Łukasz Zofia Søren Åsa Björn Jürgen Dörte François Hélène Ingrid Nikolai Oksana Ольга
		Иван Yuki Haruto 陽翔 結菜 Hiroshi Mei Wei 伟 Priya Arjun Aarav Ananya Fatima Omar Ayşe Mehmet Chiara Giulia
		Lorenzo Matteo Nguyễn Thảo Kwame Amara Chidi Ngozi Sean Siobhán Niamh Pádraig`)
	lastNames = strings.Fields(`Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez
		Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark
		Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker
		Müller Schmidt Schneider Fischer Weiß Wagner Dubois Lefèvre Moreau Rossi Russo Bianchi Kowalski Wiśniewski
		Nowak Jørgensen Søndergaard Andersson Lindqvist Öberg Yılmaz Kaya Иванов Смирнова 佐藤 鈴木 高橋 Tanaka Watanabe
		王 李 Zhang Chen Patel Sharma Singh Kumar Okafor Mensah O'Brien O'Connor MacLeod Fernández Núñez Peña`)
	mailDomains = strings.Fields(`gmail.com outlook.com yahoo.com proton.me icloud.com gmx.de orange.fr web.de
		example.org company.co.uk mail.ru qq.com`)
	streetNames = strings.Fields(`High Station Main Church Park Victoria Green Manor Mill Kings Queens Oak Elm Maple
		Cedar Pine Lake Hill River Bridge Market Castle Chapel School Garden Meadow Orchard Spring Sunset Harbor
		Rue-de-la-Paix Hauptstraße Bahnhofstraße Gran-Vía Nørrebrogade Marszałkowska`)
	streetKinds = strings.Fields(`Street Road Avenue Lane Drive Close Way Place Court Boulevard Terrace Crescent`)
	currencies  = strings.Fields(`EUR EUR EUR USD USD GBP CHF SEK PLN JPY BRL`)
	adjectives  = strings.Fields(`blue red green black white grey navy vintage classic slim oversized waterproof
		lightweight organic recycled premium compact wireless ergonomic handmade`)
	materials = strings.Fields(`cotton wool linen leather denim silk bamboo steel aluminium ceramic oak walnut glass`)
	products  = strings.Fields(`shirt jacket sneakers backpack lamp chair desk mug teapot headphones keyboard
		watch scarf blanket pillow kettle bicycle helmet tent notebook`)
	colors = strings.Fields(`black white red blue green yellow orange purple pink brown beige grey`)
	tags   = strings.Fields(`sale new bestseller summer winter gift eco limited clearance bundle outlet exclusive`)
	oses   = strings.Fields(`iOS Android Windows macOS Linux ChromeOS`)
	// userAgents take the browser's major version, minor version and build.
	userAgents = []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/%d.%d.%d.0 Safari/537.36",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.%d Safari/605.1.%d.%d",
		"Mozilla/5.0 (X11; Linux x86_64; rv:%d.%d) Gecko/20100101 Firefox/%d.0",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_%d like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E%d Safari/%d",
		"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/%d.%d.%d.0 Mobile Safari/537.36",
	}
	referrers    = []string{`null`, `"https://www.google.com/"`, `"https://duckduckgo.com/"`, `"https://t.co/xyz"`, `"https://www.bing.com/search"`, `"android-app://com.google.android.gm/"`}
	utmSources   = strings.Fields(`google newsletter facebook instagram tiktok partner direct`)
	payments     = strings.Fields(`card card card paypal klarna ideal sepa apple_pay`)
	coupons      = []string{`null`, `null`, `null`, `"WELCOME10"`, `"SUMMER24"`, `"FREESHIP"`}
	loginMethods = strings.Fields(`password password passkey google apple magic_link`)
	foreignWords = strings.Fields(`café naïve façade déjà-vu Zürich Straße smörgåsbord jalapeño piñata crème brûlée
		日本語 東京 ありがとう 谢谢 북한산 Привет спасибо γειά مرحبا שלום नमस्ते 🙂 🚚 ✅ €`)
	words = strings.Fields(`the of and to in is you that it he was for on are as with his they at be this have
		from or one had by word but not what all were we when your can said there use an each which she do how their
		if will up other about out many then them these so some her would make like him into time has look two more
		write go see number no way could people my than first water been call who oil its now find long down day did
		get come made may part order delivery package arrived quickly quality price customer service return refund
		size fits perfectly colour material would recommend again friend gift box damaged replacement support team
		thank you great excellent poor average shipping tracking address invoice payment discount account password
		please contact us about your recent purchase we are happy to help with anything else today tomorrow week
		month year morning evening weekend holiday store online warehouse courier signature door neighbour`)
)
