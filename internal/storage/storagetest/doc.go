// Package storagetest is the conformance suite every storage.Storage backend
// runs to prove it keeps the interface's contract.
package storagetest
