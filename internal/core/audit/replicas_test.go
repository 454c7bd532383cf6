package audit_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/store/postgres"
	"github.com/wid-project/wid/internal/core/store/postgres/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// openReplicaLogs opens n Logs on one PostgreSQL database, each with its
// own connection pool and writer, as n auth replicas have.
func openReplicaLogs(t *testing.T, dbURL string, n int) []*testLog {
	t.Helper()
	logs := make([]*testLog, n)
	for i := range logs {
		db, err := postgres.Open(t.Context(), dbURL)
		if err != nil {
			t.Fatal(err)
		}
		tl := startLog(t, db)
		t.Cleanup(func() {
			tl.stop()
			db.Close()
		})
		logs[i] = tl
	}
	return logs
}

// TestReplicasShareOneChain: three writers on one database, each with many
// concurrent callers (so each group-commits), interleave into one chain
// that verifies, holding every event exactly once.
func TestReplicasShareOneChain(t *testing.T) {
	dbURL := pgtest.Database(t)
	logs := openReplicaLogs(t, dbURL, 3)
	const callers, perCaller = 8, 25

	var wg sync.WaitGroup
	errs := make(chan error, len(logs)*callers)
	for r, l := range logs {
		for c := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perCaller {
					ev := event(i)
					ev.Reason = fmt.Sprintf("replica %d caller %d event %d", r, c, i)
					if _, err := l.Emit(context.Background(), ev); err != nil {
						errs <- fmt.Errorf("replica %d: %w", r, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	total := int64(len(logs) * callers * perCaller)
	for r, l := range logs {
		rep := wantClean(t, l.Log, total)
		if rep.HeadSeq != total {
			t.Fatalf("replica %d sees head %d, want %d", r, rep.HeadSeq, total)
		}
	}
	evs, err := logs[0].Query(t.Context(), audit.Query{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, ev := range evs {
		seen[ev.Reason]++
	}
	if len(seen) != int(total) {
		t.Fatalf("the log holds %d distinct events, want %d", len(seen), total)
	}
	for reason, n := range seen {
		if n != 1 {
			t.Fatalf("event %q is stored %d times", reason, n)
		}
	}
}

// TestReplicaWhoseConnectionsDieLosesAndDuplicatesNothing: one writer's
// database sessions are killed again and again while all three write, as
// when its process is killed or its network drops mid-commit. A commit
// cut off after it reached the database is found there and not written
// again; one cut off before is re-chained or reported failed. The chain
// verifies and holds each event once, every event whose Emit succeeded
// among them.
func TestReplicaWhoseConnectionsDieLosesAndDuplicatesNothing(t *testing.T) {
	name, dbURL := pgtest.NamedDatabase(t)
	srv := pgtest.Shared(t)
	logs := []*testLog{
		openReplicaLogs(t, dbURL+"&application_name=victim", 1)[0],
		openReplicaLogs(t, dbURL, 1)[0],
		openReplicaLogs(t, dbURL, 1)[0],
	}
	const callers, perCaller = 6, 30

	stopKilling := make(chan struct{})
	killerDone := make(chan int)
	go func() {
		kills := 0
		defer func() { killerDone <- kills }()
		for {
			select {
			case <-stopKilling:
				return
			default:
			}
			err := srv.Exec(context.Background(), name,
				`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'victim' AND datname = $1`, name)
			if err == nil {
				kills++
			}
		}
	}()

	var (
		wg sync.WaitGroup
		mu sync.Mutex
		ok = map[string]bool{}
	)
	for r, l := range logs {
		for c := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perCaller {
					ev := event(i)
					ev.Reason = fmt.Sprintf("replica %d caller %d event %d", r, c, i)
					_, err := l.Emit(context.Background(), ev)
					if err != nil && r != 0 {
						t.Errorf("replica %d, whose sessions live: %v", r, err)
					}
					mu.Lock()
					ok[ev.Reason] = err == nil
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	close(stopKilling)
	t.Logf("killed the victim's sessions %d times", <-killerDone)

	rep, err := logs[1].Verify(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("Verify found problems: %+v", rep.Problems)
	}
	evs, err := logs[1].Query(t.Context(), audit.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(evs)) != rep.Events {
		t.Fatalf("query returned %d events, Verify checked %d", len(evs), rep.Events)
	}
	stored := map[string]int{}
	for _, ev := range evs {
		stored[ev.Reason]++
	}
	failed := 0
	for reason, succeeded := range ok {
		switch n := stored[reason]; {
		case n > 1:
			t.Errorf("event %q is stored %d times", reason, n)
		case succeeded && n == 0:
			t.Errorf("event %q was acknowledged but is not stored", reason)
		case !succeeded:
			failed++
		}
	}
	t.Logf("%d events stored, %d emits failed on the victim", len(evs), failed)
}

// TestSubscriberSeesEveryReplicasEvents: a subscription on one writer
// streams the events of the others too, in seq order with no gap and no
// duplicate, whether or not its own writer commits meanwhile.
func TestSubscriberSeesEveryReplicasEvents(t *testing.T) {
	logs := openReplicaLogs(t, pgtest.Database(t), 3)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, err := logs[0].Subscribe(ctx, audit.Query{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 20
	var wg sync.WaitGroup
	for r, l := range logs {
		wg.Go(func() {
			for i := range rounds {
				// The subscriber's own writer commits only now and then.
				if r == 0 && i%5 != 0 {
					continue
				}
				ev := event(i)
				ev.Reason = fmt.Sprintf("replica %d event %d", r, i)
				if _, err := l.Emit(context.Background(), ev); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	want := int64(2*rounds + rounds/5)
	deadline := time.After(10 * time.Second)
	var last int64
	for last < want {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("the subscription closed after event %d", last)
			}
			if ev.Seq != last+1 {
				t.Fatalf("the subscription gave event %d after %d", ev.Seq, last)
			}
			last = ev.Seq
		case <-deadline:
			t.Fatalf("the subscription stopped at event %d of %d", last, want)
		}
	}
}
