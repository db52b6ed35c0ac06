package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
)

// Environment variables of the global TLS flags.
const (
	envCredentials = "TIDEMARK_CREDENTIALS"
	envTLSCA       = "TIDEMARK_TLS_CA"
	envTLSCert     = "TIDEMARK_TLS_CERT"
	envTLSKey      = "TIDEMARK_TLS_KEY"
	envInsecure    = "TIDEMARK_INSECURE"
	envTokenFile   = "TIDEMARK_TOKEN_FILE"
)

// loginFile is where tidemark login keeps the user's access token.
func loginFile() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "tidemark", "token"), nil
}

// accessToken is the CLI user's bearer token: $TIDEMARK_TOKEN_FILE, else
// the one tidemark login saved; "" when there is none.
func accessToken() (string, error) {
	path, explicit := os.Getenv(envTokenFile), true
	if path == "" {
		var err error
		if path, err = loginFile(); err != nil {
			return "", nil //nolint:nilerr // no config dir: no saved login
		}
		explicit = false
	}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		return strings.TrimSpace(string(b)), nil
	case !explicit && errors.Is(err, fs.ErrNotExist):
		return "", nil
	}
	return "", fmt.Errorf("%s: %w", envTokenFile, err)
}

// tlsFlags are the global flags that say who this process is to the
// controllers: the CLI's credential, an agent's, or a controller node's
// own (with --tls-*: an operator's CA).
type tlsFlags struct {
	credentials string
	files       tlsx.Files
	insecure    bool
}

func (f *tlsFlags) register(root *cobra.Command) {
	p := root.PersistentFlags()
	p.StringVar(&f.credentials, "credentials", os.Getenv(envCredentials),
		"directory holding ca.pem, cert.pem and key.pem: the credential to present (env "+envCredentials+")")
	p.StringVar(&f.files.CA, "tls-ca", os.Getenv(envTLSCA), "PEM file of the CA to trust (env "+envTLSCA+")")
	p.StringVar(&f.files.Cert, "tls-cert", os.Getenv(envTLSCert), "PEM file of this process's certificate (env "+envTLSCert+")")
	p.StringVar(&f.files.Key, "tls-key", os.Getenv(envTLSKey), "PEM file of this process's private key (env "+envTLSKey+")")
	p.BoolVar(&f.insecure, "insecure", os.Getenv(envInsecure) == "1",
		"plaintext, no identities: only allowed when every address is loopback (env "+envInsecure+"=1)")
}

// resolve returns the credential files given, if any: the --tls-* flags,
// else the --credentials directory.
func (f *tlsFlags) resolve() (tlsx.Files, bool, error) {
	explicit := f.files != (tlsx.Files{})
	switch {
	case explicit && f.insecure, f.credentials != "" && f.insecure:
		return tlsx.Files{}, false, errors.New("--insecure (plaintext) and TLS credentials both given: choose one")
	case explicit:
		return f.files, true, nil
	case f.credentials != "":
		return tlsx.Files{CA: filepath.Join(f.credentials, "ca.pem"), Cert: filepath.Join(f.credentials, "cert.pem"),
			Key: filepath.Join(f.credentials, "key.pem")}, true, nil
	}
	return tlsx.Files{}, false, nil
}

// clientOptions is how the CLI dials addrs: with its credential, or
// plaintext on loopback with --insecure.
func (f *tlsFlags) clientOptions(addrs []string) (client.Options, error) {
	files, ok, err := f.resolve()
	if err != nil {
		return client.Options{}, userErr(err)
	}
	if f.insecure {
		if err := tlsx.RequireLoopback("--controller", addrs...); err != nil {
			return client.Options{}, userErr(err)
		}
		return client.Options{Insecure: true}, nil
	}
	if !ok {
		// No certificate: a user's access token, over TLS checked against
		// the CA the token pins.
		raw, err := accessToken()
		if err != nil {
			return client.Options{}, userErr(err)
		}
		if raw == "" {
			return client.Options{}, userErr(client.ErrNoCredentials)
		}
		tok, err := tlsx.ParseAccessToken(raw)
		if err != nil {
			return client.Options{}, userErr(fmt.Errorf("the saved access token: %w", err))
		}
		return client.Options{TLS: tlsx.PinnedClientConfig(tok.Pin), Bearer: raw}, nil
	}
	src, err := tlsx.FromFiles(files)
	if err != nil && f.files == (tlsx.Files{}) {
		err = fmt.Errorf("--credentials %s (ca.pem, cert.pem, key.pem): %w", f.credentials, err)
	}
	if err != nil {
		return client.Options{}, userErr(err)
	}
	return client.Options{TLS: src.ClientConfig()}, nil
}
