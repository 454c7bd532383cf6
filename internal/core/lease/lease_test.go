package lease_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/lease"
	"github.com/wid-project/wid/internal/core/store"
	"github.com/wid-project/wid/internal/core/store/postgres"
	"github.com/wid-project/wid/internal/core/store/postgres/pgtest"
	"github.com/wid-project/wid/internal/core/store/sqlite"
	"github.com/wid-project/wid/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

const ttl = 500 * time.Millisecond

// election runs contenders and checks that their work never overlaps.
type election struct {
	t       *testing.T
	running atomic.Int32
	mu      sync.Mutex
	// holder is who runs work now; ended when each holder's work ended.
	holder  string
	started map[string]time.Time
	ended   map[string]time.Time
	stops   map[string]func()
}

func newElection(t *testing.T) *election {
	return &election{t: t, started: map[string]time.Time{}, ended: map[string]time.Time{}, stops: map[string]func(){}}
}

// contend runs name's part in the election on db until stop(name).
func (e *election) contend(db store.Backend, name string) {
	l := lease.New(db, "rotation", name, ttl, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- l.Run(ctx, func(ctx context.Context) {
			if n := e.running.Add(1); n != 1 {
				e.t.Errorf("%s runs work while %d others do", name, n-1)
			}
			e.mu.Lock()
			e.holder, e.started[name] = name, time.Now()
			e.mu.Unlock()
			<-ctx.Done()
			e.mu.Lock()
			e.ended[name] = time.Now()
			if e.holder == name {
				e.holder = ""
			}
			e.mu.Unlock()
			e.running.Add(-1)
		})
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("%s: Run: %v", name, err)
			}
		})
	}
	e.mu.Lock()
	e.stops[name] = stop
	e.mu.Unlock()
	e.t.Cleanup(stop)
}

// waitHolder waits up to d for someone other than not to run work, and
// returns who does.
func (e *election) waitHolder(d time.Duration, not string) string {
	e.t.Helper()
	var h string
	testkit.Eventually(e.t, d, func() bool {
		e.mu.Lock()
		h = e.holder
		e.mu.Unlock()
		return h != "" && h != not
	}, "nobody but %q took the lease", not)
	return h
}

func (e *election) stop(name string) {
	e.mu.Lock()
	stop := e.stops[name]
	e.mu.Unlock()
	stop()
}

// TestOneHolderHandsOverOnStop: of three contenders on one SQLite store
// one works at a time, and a holder that stops hands over at once.
func TestOneHolderHandsOverOnStop(t *testing.T) {
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "wid.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	e := newElection(t)
	for i := range 3 {
		e.contend(db, fmt.Sprintf("replica-%d", i))
	}
	first := e.waitHolder(5*ttl, "")
	began := time.Now()
	e.stop(first)
	second := e.waitHolder(5*ttl, first)
	// Released, not expired: the next one needs no TTL, only a look.
	if took := time.Since(began); took > ttl {
		t.Errorf("%s took over from %s after %s, want under the TTL %s", second, first, took, ttl)
	}
}

// TestTakeoverWhenTheHolderDies: the holder loses its database (as when
// it is killed: no release, no renewals). Another replica takes over
// within about a TTL, and only after the dead holder's work has stopped.
func TestTakeoverWhenTheHolderDies(t *testing.T) {
	dbURL := pgtest.Database(t)
	e := newElection(t)
	dbs := map[string]*postgres.DB{}
	for i := range 3 {
		db, err := postgres.Open(t.Context(), dbURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		name := fmt.Sprintf("replica-%d", i)
		dbs[name] = db
		e.contend(db, name)
	}
	for range 3 {
		first := e.waitHolder(5*ttl, "")
		began := time.Now()
		dbs[first].Close()
		second := e.waitHolder(20*ttl, first)
		took := time.Since(began)
		e.mu.Lock()
		ended, started := e.ended[first], e.started[second]
		e.mu.Unlock()
		if ended.IsZero() || !ended.Before(started) {
			t.Fatalf("%s started work at %s while the dead holder %s worked until %s", second, started, first, ended)
		}
		// A TTL plus renewal rounds; the bound is loose because a loaded
		// CI machine delays every round, and the test is of takeover, not
		// of speed (bench figures measure that).
		if took > 8*ttl {
			t.Errorf("%s took over from the dead %s after %s, want within a few TTLs of %s", second, first, took, ttl)
		}
		t.Logf("%s took over from %s after %s (TTL %s)", second, first, took, ttl)
		// The dead one comes back on a new connection, as a restart does.
		e.stop(first)
		db, err := postgres.Open(t.Context(), dbURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs[first] = db
		e.mu.Lock()
		delete(e.stops, first)
		e.mu.Unlock()
		e.contend(db, first)
		e.mu.Lock()
		holder := e.holder
		e.mu.Unlock()
		if holder != second {
			t.Fatalf("the lease moved from %s to %s when %s came back", second, holder, first)
		}
	}
}
