package engines

import (
	"context"
	"strings"
	"testing"
)

type named string

func (n named) Name() string { return string(n) }
func (named) Backup(context.Context, BackupParams) (*BackupResult, error) {
	return &BackupResult{}, nil
}
func (named) Restore(context.Context, RestoreParams) (*RestoreResult, error) {
	return &RestoreResult{}, nil
}

func TestRegistry(t *testing.T) {
	r := NewRegistry(named("logical"), named("snapshot"))
	for _, n := range []string{"", "auto", "logical"} {
		if e, err := r.Get(n); err != nil || e.Name() != "logical" {
			t.Errorf("Get(%q) = %v, %v; want the default, logical", n, e, err)
		}
	}
	if e, err := r.Get("snapshot"); err != nil || e.Name() != "snapshot" {
		t.Errorf("Get(snapshot) = %v, %v", e, err)
	}
	_, err := r.Get("clone")
	if err == nil || !strings.Contains(err.Error(), `"clone" is not available`) || !strings.Contains(err.Error(), "logical, snapshot") {
		t.Errorf("unknown engine: %v, want the name and what is available", err)
	}
}
