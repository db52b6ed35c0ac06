// Package testenv starts throwaway real servers (mariadbd, MinIO) for tests on
// free loopback ports and cleans them up.
package testenv
