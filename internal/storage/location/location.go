package location

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/tidemark-backup/tidemark/internal/metrics"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/storage/relay"
	"github.com/tidemark-backup/tidemark/internal/storage/retry"
	"github.com/tidemark-backup/tidemark/internal/storage/s3"
)

// Options carries what a URI must not: credentials, timeouts, and whether a
// missing repository directory may be created.
type Options struct {
	// Create lets a file:// store create its missing directory (repository
	// init); otherwise a missing directory is an error.
	Create bool
	// S3 configures s3:// stores; its nil Credentials mean "from the
	// environment".
	S3 s3.Config
	// Relay configures relay:// stores (gRPC dial options).
	Relay relay.Options
	// Retry tunes the retry wrapper every opened store gets.
	Retry retry.Options
	// Metrics, when set, records the store's operations and retries
	// (tidemark_storage_*) under the URI's scheme as backend.
	Metrics *metrics.Registry
}

// Location is a parsed storage URI. Exactly the field of its scheme is set.
type Location struct {
	Scheme string
	File   string       // "file": the absolute, cleaned directory
	S3     *s3.Location // "s3"
	Relay  []string     // "relay": controller gRPC addresses, HOST:PORT
}

// String returns the canonical URI.
func (l Location) String() string {
	switch {
	case l.S3 != nil:
		return l.S3.String()
	case l.Scheme == "file":
		return (&url.URL{Scheme: "file", Path: l.File}).String()
	case l.Scheme == "relay":
		return "relay://" + strings.Join(l.Relay, ",")
	}
	return l.Scheme + "://"
}

// backend is one entry of the registry.
type backend struct {
	scheme string
	parse  func(uri string) (Location, error)
	open   func(ctx context.Context, loc Location, opts Options) (storage.Storage, error)
}

// registry lists every storage backend, here and nowhere else: adding one is
// an edit to this table, not an import for its side effects.
var registry = []backend{
	{
		scheme: "file",
		parse:  parseFile,
		open: func(_ context.Context, loc Location, opts Options) (storage.Storage, error) {
			return file.Open(loc.File, file.Options{Create: opts.Create})
		},
	},
	{
		scheme: "s3",
		parse: func(uri string) (Location, error) {
			l, err := s3.ParseURI(uri)
			if err != nil {
				return Location{}, err
			}
			return Location{Scheme: "s3", S3: &l}, nil
		},
		open: func(ctx context.Context, loc Location, opts Options) (storage.Storage, error) {
			return s3.Open(ctx, *loc.S3, opts.S3)
		},
	},
	{
		scheme: "relay",
		parse:  parseRelay,
		open: func(_ context.Context, loc Location, opts Options) (storage.Storage, error) {
			return relay.Open(loc.Relay, opts.Relay)
		},
	},
}

// Schemes returns the known URI schemes.
func Schemes() []string {
	var s []string
	for _, b := range registry {
		s = append(s, b.scheme)
	}
	return s
}

// Parse parses a storage URI without touching the store: file:///PATH (or
// an absolute path), s3://BUCKET/PREFIX?endpoint=HOST:PORT&tls=false&region=R,
// relay://HOST:PORT[,HOST:PORT...] (controller nodes serving their --repo).
func Parse(uri string) (Location, error) {
	if uri == "" {
		return Location{}, errors.New("empty storage URI; expected file:///ABSOLUTE/PATH or s3://BUCKET/PREFIX")
	}
	scheme, ok := schemeOf(uri)
	if !ok {
		if strings.HasPrefix(uri, "/") {
			return parseFile(uri)
		}
		return Location{}, fmt.Errorf("storage URI %q is neither a URI nor an absolute path: "+
			"relative paths are not accepted, write file:///ABSOLUTE/PATH (or s3://BUCKET/PREFIX)", Redact(uri))
	}
	for _, b := range registry {
		if b.scheme == scheme {
			return b.parse(uri)
		}
	}
	return Location{}, fmt.Errorf("unknown storage scheme %q in %s: known schemes are %s",
		scheme, Redact(uri), strings.Join(Schemes(), ", "))
}

// Open parses uri, opens its store, and wraps it in the retry wrapper.
func Open(ctx context.Context, uri string, opts Options) (storage.Storage, error) {
	loc, err := Parse(uri)
	if err != nil {
		return nil, err
	}
	for _, b := range registry {
		if b.scheme == loc.Scheme {
			st, err := b.open(ctx, loc, opts)
			if err != nil {
				return nil, err
			}
			ro := opts.Retry
			if ro.Observer == nil && opts.Metrics != nil {
				ro.Observer = opts.Metrics.StorageObserver(loc.Scheme)
			}
			return retry.Wrap(st, ro), nil
		}
	}
	return nil, fmt.Errorf("no backend for scheme %q", loc.Scheme) // Parse accepted it: a registry bug
}

// schemeOf returns uri's scheme (lower-cased) if it has one.
func schemeOf(uri string) (string, bool) {
	i := strings.IndexByte(uri, ':')
	if i <= 0 {
		return "", false
	}
	for j, c := range uri[:i] {
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		other := '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'
		if !letter && (j == 0 || !other) {
			return "", false
		}
	}
	return strings.ToLower(uri[:i]), true
}

// parseRelay accepts relay://HOST:PORT[,HOST:PORT...], an optional trailing
// slash allowed.
func parseRelay(uri string) (Location, error) {
	rest, ok := strings.CutPrefix(uri[len("relay:"):], "//")
	if !ok {
		return Location{}, fmt.Errorf("relay URI %q: write relay://HOST:PORT[,HOST:PORT...]", Redact(uri))
	}
	addrs, err := relay.ParseAddrs(strings.TrimSuffix(rest, "/"))
	if err != nil {
		return Location{}, fmt.Errorf("relay URI %s: %w", Redact(uri), err)
	}
	return Location{Scheme: "relay", Relay: addrs}, nil
}

// parseFile accepts file:///ABSOLUTE/PATH, file://localhost/ABSOLUTE/PATH and
// a bare absolute path.
func parseFile(uri string) (Location, error) {
	p := uri
	if !strings.HasPrefix(uri, "/") {
		rest := uri[len("file:"):]
		if !strings.HasPrefix(rest, "//") {
			return Location{}, fmt.Errorf("file URI %q has a relative path: write file:///ABSOLUTE/PATH (three slashes)", Redact(uri))
		}
		u, err := url.Parse(uri)
		if err != nil {
			return Location{}, fmt.Errorf("invalid file URI %q", Redact(uri))
		}
		if u.User != nil {
			return Location{}, fmt.Errorf("invalid file URI %s: user information is not allowed", Redact(uri))
		}
		if u.Host != "" && u.Host != "localhost" {
			return Location{}, fmt.Errorf("file URI %q names host %q: relative paths are not accepted and remote hosts are not supported; "+
				"write file:///ABSOLUTE/PATH (three slashes)", Redact(uri), u.Host)
		}
		if u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(rest, "?#") {
			return Location{}, fmt.Errorf("invalid file URI %q: file URIs take no parameters", Redact(uri))
		}
		p = u.Path
	}
	if !filepath.IsAbs(p) {
		return Location{}, fmt.Errorf("file URI %q has no absolute path: write file:///ABSOLUTE/PATH", Redact(uri))
	}
	return Location{Scheme: "file", File: filepath.Clean(p)}, nil
}

// Redact returns uri fit for a log line: user information and parameters
// that look secret are replaced, and a URI that cannot be parsed is reduced
// to its scheme.
func Redact(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		if scheme, ok := schemeOf(uri); ok {
			return scheme + "://REDACTED"
		}
		return "REDACTED"
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	if u.RawQuery != "" {
		q := u.Query()
		changed := false
		for k := range q {
			if secretParam(k) {
				q[k] = []string{"REDACTED"}
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	return u.String()
}

func secretParam(name string) bool {
	n := strings.ToLower(name)
	for _, s := range []string{"secret", "password", "passwd", "token", "key", "signature", "credential"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}
