package controller

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/internal/storage"
)

// Sentinel errors of the controller itself (the catalog's are in package
// catalog).
var (
	// ErrNotLeader: the node is not the Raft leader and may not forward
	// (the request was already forwarded once).
	ErrNotLeader = errors.New("not the leader")
	// ErrNoLeader: no leader is known, or it cannot be reached, or a write
	// could not be committed: an election is under way or the cluster has
	// no quorum. Retry later or on another node.
	ErrNoLeader = errors.New("no leader")
	// ErrNotController: an address answers, but not as a Tidemark
	// controller.
	ErrNotController = errors.New("not a tidemark controller")
)

// codeTable maps every sentinel to its gRPC code, in one place. The first
// match in order wins.
var codeTable = []struct {
	err  error
	code codes.Code
}{
	{catalog.ErrNotFound, codes.NotFound},
	{catalog.ErrAlreadyExists, codes.AlreadyExists},
	{catalog.ErrConflict, codes.FailedPrecondition},
	{catalog.ErrStaleLease, codes.FailedPrecondition},
	{catalog.ErrInvalid, codes.InvalidArgument},
	{ErrNotLeader, codes.Unavailable},
	{ErrNoLeader, codes.Unavailable},
	{ErrNotController, codes.FailedPrecondition},
	// The relay's backend errors; the relay client
	// (internal/storage/relay) maps the codes back.
	{storage.ErrNotFound, codes.NotFound},
	{storage.ErrExists, codes.AlreadyExists},
	{storage.ErrPermission, codes.PermissionDenied},
	{storage.ErrUnavailable, codes.Unavailable},
	{storage.ErrNoSpace, codes.ResourceExhausted},
	{errBadPutStream, codes.InvalidArgument},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
}

// codeOf returns the gRPC code for err: a status passes through (a
// forwarded call's answer), a sentinel is looked up, anything else is
// Internal.
func codeOf(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	for _, e := range codeTable {
		if errors.Is(err, e.err) {
			return e.code
		}
	}
	return codes.Internal
}

// toStatus turns err into the gRPC status a handler returns; the message is
// err's, which names the object.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codeOf(err), err.Error())
}

// invalid is a catalog.ErrInvalid with a message for the caller.
func invalid(format string, args ...any) error {
	return catalog.Errorf(catalog.ErrInvalid, format, args...)
}
