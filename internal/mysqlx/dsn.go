package mysqlx

import (
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tidemark-backup/tidemark/internal/secret"
)

// PasswordEnv names the environment variable that supplies the password when
// the DSN carries none, so that it stays out of process listings and shell
// history. PasswordEnv+"_FILE" names a file holding it instead, which keeps
// it out of the process's environment too.
const PasswordEnv = "TIDEMARK_MYSQL_PASSWORD"

const redacted = secret.Placeholder

// DSN is a parsed go-sql-driver DSN. Its String never shows the password.
type DSN struct {
	cfg      *mysql.Config
	password secret.String
	ssl      *sslParams // the ssl-* parameters, nil when the DSN has none
}

// defaultDialTimeout bounds the connect of an unreachable host; the driver
// default would wait for the OS (minutes).
const defaultDialTimeout = 10 * time.Second

// ParseDSN parses a go-sql-driver DSN ("user:pass@tcp(host:port)/db?params"
// or "user@unix(/path)/"). When the DSN has no password, the one
// StripPassword kept for its user and address supplies it, else
// PasswordEnv. A dial timeout of 10 s is set unless the DSN names one.
func ParseDSN(dsn string) (*DSN, error) {
	rest, ssl, err := splitSSLParams(dsn)
	if err != nil {
		return nil, fmt.Errorf("invalid MySQL DSN: %s", redactErr(err, dsn))
	}
	cfg, err := mysql.ParseDSN(rest)
	if err != nil {
		// The driver's message may quote the DSN, password included.
		return nil, fmt.Errorf("invalid MySQL DSN (expected user:password@tcp(host:port)/ or user@unix(/path/to/socket)/): %s", redactErr(err, dsn))
	}
	if ssl != nil {
		t, fallback, err := ssl.config(cfg.Addr, cfg.TLSConfig)
		if err != nil {
			return nil, fmt.Errorf("MySQL DSN for %s: %w", cfg.Addr, err)
		}
		cfg.TLS, cfg.AllowFallbackToPlaintext = t, fallback
		if t == nil {
			cfg.TLSConfig = "false"
		}
	}
	if cfg.Passwd == "" {
		if pw, ok := passwords.Load(passwordKey(cfg)); ok {
			cfg.Passwd = pw.(secret.String).Reveal()
		}
	}
	if cfg.Passwd == "" {
		pw, _, err := secret.FromEnv(PasswordEnv)
		if err != nil {
			return nil, fmt.Errorf("MySQL password: %w", err)
		}
		cfg.Passwd = pw.Reveal()
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultDialTimeout
	}
	return &DSN{cfg: cfg, password: secret.NewString(cfg.Passwd), ssl: ssl}, nil
}

// passwords are the passwords StripPassword took out of DSNs, by user and
// address: held as secret.String in this process only.
var passwords sync.Map // passwordKey → secret.String

func passwordKey(cfg *mysql.Config) string { return cfg.User + "@" + cfg.Net + "(" + cfg.Addr + ")" }

// StripPassword returns dsn without its password and keeps the password
// in this process as a secret.String, which ParseDSN joins back for a DSN
// of the same user and address that has none. A DSN with a password from
// a configuration file can then travel as a plain string (job parameters,
// engine parameters, logs) without the password in it. A DSN without a
// password is returned as it is.
func StripPassword(dsn string) (string, error) {
	rest, _, err := splitSSLParams(dsn)
	if err != nil {
		return "", fmt.Errorf("invalid MySQL DSN: %s", redactErr(err, dsn))
	}
	cfg, err := mysql.ParseDSN(rest)
	if err != nil {
		return "", fmt.Errorf("invalid MySQL DSN: %s", redactErr(err, dsn))
	}
	if cfg.Passwd == "" {
		return dsn, nil
	}
	// The driver reads "user:password@" up to the last '@' before the
	// address, so the text starts with exactly that.
	prefix := cfg.User + ":" + cfg.Passwd + "@"
	if !strings.HasPrefix(dsn, prefix) {
		return "", fmt.Errorf("MySQL DSN for %s: cannot separate its password from the rest; write it as user:password@tcp(host:port)/ (or leave the password out and put it in %s_FILE)", cfg.Addr, PasswordEnv)
	}
	passwords.Store(passwordKey(cfg), secret.NewString(cfg.Passwd))
	return cfg.User + "@" + dsn[len(prefix):], nil
}

// HasPassword reports whether dsn carries a password itself. Given on a
// command line it is readable by every user of the machine in the process
// list; the CLI refuses it there.
func HasPassword(dsn string) bool {
	cfg, err := mysql.ParseDSN(dsn)
	return err == nil && cfg.Passwd != ""
}

// ArgvPasswordError refuses a DSN with a password given as the
// command-line flag flag (nil when it has none): every user of the machine
// reads argv in the process list. The error never repeats the password.
func ArgvPasswordError(flag, dsn string) error {
	if !HasPassword(dsn) {
		return nil
	}
	return fmt.Errorf("the %s DSN holds a password, which every user of this machine can read in the process list: drop it from the DSN and put it in a file named by %s_FILE (or in %s)",
		flag, PasswordEnv, PasswordEnv)
}

func redactErr(err error, dsn string) string {
	msg := err.Error()
	if cfg, perr := mysql.ParseDSN(dsn); perr == nil && cfg.Passwd != "" {
		return strings.ReplaceAll(msg, cfg.Passwd, redacted)
	}
	return msg
}

// Config returns a copy of the driver configuration (password included) to
// adjust before Open.
func (d *DSN) Config() *mysql.Config { return d.cfg.Clone() }

// User is the user name the DSN connects as.
func (d *DSN) User() string { return d.cfg.User }

// Addr is "host:port" or the socket path.
func (d *DSN) Addr() string { return d.cfg.Addr }

// String is the DSN with the password replaced by a placeholder.
func (d *DSN) String() string {
	c := d.cfg.Clone()
	if c.Passwd != "" {
		c.Passwd = secret.Placeholder
	}
	s := c.FormatDSN()
	if d.ssl != nil {
		sep := "?"
		if strings.Contains(s, "?") {
			sep = "&"
		}
		s += sep + d.ssl.String()
	}
	return s
}

// TLS is the TLS configuration connections to the server use (nil: none),
// and whether a server without TLS is accepted in plain text (preferred).
func (d *DSN) TLS() (cfg *tls.Config, fallback bool) {
	c := d.cfg.Clone()
	return c.TLS, c.AllowFallbackToPlaintext
}

// SSL describes the DSN's TLS settings in the MySQL client's terms, for
// tools run as programs (mariabackup): the mode and the files, empty when
// not given. A DSN without any TLS setting gives mode "": the tool's own
// default.
func (d *DSN) SSL() (mode SSLMode, ca, cert, key string) {
	if d.ssl != nil {
		return d.ssl.effectiveMode(), d.ssl.ca, d.ssl.cert, d.ssl.key
	}
	switch d.cfg.TLSConfig {
	case "":
		return "", "", "", ""
	case "false":
		return SSLDisabled, "", "", ""
	case "skip-verify":
		return SSLRequired, "", "", ""
	case "preferred":
		return SSLPreferred, "", "", ""
	default: // true, or a name registered in code: the host name is checked
		return SSLVerifyIdentity, "", "", ""
	}
}

// LogValue keeps the password out of structured logs.
func (d *DSN) LogValue() slog.Value { return slog.StringValue(d.String()) }

// Open returns a pool on the DSN's configuration after adjust (which may be
// nil) has changed a copy of it. Nothing is dialed yet.
func (d *DSN) Open(adjust func(*mysql.Config)) (*sql.DB, error) {
	c := d.cfg.Clone()
	if adjust != nil {
		adjust(c)
	}
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return nil, fmt.Errorf("MySQL DSN %s: %w", d, err)
	}
	return sql.OpenDB(conn), nil
}

// WithAddr is dsn with its server address replaced by addr (TCP), its
// other settings (TLS parameters included) kept: the DSN of another member
// of the same replication group. A password in dsn stays in the result; one
// StripPassword kept for dsn is kept for the result's address too.
func WithAddr(dsn, addr string) (string, error) {
	rest, ssl, err := splitSSLParams(dsn)
	if err != nil {
		return "", err
	}
	c, err := mysql.ParseDSN(rest)
	if err != nil {
		return "", errors.New("the DSN does not parse")
	}
	kept, ok := passwords.Load(passwordKey(c))
	c.Net, c.Addr = "tcp", addr
	if c.Passwd == "" && ok {
		passwords.Store(passwordKey(c), kept)
	}
	out := c.FormatDSN()
	if ssl != nil {
		sep := "?"
		if strings.Contains(out, "?") {
			sep = "&"
		}
		out += sep + ssl.String()
	}
	return out, nil
}

// TCPAddr is the host:port of a TCP DSN, "" for a unix socket or a DSN
// that does not parse.
func TCPAddr(dsn string) string {
	rest, _, err := splitSSLParams(dsn)
	if err != nil {
		return ""
	}
	c, err := mysql.ParseDSN(rest)
	if err != nil || c.Net != "tcp" {
		return ""
	}
	return c.Addr
}
