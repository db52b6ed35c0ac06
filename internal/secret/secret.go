package secret

import (
	"bytes"
	"crypto/subtle"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Placeholder is what every secret prints as.
const Placeholder = "[REDACTED]"

// String is a secret text (a password). The zero value is empty.
type String struct{ p *string }

// NewString wraps v.
func NewString(v string) String { return String{p: &v} }

// Reveal returns the value.
func (s String) Reveal() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

// IsZero reports whether the secret is empty.
func (s String) IsZero() bool { return s.Reveal() == "" }

// Equal compares in constant time.
func (s String) Equal(o String) bool {
	return subtle.ConstantTimeCompare([]byte(s.Reveal()), []byte(o.Reveal())) == 1
}

func (String) String() string                  { return Placeholder }
func (String) GoString() string                { return Placeholder }
func (String) Format(f fmt.State, _ rune)      { _, _ = io.WriteString(f, Placeholder) }
func (String) LogValue() slog.Value            { return slog.StringValue(Placeholder) }
func (String) MarshalJSON() ([]byte, error)    { return []byte(`"` + Placeholder + `"`), nil }
func (String) MarshalText() ([]byte, error)    { return []byte(Placeholder), nil }
func (s *String) UnmarshalText(b []byte) error { *s = NewString(string(b)); return nil }

// Bytes is a secret byte string (a key file, a passphrase). The zero value
// is empty.
type Bytes struct{ p *[]byte }

// NewBytes wraps b (not copied: the caller hands it over).
func NewBytes(b []byte) Bytes { return Bytes{p: &b} }

// Reveal returns the value; the caller must not change it.
func (b Bytes) Reveal() []byte {
	if b.p == nil {
		return nil
	}
	return *b.p
}

// Len is the value's length.
func (b Bytes) Len() int { return len(b.Reveal()) }

// IsZero reports whether the secret is empty.
func (b Bytes) IsZero() bool { return b.Len() == 0 }

// Equal compares in constant time.
func (b Bytes) Equal(o Bytes) bool { return subtle.ConstantTimeCompare(b.Reveal(), o.Reveal()) == 1 }

func (Bytes) String() string               { return Placeholder }
func (Bytes) GoString() string             { return Placeholder }
func (Bytes) Format(f fmt.State, _ rune)   { _, _ = io.WriteString(f, Placeholder) }
func (Bytes) LogValue() slog.Value         { return slog.StringValue(Placeholder) }
func (Bytes) MarshalJSON() ([]byte, error) { return []byte(`"` + Placeholder + `"`), nil }
func (Bytes) MarshalText() ([]byte, error) { return []byte(Placeholder), nil }

// ReadFile reads a secret from path. Errors name the file, never its
// contents. With trimNewline, trailing newlines (echo's) are not part of
// the secret, as for a passphrase; a key file is taken byte for byte. An
// empty secret is an error.
func ReadFile(path string, trimNewline bool) (Bytes, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Bytes{}, err // *PathError names the file
	}
	if trimNewline {
		b = bytes.TrimRight(b, "\r\n")
	}
	if len(b) == 0 {
		return Bytes{}, fmt.Errorf("%s is empty", path)
	}
	return NewBytes(b), nil
}

// FromEnv returns the secret in environment variable name, or in the file
// that name+"_FILE" names (trailing newlines trimmed), and whether either
// was set (an empty variable counts as unset). Both set is an error: which
// one wins would be a guess.
func FromEnv(name string) (String, bool, error) {
	v, path := os.Getenv(name), os.Getenv(name+"_FILE")
	direct, viaFile := v != "", path != ""
	switch {
	case direct && viaFile:
		return String{}, false, fmt.Errorf("both %s and %s_FILE are set: set one", name, name)
	case viaFile:
		b, err := ReadFile(path, true)
		if err != nil {
			return String{}, false, fmt.Errorf("%s_FILE: %w", name, err)
		}
		return NewString(strings.Clone(string(b.Reveal()))), true, nil
	case direct:
		return NewString(v), true, nil
	}
	return String{}, false, nil
}
