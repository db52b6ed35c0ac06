package s3

import (
	"fmt"
	"io"
	"log/slog"
)

// Credentials are static S3 credentials. Most deployments leave
// Config.Credentials nil and let the environment provide them.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey Secret
	SessionToken    Secret // optional, for temporary credentials
}

// Secret is a string that never prints: fmt, %#v and slog all show
// "[REDACTED]". Convert it with string(s) where the value is really needed.
type Secret string

const redacted = "[REDACTED]"

func (Secret) String() string   { return redacted }
func (Secret) GoString() string { return redacted }

// Format covers every fmt verb, %x and %q included.
func (Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue keeps the secret out of structured logs.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText keeps it out of JSON, YAML and slog's JSON handler (which
// marshals a struct holding a Secret with encoding/json).
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
