package controller

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/fsm"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// maxKeyLen bounds an idempotency key: a UUID is 36 characters.
const maxKeyLen = 128

// keyedRequest is a mutating request that may carry an idempotency key.
type keyedRequest interface {
	proto.Message
	GetIdempotencyKey() string
}

// idemCall is the key of the call a handler serves, carried in its context
// to apply, which wraps the handler's one write in an Idempotent command.
type idemCall struct {
	key, method string
	fingerprint []byte
	// Set by apply: the write was made (or replayed) under the key.
	used     bool
	replayed bool
	value    proto.Message
}

type idemCtxKey struct{}

// keyed runs a mutating handler's body (on the leader) under the request's
// idempotency key: a key the catalog holds for the same request returns
// the recorded result through replay without running body; one held for
// another request is refused; a new key rides into the Raft entry of
// body's one write (apply wraps it), and if that entry finds the key
// recorded after all (a concurrent retry, or an entry committed by the
// previous leader and not yet applied here when the check ran), the
// recorded result replaces body's. Without a key, body runs as is.
//
// body must make at most one write through s.apply: only the first is
// guarded.
func keyed[Resp any](ctx context.Context, s *Server, req keyedRequest, replay func(proto.Message) (Resp, error), body func(context.Context) (Resp, error)) (Resp, error) {
	var zero Resp
	key := req.GetIdempotencyKey()
	if key == "" {
		return body(ctx)
	}
	if len(key) > maxKeyLen {
		return zero, invalid("idempotency_key is %d bytes long; at most %d (a UUID is 36)", len(key), maxKeyLen)
	}
	method, _ := grpc.Method(ctx)
	fp, err := fingerprint(method, who(ctx), req)
	if err != nil {
		return zero, err
	}
	if rec, err := s.fsm.Store().Read().IdempotencyKey(key); err == nil && fsm.LiveKey(rec, s.clock().Now()) {
		if !bytes.Equal(rec.GetFingerprint(), fp) {
			return zero, fsm.KeyMismatch(rec)
		}
		v, err := fsm.Replay(rec)
		if err != nil {
			return zero, err
		}
		s.log.Info("idempotent request replayed", "method", method, "key", key)
		return replay(v)
	}
	call := &idemCall{key: key, method: method, fingerprint: fp}
	resp, err := body(context.WithValue(ctx, idemCtxKey{}, call))
	if err != nil || !call.replayed {
		return resp, err
	}
	s.log.Info("idempotent request replayed by the FSM", "method", method, "key", key)
	return replay(call.value)
}

// fingerprint identifies a request: its method, its caller (keys are not
// shared between callers: another's key is refused, never replayed) and
// its fields but the key.
func fingerprint(method, caller string, req keyedRequest) ([]byte, error) {
	m := proto.Clone(req)
	fd := m.ProtoReflect().Descriptor().Fields().ByName("idempotency_key")
	if fd != nil {
		m.ProtoReflect().Clear(fd)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("fingerprinting the %s request: %w", method, err)
	}
	h := sha256.New()
	for _, part := range [][]byte{[]byte(method), {0}, []byte(caller), {0}, b} {
		h.Write(part)
	}
	return h.Sum(nil), nil
}

// guard wraps cmd in an Idempotent command when ctx carries a key not yet
// used; the returned call (nil when not wrapped) gets the entry's outcome.
func (s *Server) guard(ctx context.Context, cmd *v1.Command) (*v1.Command, *idemCall) {
	call, ok := ctx.Value(idemCtxKey{}).(*idemCall)
	if !ok || call.used {
		return cmd, nil
	}
	call.used = true
	return &v1.Command{Cmd: &v1.Command_Idempotent{Idempotent: &v1.Idempotent{
		Key: call.key, Fingerprint: call.fingerprint, Method: call.method,
		RecordedAt: timestamppb.New(s.clock().Now()), Cmd: cmd,
	}}}, call
}

// replayed builds a handler's response from a recorded result of type T.
func replayed[T proto.Message, Resp any](what string, mk func(T) Resp) func(proto.Message) (Resp, error) {
	return func(v proto.Message) (Resp, error) {
		t, ok := v.(T)
		if !ok {
			var zero Resp
			return zero, fmt.Errorf("the result recorded for this idempotency key is a %T, not a %s", v, what)
		}
		return mk(t), nil
	}
}
