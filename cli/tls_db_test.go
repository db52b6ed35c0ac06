package cli

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestTLSToDatabase backs up and restores through users the server admits
// only over TLS: the logical engine (its wire reader steps aside for TLS),
// and mariabackup with the DSN's CA, client certificate and name check
// handed over in its options file.
func TestTLSToDatabase(t *testing.T) {
	m, f := testenv.StartMariaDBTLS(t)
	db := m.DB(t)
	testenv.LoadSample(t, db, "shop", 2000)
	repo := "file://" + filepath.Join(t.TempDir(), "repo")
	t.Setenv("TIDEMARK_REPO", "")
	t.Setenv("TIDEMARK_KEY_FILE", "")
	t.Setenv("TIDEMARK_PASSPHRASE_FILE", "")
	if code, _, errs := run(t, "repo", "init", "--repo", repo); code != 0 {
		t.Fatalf("init: %s", errs)
	}
	x509 := fmt.Sprintf("x509_user@tcp(127.0.0.1:%d)/?ssl-ca=%s&ssl-cert=%s&ssl-key=%s", m.Port, f.CA, f.ClientCert, f.ClientKey)
	code, out, errs := run(t, "backup", "--mysql", x509, "--repo", repo, "--engine", "logical")
	if code != 0 {
		t.Fatalf("logical backup over TLS: %d %s", code, errs)
	}
	id := lastLine(out)
	if code, _, errs := run(t, "restore", id, "--repo", repo, "--to-mysql", x509, "--rename-db", "shop:shop2"); code != 0 {
		t.Fatalf("logical restore over TLS: %d %s", code, errs)
	}
	a, b := testenv.Checksums(t, db, "shop"), testenv.Checksums(t, db, "shop2")
	if len(a) == 0 || len(a) != len(b) {
		t.Fatalf("%d tables restored of %d", len(b), len(a))
	}
	for k, v := range a {
		if got := b["shop2"+strings.TrimPrefix(k, "shop")]; got != v {
			t.Errorf("%s: restored %+v, backed up %+v", k, got, v)
		}
	}

	tlsUser := fmt.Sprintf("tls_user@tcp(127.0.0.1:%d)/?ssl-mode=verify-identity&ssl-ca=%s", m.Port, f.CA)
	if code, _, errs := run(t, "backup", "--mysql", tlsUser, "--repo", repo, "--engine", "mariabackup"); code != 0 {
		t.Fatalf("mariabackup over TLS: %d %s", code, errs)
	}
	// The wrong CA is refused before any data moves, saying what to fix.
	wrong := fmt.Sprintf("tls_user@tcp(127.0.0.1:%d)/?ssl-ca=%s", m.Port, f.OtherCA)
	code, _, errs = run(t, "backup", "--mysql", wrong, "--repo", repo, "--engine", "logical")
	if code == 0 || !strings.Contains(errs, "certificate failed verification") || !strings.Contains(errs, "ssl-ca=PATH") {
		t.Fatalf("a wrong CA: %d %q", code, errs)
	}
}
