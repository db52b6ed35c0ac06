// Package storage defines the object store every backup goes through: a small
// interface (put, ranged get, stat, list by prefix, delete), the sentinel
// errors every backend translates its failures into, and nothing that knows a
// particular backend. Optional capabilities are small interfaces a backend
// may implement and wrappers pass through: Syncer (deferred durability),
// Localer (a local disk) and Retainer (puts under retention: S3 Object
// Lock, whose refused deletes are ErrRetained).
package storage
