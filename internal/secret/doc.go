// Package secret holds values that must never be shown: database
// passwords, repository passphrases and key files, S3 secret keys. String
// and Bytes print as one placeholder, Placeholder, through every path a
// value takes out of a process by accident: fmt (every verb, %#v and %x
// included, and inside structs, exported field or not), encoding/json and
// encoding (text), and log/slog (text and JSON handlers). Reveal returns the
// value, for the one call that needs it.
//
// Secrets enter a process from files or the environment (ReadFile, FromEnv),
// never from the command line, where every user of the machine can read
// them in the process listing.
//
// Both types keep the value behind a pointer. A plain string type would
// print as itself wherever fmt cannot call its methods: in an unexported
// struct field, fmt prints the raw value. Behind a pointer, such a field
// prints as an address.
package secret
