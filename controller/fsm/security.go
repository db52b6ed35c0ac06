package fsm

import (
	"crypto/subtle"

	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// applyCreateJoinToken stores a new join token.
func applyCreateJoinToken(w *catalog.Write, c *v1.CreateJoinToken) (proto.Message, error) {
	t := c.GetToken()
	if t.GetId() == "" || len(t.GetSecretHash()) == 0 || t.GetUsesLeft() == 0 || t.GetExpiresAt() == nil {
		return nil, catalog.Errorf(catalog.ErrInvalid, "a join token needs an id, a secret hash, uses and an expiry")
	}
	if _, err := w.JoinToken(t.GetId()); err == nil {
		return nil, catalog.Errorf(catalog.ErrAlreadyExists, "join token %q exists", t.GetId())
	}
	return t, w.PutJoinToken(t)
}

// applyConsumeJoinToken uses a join token once. Every refusal names why;
// the token is deleted when used up or found expired.
func applyConsumeJoinToken(w *catalog.Write, c *v1.ConsumeJoinToken) (proto.Message, error) {
	t, err := w.JoinToken(c.GetId())
	if err != nil {
		return nil, catalog.Errorf(catalog.ErrInvalid, "join token %s is not valid: it was used up, or never made by this cluster", c.GetId())
	}
	if subtle.ConstantTimeCompare(t.GetSecretHash(), c.GetSecretHash()) != 1 {
		return nil, catalog.Errorf(catalog.ErrInvalid, "join token %s: wrong secret", c.GetId())
	}
	if !c.GetNow().AsTime().Before(t.GetExpiresAt().AsTime()) {
		if err := w.DeleteJoinToken(t.GetId()); err != nil {
			return nil, err
		}
		// The deletion must commit, so the refusal is the response, not
		// an error (an error aborts the write).
		return &v1.JoinToken{Id: t.GetId(), ExpiresAt: t.GetExpiresAt()}, nil
	}
	if t.GetRole() != c.GetRole() {
		return nil, catalog.Errorf(catalog.ErrInvalid, "join token %s is for a %s, not a %s: make one with tidemark token create --role %s", t.GetId(), t.GetRole(), c.GetRole(), c.GetRole())
	}
	next := proto.Clone(t).(*v1.JoinToken)
	next.UsesLeft--
	if next.GetUsesLeft() == 0 {
		err = w.DeleteJoinToken(t.GetId())
	} else {
		err = w.PutJoinToken(next)
	}
	if err != nil {
		return nil, err
	}
	if c.GetRole() == "agent" {
		if err := w.DeleteRevocation(c.GetName()); err != nil {
			return nil, err
		}
	}
	return next, nil
}

// applyRevokeAgent records a revocation.
func applyRevokeAgent(w *catalog.Write, c *v1.RevokeAgent) (proto.Message, error) {
	if c.GetRevocation().GetName() == "" {
		return nil, catalog.Errorf(catalog.ErrInvalid, "a revocation needs the agent's name")
	}
	return c.GetRevocation(), w.PutRevocation(c.GetRevocation())
}

// applySetClusterCA records the cluster CA; a second, different one is
// refused (the CA is made once, at bootstrap).
func applySetClusterCA(w *catalog.Write, c *v1.SetClusterCA) (proto.Message, error) {
	ca := c.GetCa()
	if len(ca.GetCertPem()) == 0 || len(ca.GetSealedKey()) == 0 {
		return nil, catalog.Errorf(catalog.ErrInvalid, "the cluster CA needs a certificate and a sealed key")
	}
	if old := w.ClusterCA(); old != nil {
		if proto.Equal(old, ca) {
			return old, errUnchanged
		}
		return nil, catalog.Errorf(catalog.ErrConflict, "the cluster already has a CA")
	}
	return ca, w.PutClusterCA(ca)
}

// applyRecordAudit appends an audit record.
func applyRecordAudit(w *catalog.Write, c *v1.RecordAudit) (proto.Message, error) {
	if c.GetRecord().GetId() == "" {
		return nil, catalog.Errorf(catalog.ErrInvalid, "an audit record needs an id")
	}
	return c.GetRecord(), w.PutAudit(c.GetRecord())
}

// applyCreateAccessToken stores a CLI user's bearer token.
func applyCreateAccessToken(w *catalog.Write, c *v1.CreateAccessToken) (proto.Message, error) {
	t := c.GetToken()
	if t.GetId() == "" || len(t.GetSecretHash()) == 0 || t.GetUser() == "" || t.GetRole() == "" || t.GetExpiresAt() == nil {
		return nil, catalog.Errorf(catalog.ErrInvalid, "an access token needs an id, a secret hash, a user, a role and an expiry")
	}
	if _, err := w.AccessToken(t.GetId()); err == nil {
		return nil, catalog.Errorf(catalog.ErrAlreadyExists, "access token %q exists", t.GetId())
	}
	return t, w.PutAccessToken(t)
}
