// Package storage defines the object store every backup goes through: a small
// interface (put, ranged get, stat, list by prefix, delete), the sentinel
// errors every backend translates its failures into, and nothing that knows a
// particular backend.
package storage
