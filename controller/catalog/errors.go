package catalog

import (
	"errors"
	"fmt"
)

// Sentinel errors of catalog operations. The FSM returns them (wrapped, with
// the object's name) as business errors in its Apply response; the
// controller maps them to gRPC codes in one table.
var (
	// ErrNotFound: the named agent, instance, backup, job or member does
	// not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a record with that name or id exists and the
	// operation would replace it.
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: the object is in a state that does not allow the
	// operation (a second active backup of an instance, cancelling a
	// finished job).
	ErrConflict = errors.New("conflict")
	// ErrStaleLease: a report or change made under a lease that is not the
	// job's current one. This is the fence that keeps an agent that lost
	// its lease from recording anything.
	ErrStaleLease = errors.New("stale lease")
	// ErrInvalid: the command or request is malformed.
	ErrInvalid = errors.New("invalid")
)

// Errorf returns an error that errors.Is matches against kind (one of the
// sentinels above) but whose text is only the formatted message: "instance
// "db1" already has backup job ..." rather than "conflict: instance ...".
func Errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, err: fmt.Errorf(format, args...)}
}

type kindError struct {
	kind, err error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }
