// Package s3 stores objects in an S3-compatible bucket (AWS S3, MinIO) through
// minio-go, translating its errors into the storage sentinels.
//
// It implements storage.Retainer: puts with PutOptions.RetainUntil carry
// Object Lock headers (and Content-MD5, which S3 wants with them). On a
// bucket with Object Lock, Delete removes every version of a key (a plain
// DELETE there only adds a delete marker) and reports a version under
// retention as storage.ErrRetained with the date it ends (objectlock.go).
// Credentials never come from the URI; their secret parts are
// secret.String and never print.
package s3
