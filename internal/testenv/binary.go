package testenv

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Install hints for RequireBinary, quoted verbatim in skip and failure messages.
const (
	MariaDBInstallHint = "apt-get install -y mariadb-server mariadb-client"
	MinIOInstallHint   = "make deps (or: GOBIN=$PWD/.bin go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c)"
)

const modulePath = "github.com/tidemark-backup/tidemark"

// CI reports whether the CI environment variable is set to a true value. In CI
// a missing dependency fails the test instead of skipping it, so that a broken
// runner cannot turn the suite green by skipping everything.
func CI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// Wait scales a deadline for CI, whose shared runners are slower than a laptop.
func Wait(d time.Duration) time.Duration {
	if CI() {
		return 3 * d
	}
	return d
}

// RequireBinary finds the executable name in PATH, then <repo root>/.bin,
// /usr/sbin and /usr/local/bin, and returns its path. When it is missing the
// test is skipped with installHint, or fails with the same message when CI is
// true.
func RequireBinary(t testing.TB, name, installHint string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	var dirs []string
	if root := RepoRoot(); root != "" {
		dirs = append(dirs, filepath.Join(root, ".bin"))
	}
	dirs = append(dirs, "/usr/sbin", "/usr/local/bin")
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := "testenv: " + name + " not found in PATH or " + strings.Join(dirs, ", ") + "; install it with: " + installHint
	if CI() {
		t.Fatal(msg)
	} else {
		t.Skip(msg)
	}
	return ""
}

var repoRoot = sync.OnceValue(func() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module "+modulePath+"\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
})

// RepoRoot returns the repository root, found by walking up from the working
// directory (go test runs in the package directory) to Tidemark's go.mod, or
// "" outside the repository.
func RepoRoot() string { return repoRoot() }
