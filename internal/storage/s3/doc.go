// Package s3 stores objects in an S3-compatible bucket (AWS S3, MinIO) through
// minio-go, translating its errors into the storage sentinels.
package s3
