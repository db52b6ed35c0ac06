package s3

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// DefaultEndpoint is used when the URI names no endpoint.
const DefaultEndpoint = "s3.amazonaws.com"

// Location is what an s3:// URI names: a bucket, a key prefix inside it, and
// how to reach the server. It never holds credentials.
type Location struct {
	Bucket   string
	Prefix   string // "" or ending in "/"; prepended to every key
	Endpoint string // HOST[:PORT], no scheme
	TLS      bool   // https (the default); tls=false for plain http
	Region   string // "" lets minio-go discover it
}

const credentialsInURI = "credentials in the URI are not accepted; " +
	"set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or use ~/.aws/credentials or an IAM role)"

// uriParams are the query parameters an s3:// URI may carry.
var uriParams = []string{"endpoint", "tls", "region"}

// ParseURI parses s3://BUCKET[/PREFIX][?endpoint=HOST:PORT&tls=false&region=R].
// Credentials in the URI are refused: URIs end up in logs, shell history and
// the catalog.
func ParseURI(uri string) (Location, error) {
	u, err := url.Parse(uri)
	if err != nil {
		// url.Parse echoes the URI in its error, credentials included.
		return Location{}, errors.New("invalid s3 URI: cannot be parsed; expected s3://BUCKET/PREFIX?endpoint=HOST:PORT")
	}
	if u.Scheme != "s3" {
		return Location{}, fmt.Errorf("invalid s3 URI: scheme %q is not s3", u.Scheme)
	}
	if u.User != nil {
		return Location{}, errors.New("invalid s3 URI: " + credentialsInURI)
	}
	if u.Opaque != "" {
		return Location{}, errors.New("invalid s3 URI: expected s3://BUCKET/PREFIX")
	}
	if u.Fragment != "" || strings.HasSuffix(uri, "#") {
		return Location{}, errors.New("invalid s3 URI: a fragment (#...) is not allowed")
	}
	loc := Location{Bucket: u.Host, Endpoint: DefaultEndpoint, TLS: true}
	if loc.Bucket == "" {
		return Location{}, errors.New("invalid s3 URI: missing bucket; expected s3://BUCKET/PREFIX")
	}
	if strings.Contains(loc.Bucket, ":") {
		return Location{}, fmt.Errorf("invalid s3 URI: bucket %q contains a port; the server goes in ?endpoint=HOST:PORT", loc.Bucket)
	}
	if err := s3utils.CheckValidBucketNameStrict(loc.Bucket); err != nil {
		return Location{}, fmt.Errorf("invalid s3 URI: bucket %q: %w", loc.Bucket, err)
	}
	if p := strings.TrimPrefix(u.Path, "/"); p != "" {
		if err := storage.CheckPrefix(p); err != nil {
			return Location{}, fmt.Errorf("invalid s3 URI: prefix: %w", err)
		}
		if !strings.HasSuffix(p, "/") {
			p += "/"
		}
		loc.Prefix = p
	}

	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Location{}, fmt.Errorf("invalid s3 URI: query: %w", err)
	}
	for name, vals := range q {
		known := false
		for _, k := range uriParams {
			known = known || k == name
		}
		if !known {
			lower := strings.ToLower(name)
			if strings.Contains(lower, "key") || strings.Contains(lower, "secret") || strings.Contains(lower, "token") {
				return Location{}, fmt.Errorf("invalid s3 URI: parameter %q: %s", name, credentialsInURI)
			}
			return Location{}, fmt.Errorf("invalid s3 URI: unknown parameter %q (known: %s)", name, strings.Join(uriParams, ", "))
		}
		if len(vals) != 1 {
			return Location{}, fmt.Errorf("invalid s3 URI: parameter %q given %d times", name, len(vals))
		}
		v := vals[0]
		switch name {
		case "endpoint":
			if v == "" || strings.Contains(v, "/") {
				return Location{}, fmt.Errorf("invalid s3 URI: endpoint %q must be HOST[:PORT] without scheme or path (use tls=false for http)", v)
			}
			loc.Endpoint = v
		case "tls":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Location{}, fmt.Errorf("invalid s3 URI: tls=%q is not true or false", v)
			}
			loc.TLS = b
		case "region":
			if v == "" {
				return Location{}, errors.New("invalid s3 URI: empty region")
			}
			loc.Region = v
		}
	}
	return loc, nil
}

// String returns the canonical URI of the location.
func (l Location) String() string {
	var q []string
	if l.Endpoint != DefaultEndpoint {
		// ':' is legal in a query; keep HOST:PORT readable.
		q = append(q, "endpoint="+strings.ReplaceAll(url.QueryEscape(l.Endpoint), "%3A", ":"))
	}
	if !l.TLS {
		q = append(q, "tls=false")
	}
	if l.Region != "" {
		q = append(q, "region="+url.QueryEscape(l.Region))
	}
	u := url.URL{Scheme: "s3", Host: l.Bucket, Path: "/" + l.Prefix, RawQuery: strings.Join(q, "&")}
	if l.Prefix == "" {
		u.Path = ""
	}
	return u.String()
}
