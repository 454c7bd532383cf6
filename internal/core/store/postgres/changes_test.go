package postgres

import (
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/store"
	"github.com/wid-project/wid/internal/core/store/postgres/pgtest"
	"github.com/wid-project/wid/internal/testkit"
)

// listeners counts the change listeners connected to db's database.
func listeners(t *testing.T, db *DB) int {
	t.Helper()
	var n int
	if err := db.pool.QueryRow(t.Context(), `SELECT COUNT(*) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, listenerApplicationName).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitListeners(t *testing.T, db *DB, want int) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, func() bool { return listeners(t, db) == want },
		"the change listeners did not become %d", want)
}

func waitWake(t *testing.T, ch <-chan struct{}, what string) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-ch:
		return time.Since(start)
	case <-time.After(30 * time.Second):
		t.Fatalf("no wake-up within 30s %s", what)
	}
	return 0
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// TestChangesReachOtherProcesses: a commit through one DB wakes the
// watchers of another on the same database (NOTIFY), and a rolled-back
// Apply wakes no one.
func TestChangesReachOtherProcesses(t *testing.T) {
	dbURL := pgtest.Database(t)
	a, b := open(t, dbURL), open(t, dbURL)
	defer a.Close()
	defer b.Close()
	wake, stop := a.WatchChanges()
	defer stop()
	waitListeners(t, a, 1)
	waitWake(t, wake, "once the listener is in place")

	if _, err := b.Apply(t.Context(), store.Op{Type: store.OpCreate, Item: store.Item{Kind: "role", Name: "web", Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	took := waitWake(t, wake, "after another process's commit")
	t.Logf("woken %v after the other process's commit", took)
	cs, err := a.ChangesAfter(t.Context(), 0, 10)
	if err != nil || len(cs) != 1 || cs[0].Name != "web" {
		t.Fatalf("changes seen by the other process = %+v, %v", cs, err)
	}

	if _, err := b.Apply(t.Context(), store.Op{Type: store.OpUpdate, Item: store.Item{Kind: "role", Name: "ghost"}}); err == nil {
		t.Fatal("updating a missing item succeeded")
	}
	select {
	case <-wake:
		t.Fatal("a failed Apply woke another process")
	case <-time.After(300 * time.Millisecond):
	}
}

// TestListenerLossResyncs: when the listening connection is killed, a
// change committed while nothing listens still wakes the watchers, once the
// listener is back, and reads back from the log.
func TestListenerLossResyncs(t *testing.T) {
	dbURL := pgtest.Database(t)
	a, b := open(t, dbURL), open(t, dbURL)
	defer a.Close()
	defer b.Close()
	// A long pause before reconnecting leaves time to commit while no one
	// listens.
	a.listenRetry = time.Second
	wake, stop := a.WatchChanges()
	defer stop()
	waitListeners(t, a, 1)
	waitWake(t, wake, "once the listener is in place")

	for round := range 3 {
		if _, err := b.pool.Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1`, listenerApplicationName); err != nil {
			t.Fatal(err)
		}
		waitListeners(t, a, 0)
		drain(wake)
		head, err := a.ChangeHead(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Apply(t.Context(), store.Op{Type: store.OpUpsert, Item: store.Item{Kind: "role", Name: "web", Data: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
		if listeners(t, a) != 0 {
			t.Fatalf("round %d: the listener came back before the commit; the test proves nothing", round)
		}
		took := waitWake(t, wake, "after the listener came back")
		t.Logf("round %d: woken %v after a commit made while no one listened", round, took)
		cs, err := a.ChangesAfter(t.Context(), head, 10)
		if err != nil || len(cs) != 1 || cs[0].Name != "web" {
			t.Fatalf("round %d: changes after the resync = %+v, %v", round, cs, err)
		}
		if listeners(t, a) != 1 {
			t.Fatalf("round %d: %d listeners after the wake-up, want 1", round, listeners(t, a))
		}
	}
}

// TestCloseStopsListener: Close ends the listening connection.
func TestCloseStopsListener(t *testing.T) {
	dbURL := pgtest.Database(t)
	a, b := open(t, dbURL), open(t, dbURL)
	defer b.Close()
	_, stop := a.WatchChanges()
	defer stop()
	waitListeners(t, b, 1)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	waitListeners(t, b, 0)
}

// listenerPID is the backend pid of db's change listener.
func listenerPID(t *testing.T, db *DB) int {
	t.Helper()
	var pid int
	if err := db.pool.QueryRow(t.Context(), `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, listenerApplicationName).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestQuietListenerStaysConnected: the listener's periodic check of a quiet
// connection keeps that connection, and it still hears notifications.
func TestQuietListenerStaysConnected(t *testing.T) {
	dbURL := pgtest.Database(t)
	a, b := open(t, dbURL), open(t, dbURL)
	defer a.Close()
	defer b.Close()
	a.listenCheck = 50 * time.Millisecond
	wake, stop := a.WatchChanges()
	defer stop()
	waitListeners(t, a, 1)
	waitWake(t, wake, "once the listener is in place")
	pid := listenerPID(t, a)
	// Several checks pass.
	testkit.Eventually(t, 30*time.Second, func() bool { return a.listenChecks.Load() >= 5 },
		"the listener did not make 5 checks of its connection")
	if got := listenerPID(t, a); got != pid {
		t.Fatalf("the listener reconnected (pid %d, then %d) while the database was quiet", pid, got)
	}
	drain(wake)
	if _, err := b.Apply(t.Context(), store.Op{Type: store.OpCreate, Item: store.Item{Kind: "role", Name: "web", Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	waitWake(t, wake, "after the quiet spell")
	if got := listenerPID(t, a); got != pid {
		t.Fatalf("the listener reconnected (pid %d, then %d)", pid, got)
	}
}
