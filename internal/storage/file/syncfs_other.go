//go:build !linux

package file

import "os"

// canDefer: without syncfs(2) Sync could not cover deferred puts made by
// another process, so every put is synced on its own, DeferSync or not.
const canDefer = false

func syncFS(*os.File) error { return nil }

func startWriteback(*os.File) {}
