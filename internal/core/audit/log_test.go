package audit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/store"
	"github.com/wid-project/wid/internal/core/store/sqlite"
)

// testLog is a Log on a temporary SQLite file with its writer running.
type testLog struct {
	*audit.Log
	db   *sqlite.DB
	path string
	stop func() // stops Run and waits for it to return
}

func openDB(t testing.TB, path string) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func newTestLog(t testing.TB) *testLog {
	t.Helper()
	path := filepath.Join(t.TempDir(), "wid.db")
	db := openDB(t, path)
	tl := startLog(t, db)
	tl.path = path
	t.Cleanup(func() {
		tl.stop()
		if err := db.Close(); err != nil {
			t.Errorf("closing database: %v", err)
		}
	})
	return tl
}

// startLog opens a Log on b and runs its writer until stop is called.
func startLog(t testing.TB, b store.Backend) *testLog {
	t.Helper()
	l, err := audit.Open(context.Background(), b, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	db, _ := b.(*sqlite.DB)
	return &testLog{Log: l, db: db, stop: stop}
}

func event(i int) audit.Event {
	return audit.Event{
		Type:     []string{audit.TypeX509SVIDIssued, audit.TypeSVIDDenied, audit.TypeJoin}[i%3],
		Actor:    fmt.Sprintf("bot:agent-%d", i%4),
		SPIFFEID: fmt.Sprintf("spiffe://example.org/svc/%d", i%5),
		Outcome:  []string{audit.OutcomeSuccess, audit.OutcomeDenied}[i%2],
		Reason:   fmt.Sprintf("reason %d", i),
		DNSSANs:  []string{"a.example.org"},
		Attributes: map[string]string{
			"workload.unix.uid": fmt.Sprint(1000 + i),
		},
	}
}

func emitN(t testing.TB, l *audit.Log, n int) []audit.Event {
	t.Helper()
	out := make([]audit.Event, n)
	for i := range n {
		ev, err := l.Emit(context.Background(), event(i))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = ev
	}
	return out
}

func wantClean(t *testing.T, l *audit.Log, events int64) audit.Report {
	t.Helper()
	rep, err := l.Verify(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("Verify found problems in an untouched log: %+v", rep.Problems)
	}
	if rep.Events != events {
		t.Fatalf("Verify checked %d events, want %d", rep.Events, events)
	}
	return rep
}

func TestHashRowCoversEveryColumn(t *testing.T) {
	base := store.AuditRow{
		Seq:      7,
		Time:     time.Date(2030, 1, 1, 0, 0, 0, 5, time.UTC),
		Type:     "svid.x509.issued",
		Actor:    "bot:a",
		SPIFFEID: "spiffe://example.org/svc/web",
		Outcome:  "success",
		Data:     []byte(`{"x":1}`),
		PrevHash: "abc",
		Hash:     "ignored",
	}
	h := audit.HashRow(base)
	if len(h) != 64 {
		t.Fatalf("hash %q is not hex SHA-256", h)
	}
	same := base
	same.Hash = "something else"
	same.Time = base.Time.In(time.FixedZone("E", 3600))
	if audit.HashRow(same) != h {
		t.Fatal("hash depends on the Hash field or on the time zone of the same instant")
	}
	edits := map[string]func(r *store.AuditRow){
		"seq":       func(r *store.AuditRow) { r.Seq++ },
		"time":      func(r *store.AuditRow) { r.Time = r.Time.Add(time.Nanosecond) },
		"type":      func(r *store.AuditRow) { r.Type += "x" },
		"actor":     func(r *store.AuditRow) { r.Actor = "bot:b" },
		"spiffe_id": func(r *store.AuditRow) { r.SPIFFEID = "" },
		"outcome":   func(r *store.AuditRow) { r.Outcome = "denied" },
		"data":      func(r *store.AuditRow) { r.Data = []byte(`{"x":2}`) },
		"prev_hash": func(r *store.AuditRow) { r.PrevHash = "abd" },
		// Moving bytes across a column boundary must not collide.
		"boundary": func(r *store.AuditRow) { r.Type, r.Actor = "svid.x509.issuedb", "ot:a" },
	}
	for name, edit := range edits {
		r := base
		edit(&r)
		if audit.HashRow(r) == h {
			t.Errorf("editing %s left the hash unchanged", name)
		}
	}
}

func TestEmitFillsInAndStoresCanonicalData(t *testing.T) {
	tl := newTestLog(t)
	ctx := t.Context()

	before := time.Now()
	first, err := tl.Emit(ctx, event(0))
	if err != nil {
		t.Fatal(err)
	}
	if first.Seq != 1 || first.PrevHash != "" || first.Hash == "" {
		t.Fatalf("first event seq %d prev %q hash %q", first.Seq, first.PrevHash, first.Hash)
	}
	if first.Time.Location() != time.UTC || first.Time.Before(before.Add(-time.Second)) || first.Time.After(time.Now().Add(time.Second)) {
		t.Fatalf("Time = %v, want about now in UTC", first.Time)
	}

	at := time.Date(2031, 5, 6, 7, 8, 9, 123, time.FixedZone("Z5", 5*3600))
	ev := event(1)
	ev.Time = at
	ev.Seq, ev.Hash = 99, "caller-made"
	second, err := tl.Emit(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	if second.Seq != 2 || second.PrevHash != first.Hash || !second.Time.Equal(at) || second.Time.Location() != time.UTC {
		t.Fatalf("second event = seq %d prev %q time %v", second.Seq, second.PrevHash, second.Time)
	}

	rows, err := tl.db.QueryAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("%d rows stored, want 2", len(rows))
	}
	r := rows[1]
	if r.Hash != second.Hash || audit.HashRow(r) != r.Hash {
		t.Fatalf("stored hash %q, returned %q, derived %q", r.Hash, second.Hash, audit.HashRow(r))
	}
	if r.Type != second.Type || r.Actor != second.Actor || r.SPIFFEID != second.SPIFFEID || r.Outcome != second.Outcome {
		t.Fatalf("indexed columns %+v do not match the event", r)
	}
	var raw map[string]any
	if err := json.Unmarshal(r.Data, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["seq"] != 0.0 || raw["hash"] != nil || raw["prev_hash"] != nil {
		t.Fatalf("stored data carries chain fields: %s", r.Data)
	}

	got, err := tl.Query(ctx, audit.Query{})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []audit.Event{first, second} {
		a, _ := json.Marshal(got[i])
		b, _ := json.Marshal(want)
		if string(a) != string(b) {
			t.Fatalf("Query returned\n%s\nwant\n%s", a, b)
		}
	}
}

func TestEmitRejectsIncompleteEvents(t *testing.T) {
	tl := newTestLog(t)
	for _, ev := range []audit.Event{{Outcome: audit.OutcomeSuccess}, {Type: audit.TypeJoin}} {
		if _, err := tl.Emit(t.Context(), ev); err == nil {
			t.Fatalf("Emit(%+v) succeeded", ev)
		}
	}
	wantClean(t, tl.Log, 0)
}

func TestConcurrentEmit(t *testing.T) {
	tl := newTestLog(t)
	const workers, each = 16, 40
	var mu sync.Mutex
	var got []audit.Event
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				ev, err := tl.Emit(t.Context(), event(w*each+i))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				got = append(got, ev)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	slices.SortFunc(got, func(a, b audit.Event) int { return int(a.Seq - b.Seq) })
	for i, ev := range got {
		if ev.Seq != int64(i+1) {
			t.Fatalf("returned seqs are not 1..%d: position %d has %d", len(got), i, ev.Seq)
		}
		if i > 0 && ev.PrevHash != got[i-1].Hash {
			t.Fatalf("event %d does not link to event %d", ev.Seq, got[i-1].Seq)
		}
	}
	rep := wantClean(t, tl.Log, workers*each)
	if rep.HeadHash != got[len(got)-1].Hash {
		t.Fatalf("head hash %s, last returned %s", rep.HeadHash, got[len(got)-1].Hash)
	}
}

func TestQuery(t *testing.T) {
	tl := newTestLog(t)
	ctx := t.Context()
	all := emitN(t, tl.Log, 12)
	seqs := func(q audit.Query) string {
		t.Helper()
		evs, err := tl.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, ev := range evs {
			s = append(s, fmt.Sprint(ev.Seq))
		}
		return strings.Join(s, ",")
	}
	cases := []struct {
		name string
		q    audit.Query
		want string
	}{
		{"all", audit.Query{}, "1,2,3,4,5,6,7,8,9,10,11,12"},
		{"type", audit.Query{Types: []string{audit.TypeJoin}}, "3,6,9,12"},
		{"actor", audit.Query{Actor: "bot:agent-1"}, "2,6,10"},
		{"spiffe id", audit.Query{SPIFFEID: "spiffe://example.org/svc/0"}, "1,6,11"},
		{"outcome", audit.Query{Outcome: audit.OutcomeDenied}, "2,4,6,8,10,12"},
		{"since", audit.Query{Since: all[9].Time}, "10,11,12"},
		{"until", audit.Query{Until: all[2].Time}, "1,2"},
		{"after seq", audit.Query{AfterSeq: 10}, "11,12"},
		{"newest 2 denied", audit.Query{Outcome: audit.OutcomeDenied, Limit: 2}, "10,12"},
	}
	for _, tc := range cases {
		if got := seqs(tc.q); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestChainContinuesAcrossRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wid.db")
	db := openDB(t, path)
	tl := startLog(t, db)
	emitN(t, tl.Log, 5)
	tl.stop()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = openDB(t, path)
	defer db.Close()
	tl = startLog(t, db)
	defer tl.stop()
	evs := emitN(t, tl.Log, 5)
	if evs[0].Seq != 6 {
		t.Fatalf("first event after restart has seq %d, want 6", evs[0].Seq)
	}
	wantClean(t, tl.Log, 10)
}

func TestStoppedLogRefuses(t *testing.T) {
	tl := newTestLog(t)
	emitN(t, tl.Log, 1)
	tl.stop()

	if _, err := tl.Emit(t.Context(), event(0)); !errors.Is(err, audit.ErrStopped) {
		t.Fatalf("Emit after stop: %v, want ErrStopped", err)
	}
	if _, err := tl.Subscribe(t.Context(), audit.Query{}, 0); !errors.Is(err, audit.ErrStopped) {
		t.Fatalf("Subscribe after stop: %v, want ErrStopped", err)
	}
	if err := tl.Run(t.Context()); err == nil {
		t.Fatal("Run after stop succeeded")
	}
	wantClean(t, tl.Log, 1)
}

func TestRunTwiceFails(t *testing.T) {
	tl := newTestLog(t)
	emitN(t, tl.Log, 1) // Run is certainly running once an event is in
	if err := tl.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second Run: %v", err)
	}
}

func TestEmitBeforeRunWaitsForIt(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "wid.db"))
	defer db.Close()
	l, err := audit.Open(t.Context(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		_, err := l.Emit(t.Context(), event(0))
		res <- err
	}()
	ctx, cancel := context.WithCancel(t.Context())
	runDone := make(chan error, 1)
	go func() { runDone <- l.Run(ctx) }()
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	wantClean(t, l, 1)
}

// TestStopUnderLoad stops the writer while emitters are busy: each Emit
// either succeeds, and its event is in the log, or fails with ErrStopped;
// none hangs.
func TestStopUnderLoad(t *testing.T) {
	tl := newTestLog(t)
	const workers = 16
	var mu sync.Mutex
	recorded := map[int64]bool{}
	started := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			signaled := false
			defer func() {
				if !signaled {
					started <- struct{}{}
				}
			}()
			for i := 0; ; i++ {
				ev, err := tl.Emit(t.Context(), event(w*1000+i))
				if errors.Is(err, audit.ErrStopped) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				recorded[ev.Seq] = true
				mu.Unlock()
				if i == 2 {
					signaled = true
					started <- struct{}{}
				}
			}
		})
	}
	for range workers {
		<-started
	}
	tl.stop()
	wg.Wait()

	evs, err := tl.Query(t.Context(), audit.Query{})
	if err != nil {
		t.Fatal(err)
	}
	stored := map[int64]bool{}
	for _, ev := range evs {
		stored[ev.Seq] = true
	}
	for seq := range recorded {
		if !stored[seq] {
			t.Fatalf("Emit returned event %d but it is not stored", seq)
		}
	}
	wantClean(t, tl.Log, int64(len(evs)))
}

// flakyBackend fails chosen AppendAudit calls, before or after committing.
type flakyBackend struct {
	store.Backend
	mu sync.Mutex
	// failBefore and failAfter count down the appends to fail.
	failBefore, failAfter int
}

func (f *flakyBackend) AppendAudit(ctx context.Context, rows []store.AuditRow) error {
	f.mu.Lock()
	before, after := f.failBefore > 0, f.failBefore == 0 && f.failAfter > 0
	if before {
		f.failBefore--
	} else if after {
		f.failAfter--
	}
	f.mu.Unlock()
	if before {
		return errors.New("disk full")
	}
	err := f.Backend.AppendAudit(ctx, rows)
	if after && err == nil {
		return errors.New("i/o error reading commit status")
	}
	return err
}

func TestFailedCommitFailsOnlyItsBatch(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "wid.db"))
	defer db.Close()
	fb := &flakyBackend{Backend: db, failBefore: 1}
	tl := startLog(t, fb)
	defer tl.stop()

	if _, err := tl.Emit(t.Context(), event(0)); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Emit during a failing commit: %v", err)
	}
	ev, err := tl.Emit(t.Context(), event(1))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Seq != 1 {
		t.Fatalf("event after a failed commit has seq %d, want 1", ev.Seq)
	}
	wantClean(t, tl.Log, 1)
}

func TestCommitWithUnknownOutcomeIsSettledByHead(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "wid.db"))
	defer db.Close()
	fb := &flakyBackend{Backend: db, failAfter: 1}
	tl := startLog(t, fb)
	defer tl.stop()

	if _, err := tl.Emit(t.Context(), event(0)); err != nil {
		t.Fatalf("Emit whose commit landed but reported an error: %v", err)
	}
	ev, err := tl.Emit(t.Context(), event(1))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Seq != 2 {
		t.Fatalf("next seq = %d, want 2", ev.Seq)
	}
	wantClean(t, tl.Log, 2)
}

// headMover appends a foreign row (as a second writer would) just before
// the Log's first append.
type headMover struct {
	store.Backend
	once sync.Once
}

func (h *headMover) AppendAudit(ctx context.Context, rows []store.AuditRow) error {
	var err error
	h.once.Do(func() {
		r := store.AuditRow{Seq: 1, Time: time.Now(), Type: "other.writer", Outcome: audit.OutcomeSuccess, Data: []byte(`{}`)}
		// Data that decodes to the same columns, so Verify accepts it.
		r.Data, _ = json.Marshal(audit.Event{Time: r.Time.UTC(), Type: r.Type, Outcome: r.Outcome})
		r.Hash = audit.HashRow(r)
		err = h.Backend.AppendAudit(ctx, []store.AuditRow{r})
	})
	if err != nil {
		return err
	}
	return h.Backend.AppendAudit(ctx, rows)
}

// TestRechainsWhenAnotherWriterMovedTheHead: the first batch was chained on
// a head that another writer has since moved; it is re-chained after the
// other writer's event instead of failing.
func TestRechainsWhenAnotherWriterMovedTheHead(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "wid.db"))
	defer db.Close()
	tl := startLog(t, &headMover{Backend: db})
	defer tl.stop()
	ev, err := tl.Emit(t.Context(), event(0))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Seq != 2 {
		t.Fatalf("event seq = %d, want 2 (after the other writer's)", ev.Seq)
	}
	wantClean(t, tl.Log, 2)
}
