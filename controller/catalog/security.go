package catalog

import (
	"fmt"

	"github.com/hashicorp/go-memdb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

const (
	joinTokensTableName  = "join_tokens"
	revocationsTableName = "revocations"
	clusterCATableName   = "cluster_ca"
	auditTableName       = "audit"
	accessTokensTable    = "access_tokens"
)

// joinTokensTable: unused join tokens, by their public id (the secret is
// stored hashed).
func joinTokensTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name:    joinTokensTableName,
		Indexes: map[string]*memdb.IndexSchema{"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Id"}}},
	}
}

// accessTokensTableSchema: CLI users' bearer tokens, by public id.
func accessTokensTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name:    accessTokensTable,
		Indexes: map[string]*memdb.IndexSchema{"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Id"}}},
	}
}

// AccessToken returns the bearer token with id, or ErrNotFound.
func (r *Read) AccessToken(id string) (*v1.AccessToken, error) {
	obj, _ := r.first(accessTokensTable, id, nil)
	if obj == nil {
		return nil, Errorf(ErrNotFound, "access token %q not found", id)
	}
	return obj.(*v1.AccessToken), nil
}

// PutAccessToken stores a bearer token.
func (w *Write) PutAccessToken(t *v1.AccessToken) error { return w.insert(accessTokensTable, t) }

// revocationsTable: revoked agents, by name.
func revocationsTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name:    revocationsTableName,
		Indexes: map[string]*memdb.IndexSchema{"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}}},
	}
}

// clusterCATable: at most one row, the cluster's own CA.
func clusterCATable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: clusterCATableName,
		Indexes: map[string]*memdb.IndexSchema{"id": {Name: "id", Unique: true,
			Indexer: &memdb.ConditionalIndex{Conditional: func(any) (bool, error) { return true, nil }}}},
	}
}

// auditTable: the audit trail, by time-ordered id.
func auditTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name:    auditTableName,
		Indexes: map[string]*memdb.IndexSchema{"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Id"}}},
	}
}

// JoinToken returns the token with id, or ErrNotFound.
func (r *Read) JoinToken(id string) (*v1.JoinToken, error) {
	obj, _ := r.first(joinTokensTableName, id, nil)
	if obj == nil {
		return nil, Errorf(ErrNotFound, "join token %q not found (used up, expired and removed, or never made)", id)
	}
	return obj.(*v1.JoinToken), nil
}

// PutJoinToken stores a token.
func (w *Write) PutJoinToken(t *v1.JoinToken) error { return w.insert(joinTokensTableName, t) }

// DeleteJoinToken removes a token; a missing one is not an error.
func (w *Write) DeleteJoinToken(id string) error {
	if _, err := w.txn.DeleteAll(joinTokensTableName, "id", id); err != nil {
		return fmt.Errorf("deleting join token %q: %w", id, err)
	}
	return nil
}

// Revocation returns the agent's revocation, or nil.
func (r *Read) Revocation(name string) *v1.Revocation {
	obj, _ := r.first(revocationsTableName, name, nil)
	if obj == nil {
		return nil
	}
	return obj.(*v1.Revocation)
}

// PutRevocation records a revocation.
func (w *Write) PutRevocation(rv *v1.Revocation) error { return w.insert(revocationsTableName, rv) }

// DeleteRevocation lifts a revocation; a missing one is not an error.
func (w *Write) DeleteRevocation(name string) error {
	if _, err := w.txn.DeleteAll(revocationsTableName, "id", name); err != nil {
		return fmt.Errorf("lifting the revocation of %q: %w", name, err)
	}
	return nil
}

// ClusterCA returns the cluster's own CA, or nil.
func (r *Read) ClusterCA() *v1.ClusterCA {
	obj, err := r.txn.First(clusterCATableName, "id")
	if err != nil || obj == nil {
		return nil
	}
	return obj.(*v1.ClusterCA)
}

// PutClusterCA records the cluster CA (replacing any).
func (w *Write) PutClusterCA(ca *v1.ClusterCA) error {
	if _, err := w.txn.DeleteAll(clusterCATableName, "id"); err != nil {
		return err
	}
	return w.insert(clusterCATableName, ca)
}

// PutAudit appends an audit record.
func (w *Write) PutAudit(a *v1.AuditRecord) error { return w.insert(auditTableName, a) }

// Audit returns every audit record, oldest first.
func (r *Read) Audit() []*v1.AuditRecord { return all[*v1.AuditRecord](r, auditTableName, "id") }
