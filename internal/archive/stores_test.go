package archive

import (
	"context"
	"fmt"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/secret"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/storage/s3"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

func openFileStore(t testing.TB, dir string) storage.Storage {
	t.Helper()
	st, err := file.Open(dir, file.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func openFileStoreNoT(dir string) storage.Storage {
	st, err := file.Open(dir, file.Options{})
	if err != nil {
		panic(err)
	}
	return st
}

type s3Server struct {
	mc *testenv.MinIO
}

// openS3Store starts a MinIO and returns a factory of stores under fresh
// prefixes of its bucket.
func openS3Store(t *testing.T) *s3Server {
	return &s3Server{mc: testenv.StartMinIO(t)}
}

func subStore(t *testing.T, srv *s3Server, prefix string) storage.Storage {
	t.Helper()
	uri := fmt.Sprintf("s3://%s/%s?endpoint=%s&tls=false", srv.mc.Bucket, prefix, srv.mc.Endpoint)
	st, err := location.Open(context.Background(), uri, location.Options{S3: s3.Config{
		Credentials: &s3.Credentials{AccessKeyID: srv.mc.AccessKey, SecretAccessKey: secret.NewString(srv.mc.SecretKey)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}
