package location

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/secret"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/storage/retry"
	"github.com/tidemark-backup/tidemark/internal/storage/s3"
	"github.com/tidemark-backup/tidemark/internal/storage/storagetest"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

func TestParse(t *testing.T) {
	s3loc := func(bucket, prefix, endpoint string, tls bool, region string) Location {
		return Location{Scheme: "s3", S3: &s3.Location{Bucket: bucket, Prefix: prefix, Endpoint: endpoint, TLS: tls, Region: region}}
	}
	good := []struct {
		uri  string
		want Location
	}{
		{"file:///var/lib/tidemark/repo", Location{Scheme: "file", File: "/var/lib/tidemark/repo"}},
		{"file:///var/lib/tidemark/repo/", Location{Scheme: "file", File: "/var/lib/tidemark/repo"}},
		{"FILE:///x", Location{Scheme: "file", File: "/x"}},
		{"file://localhost/srv/repo", Location{Scheme: "file", File: "/srv/repo"}},
		{"file:///with%20space/a", Location{Scheme: "file", File: "/with space/a"}},
		{"file:///a/../b", Location{Scheme: "file", File: "/b"}},
		{"/var/lib/tidemark/repo", Location{Scheme: "file", File: "/var/lib/tidemark/repo"}},
		{"s3://bucket", s3loc("bucket", "", s3.DefaultEndpoint, true, "")},
		{"s3://bucket/", s3loc("bucket", "", s3.DefaultEndpoint, true, "")},
		{"s3://bucket/backups/db1", s3loc("bucket", "backups/db1/", s3.DefaultEndpoint, true, "")},
		{"s3://bucket/backups/db1/", s3loc("bucket", "backups/db1/", s3.DefaultEndpoint, true, "")},
		{"s3://my.bucket-1/p?endpoint=127.0.0.1:9000&tls=false", s3loc("my.bucket-1", "p/", "127.0.0.1:9000", false, "")},
		{"s3://bucket/p?region=eu-west-1&tls=true", s3loc("bucket", "p/", s3.DefaultEndpoint, true, "eu-west-1")},
		{"s3://bucket?endpoint=minio.internal", s3loc("bucket", "", "minio.internal", true, "")},
		{"relay://controller:7000", Location{Scheme: "relay", Relay: []string{"controller:7000"}}},
		{"relay://c1:7000,10.0.0.2:7000,[::1]:7000/", Location{Scheme: "relay", Relay: []string{"c1:7000", "10.0.0.2:7000", "[::1]:7000"}}},
	}
	for _, tc := range good {
		got, err := Parse(tc.uri)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.uri, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Parse(%q) = %+v (s3 %+v), want %+v (s3 %+v)", tc.uri, got, got.S3, tc.want, tc.want.S3)
		}
		// The canonical form parses to the same location.
		again, err := Parse(got.String())
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Errorf("Parse(%q).String() = %q, which parses to %+v, %v", tc.uri, got.String(), again, err)
		}
	}

	bad := []struct {
		uri  string
		want string // in the error
	}{
		{"", "empty storage URI"},
		{"s3://", "missing bucket"},
		{"s3:///prefix", "missing bucket"},
		{"s3:bucket", "expected s3://BUCKET/PREFIX"},
		{"s3://bucket:9000/p", "the server goes in ?endpoint=HOST:PORT"},
		{"s3://Bad_Bucket", "bucket \"Bad_Bucket\""},
		{"s3://bucket?foo=bar", `unknown parameter "foo" (known: endpoint, tls, region)`},
		{"s3://bucket?tls=maybe", `tls="maybe" is not true or false`},
		{"s3://bucket?tls=false&tls=true", `parameter "tls" given 2 times`},
		{"s3://bucket?endpoint=http://host:9000", "without scheme"},
		{"s3://bucket?endpoint=", "without scheme"},
		{"s3://bucket?region=", "empty region"},
		{"s3://bucket/a//b", "empty path segment"},
		{"s3://bucket/../x", `".." segment`},
		{"s3://bucket/p#frag", "fragment"},
		{"s3://AKIAEXAMPLE:s3cr3t@bucket/p", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"},
		{"s3://AKIAEXAMPLE@bucket/p", "credentials in the URI are not accepted"},
		{"s3://bucket/p?secret_key=s3cr3t", "credentials in the URI are not accepted"},
		{"file://relative/path", "relative paths are not accepted"},
		{"file:relative/path", "write file:///ABSOLUTE/PATH"},
		{"file:./repo", "relative path"},
		{"relative/path", "relative paths are not accepted"},
		{"./repo", "relative paths are not accepted"},
		{"repo", "relative paths are not accepted"},
		{"file://otherhost/srv/repo", `names host "otherhost"`},
		{"file:///srv/repo?create=1", "take no parameters"},
		{"file://user:s3cr3t@localhost/srv", "user information"},
		{"ftp://host/x", `unknown storage scheme "ftp"`},
		{"nfs://controller:7000", "known schemes are file, s3, relay"},
		{"relay://", "no address"},
		{"relay:controller:7000", "write relay://HOST:PORT"},
		{"relay://controller", "want HOST:PORT"},
		{"relay://controller:0", "between 1 and 65535"},
		{"relay://controller:http", "between 1 and 65535"},
		{"relay://:7000", "no host"},
		{"relay://c1:7000,", "want HOST:PORT"},
		{"relay://c1:7000/repo", "no path, parameters or user"},
		{"relay://c1:7000?tls=true", "no path, parameters or user"},
		{"relay://user:s3cr3t@c1:7000", "no path, parameters or user"},
	}
	for _, tc := range bad {
		_, err := Parse(tc.uri)
		if err == nil {
			t.Errorf("Parse(%q): no error", tc.uri)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q): %q does not say %q", tc.uri, err, tc.want)
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("Parse(%q): error reveals the secret: %v", tc.uri, err)
		}
	}
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"s3://bucket/p?endpoint=h:9000&tls=false", "s3://bucket/p?endpoint=h:9000&tls=false"},
		{"s3://AKIA:s3cr3t@bucket/p", "s3://REDACTED@bucket/p"},
		{"s3://AKIA@bucket/p", "s3://REDACTED@bucket/p"},
		{"s3://bucket/p?secret_key=s3cr3t&tls=false", "s3://bucket/p?secret_key=REDACTED&tls=false"},
		{"s3://bucket/p?X-Amz-Signature=s3cr3t", "s3://bucket/p?X-Amz-Signature=REDACTED"},
		{"s3://AKIA:s3c/r3t@bucket/p", "s3://REDACTED"},
		{"file:///var/lib/repo", "file:///var/lib/repo"},
		{"%zz:s3cr3t", "REDACTED"},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestOpenFile(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	if _, err := Open(ctx, "file://"+dir, Options{}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("open of a missing directory: %v", err)
	}
	st, err := Open(ctx, "file://"+dir, Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	r, ok := st.(*retry.Store)
	if !ok {
		t.Fatalf("Open returned %T, want the retry wrapper", st)
	}
	if _, ok := r.Unwrap().(*file.Store); !ok {
		t.Errorf("wrapped %T, want *file.Store", r.Unwrap())
	}
	if st.String() != "file://"+dir {
		t.Errorf("String: %q", st.String())
	}
	if !storage.IsLocal(st) {
		t.Error("a file:// store through the retry wrapper should say it is local")
	}
	storagetest.Put(t, st, "k", []byte("v"))
	if b, err := os.ReadFile(filepath.Join(dir, "k")); err != nil || string(b) != "v" {
		t.Errorf("object file: %q, %v", b, err)
	}
}

func TestOpenS3(t *testing.T) {
	m := testenv.StartMinIO(t)
	ctx := context.Background()
	opts := Options{S3: s3.Config{Credentials: &s3.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: secret.NewString(m.SecretKey)}}}
	uri := "s3://" + m.Bucket + "/loc?endpoint=" + m.Endpoint + "&tls=false"
	st, err := Open(ctx, uri, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	if _, ok := st.(*retry.Store); !ok {
		t.Errorf("Open returned %T, want the retry wrapper", st)
	}
	if storage.IsLocal(st) {
		t.Error("an s3:// store says it is local")
	}
	if want := "s3://" + m.Bucket + "/loc/?endpoint=" + m.Endpoint + "&tls=false"; st.String() != want {
		t.Errorf("String: %q, want %q", st.String(), want)
	}
	storagetest.Put(t, st, "k", []byte("v"))
	if got := storagetest.Get(t, st, "k"); string(got) != "v" {
		t.Errorf("get: %q", got)
	}

	_, err = Open(ctx, "s3://missing-bucket?endpoint="+m.Endpoint+"&tls=false", opts)
	if !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), "bucket missing-bucket does not exist: create it first") {
		t.Errorf("open of a missing bucket: %v", err)
	}
}
