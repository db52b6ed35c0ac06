package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// innodbArgs are shared by the template and every instance: a redo log of a
// different size than the template's would be rebuilt at every start.
var innodbArgs = []string{
	"--innodb-buffer-pool-size=64M",
	"--innodb-log-file-size=48M",
	"--innodb-flush-log-at-trx-commit=2",
	"--innodb-doublewrite=0",
	"--skip-performance-schema",
}

// templateSQL runs at the end of bootstrap. Bootstrap runs without grant
// tables, so CREATE USER needs the FLUSH first. The root@<hostname> entry that
// mariadb-install-db writes is dropped: --skip-name-resolve warns about it at
// every start and it would pin the build host's name into every copy.
const templateSQL = `FLUSH PRIVILEGES;
DELETE FROM mysql.global_priv WHERE User = 'root' AND Host NOT IN ('localhost', '127.0.0.1', '::1');
DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1');
FLUSH PRIVILEGES;
CREATE USER 'tidemark'@'%';
GRANT ALL PRIVILEGES ON *.* TO 'tidemark'@'%' WITH GRANT OPTION;
`

// templateVersion changes whenever the recipe below changes in a way that the
// hashed inputs do not show.
const templateVersion = "2"

const templateMarker = "READY"

type templateKey struct{ mariadbd, installDB string }

var (
	templateMu    sync.Mutex
	templateCache = map[templateKey]string{}
)

// mariadbTemplate returns a datadir initialized by mariadb-install-db with the
// tidemark user, built once per mariadbd binary and shared by every test
// process of this user: under os.TempDir(), keyed by a hash of the binary and
// the recipe, guarded by a flock, made visible by an atomic rename.
func mariadbTemplate(mariadbd, installDB string) (string, error) {
	key := templateKey{mariadbd, installDB}
	templateMu.Lock()
	defer templateMu.Unlock()
	if dir, ok := templateCache[key]; ok {
		return dir, nil
	}
	dir, err := buildTemplate(mariadbd, installDB)
	if err != nil {
		return "", err
	}
	templateCache[key] = dir
	return dir, nil
}

func buildTemplate(mariadbd, installDB string) (string, error) {
	version, err := exec.Command(mariadbd, "--no-defaults", "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("testenv: %s --version: %w: %s", mariadbd, err, version)
	}
	h := sha256.New()
	for _, s := range append([]string{templateVersion, mariadbd, installDB, string(version), templateSQL}, innodbArgs...) {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	if fi, err := os.Stat(mariadbd); err == nil {
		_, _ = fmt.Fprintf(h, "%d %d", fi.Size(), fi.ModTime().UnixNano())
	}
	// The uid keeps users who share /tmp out of each other's way.
	base := filepath.Join(os.TempDir(), fmt.Sprintf("tidemark-testenv-template-%d-%s", os.Getuid(), hex.EncodeToString(h.Sum(nil))[:16]))
	if templateReady(base) {
		return base, nil
	}

	lock, err := os.OpenFile(base+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", fmt.Errorf("testenv: template lock: %w", err)
	}
	defer func() { _ = lock.Close() }() // closing releases the flock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("testenv: template lock: %w", err)
	}
	if templateReady(base) { // another process built it while we waited
		return base, nil
	}
	// Leftovers of a builder that died; nobody else builds while we hold the lock.
	_ = os.RemoveAll(base)
	stale, _ := filepath.Glob(base + ".tmp-*")
	for _, s := range stale {
		_ = os.RemoveAll(s)
	}

	tmp, err := os.MkdirTemp(os.TempDir(), filepath.Base(base)+".tmp-")
	if err != nil {
		return "", err
	}
	defer func() { _ = os.RemoveAll(tmp) }() // a no-op after the rename
	sqlPath := filepath.Join(tmp, "template.sql")
	if err := os.WriteFile(sqlPath, []byte(templateSQL), 0o600); err != nil {
		return "", err
	}
	args := []string{
		"--no-defaults", // Debian's /etc/mysql/my.cnf must not leak in
		"--datadir=" + filepath.Join(tmp, "data"),
		"--auth-root-authentication-method=normal", // root without password
		"--skip-test-db",
		"--skip-name-resolve",
		"--extra-file=" + sqlPath,
	}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	args = append(args, innodbArgs...)
	cmd := exec.Command(installDB, args...)
	cmd.SysProcAttr = sysProcAttr()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testenv: %s: %w\n%s", installDB, err, tailString(string(out), 30))
	}
	if err := os.Remove(sqlPath); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, templateMarker), version, 0o600); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, base); err != nil {
		return "", fmt.Errorf("testenv: publish template: %w", err)
	}
	return base, nil
}

// templateReady checks the marker, not the directory: tmp cleaners may empty
// an old template without removing it.
func templateReady(base string) bool {
	_, err := os.Stat(filepath.Join(base, templateMarker))
	if err != nil {
		return false
	}
	_, err = os.Stat(filepath.Join(base, "data", "mysql", "global_priv.MAI"))
	return err == nil
}

// copyDatadir copies the template's datadir to dst, sharing extents where the
// file system can (reflink) and keeping the mostly zero redo log sparse.
// copyDatadir copies the template's datadir to dst, a new directory, or,
// with into, into dst, an existing empty one.
func copyDatadir(template, dst string, into bool) error {
	src := filepath.Join(template, "data")
	if into {
		src += "/."
	}
	out, err := exec.Command("cp", "-a", "--reflink=auto", "--sparse=always", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("testenv: copy template datadir: %w: %s", err, out)
	}
	return nil
}

// emptyOrRemove removes dir, or, with keep, everything in it.
func emptyOrRemove(dir string, keep bool) error {
	if !keep {
		return os.RemoveAll(dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func tailString(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
