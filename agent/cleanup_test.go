package agent

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/logical"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

// leftoverEngine records the servers it was asked to clean.
type leftoverEngine struct {
	engines.Engine
	mu   sync.Mutex
	dsns []string
}

func (e *leftoverEngine) Name() string { return "leftovers" }

func (e *leftoverEngine) CleanLeftovers(_ context.Context, dsn string) ([]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dsns = append(e.dsns, dsn)
	return []string{"tidemark-x-1"}, nil
}

// TestCleansLeftoversAtStart: at start the agent asks every engine that
// keeps state outside the repository to clean up after a killed run, once
// per instance, without waiting for the controller.
func TestCleansLeftoversAtStart(t *testing.T) {
	t.Parallel()
	fc := startFake(t)
	cfg := testConfig(t, "db-clean", fc.addr)
	cfg.MySQL = "tidemark@tcp(" + blackHole(t) + ")/"
	cfg.Instances = map[string]string{"other": "tidemark@tcp(" + blackHole(t) + ")/x"}
	eng := &leftoverEngine{}
	cfg.Engines = engines.NewRegistry(logical.New(), eng)
	runAgent(t, cfg)
	want := []string{cfg.MySQL, cfg.Instances["other"]}
	slices.Sort(want)
	deadline := time.Now().Add(10 * time.Second)
	for {
		eng.mu.Lock()
		got := slices.Sorted(slices.Values(eng.dsns))
		eng.mu.Unlock()
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cleaned %v, want each instance once: %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConfigPasswordsStayOutOfDSNs: passwords in the configuration's DSNs
// (the file accepts them) are held as secrets by mysqlx; the DSN strings
// the agent hands to engines carry none, and parsing them gives the
// password back.
func TestConfigPasswordsStayOutOfDSNs(t *testing.T) {
	t.Parallel()
	fc := startFake(t)
	cfg := testConfig(t, "db-pw", fc.addr)
	own, other := blackHole(t), blackHole(t)
	cfg.MySQL = "tidemark:own-pw-7391@tcp(" + own + ")/"
	cfg.Instances = map[string]string{"other": "tidemark:other-pw-2864@tcp(" + other + ")/x"}
	eng := &leftoverEngine{}
	cfg.Engines = engines.NewRegistry(logical.New(), eng)
	runAgent(t, cfg)
	want := map[string]string{"tidemark@tcp(" + own + ")/": "own-pw-7391", "tidemark@tcp(" + other + ")/x": "other-pw-2864"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		eng.mu.Lock()
		got := slices.Clone(eng.dsns)
		eng.mu.Unlock()
		if len(got) == len(want) {
			for _, dsn := range got {
				pw, ok := want[dsn]
				if !ok {
					t.Fatalf("an engine got the DSN %q, want one of %v (without the password)", dsn, want)
				}
				d, err := mysqlx.ParseDSN(dsn)
				if err != nil {
					t.Fatal(err)
				}
				if d.Config().Passwd != pw {
					t.Errorf("parsing %q gives back the password %q, want %q", dsn, d.Config().Passwd, pw)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("engines got %v, want %d DSNs", got, len(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
