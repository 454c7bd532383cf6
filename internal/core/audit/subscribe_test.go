package audit_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/audit"
)

// recv reads one event, failing the test rather than hanging if none comes.
func recv(t *testing.T, ch <-chan audit.Event) (audit.Event, bool) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		return ev, ok
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
		return audit.Event{}, false
	}
}

func TestSubscribeBacklogThenLiveWithoutGapOrDuplicate(t *testing.T) {
	tl := newTestLog(t)
	emitN(t, tl.Log, 100)

	const workers, each = 8, 40
	const last = 100 + workers*each
	var wg sync.WaitGroup
	begin := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			<-begin
			for i := range each {
				if _, err := tl.Emit(t.Context(), event(w*each+i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	// Subscribe while the emitters are writing, so that the backlog query
	// races with commits.
	close(begin)
	ch, err := tl.Subscribe(t.Context(), audit.Query{}, 20)
	if err != nil {
		t.Fatal(err)
	}
	first, ok := recv(t, ch)
	if !ok {
		t.Fatal("subscription closed at once")
	}
	if first.Seq < 81 {
		t.Fatalf("first event %d: backlog of 20 reached further back than the newest 20", first.Seq)
	}
	prev := first
	for prev.Seq < last {
		ev, ok := recv(t, ch)
		if !ok {
			t.Fatalf("subscription closed after event %d", prev.Seq)
		}
		if ev.Seq != prev.Seq+1 {
			t.Fatalf("event %d followed event %d", ev.Seq, prev.Seq)
		}
		if ev.PrevHash != prev.Hash || ev.Hash == "" {
			t.Fatalf("event %d does not carry its chain fields", ev.Seq)
		}
		prev = ev
	}
	wg.Wait()
}

func TestSubscribeFilters(t *testing.T) {
	tl := newTestLog(t)
	emitN(t, tl.Log, 9) // seq 1..9; bot.join at 3, 6, 9
	q := audit.Query{Types: []string{audit.TypeJoin}, AfterSeq: 3}
	ch, err := tl.Subscribe(t.Context(), q, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []int64{6, 9} {
		if ev, _ := recv(t, ch); ev.Seq != want || ev.Type != audit.TypeJoin {
			t.Fatalf("backlog event = %d %s, want %d", ev.Seq, ev.Type, want)
		}
	}
	// Live: 10..15, of which 12 and 15 are joins.
	emitFrom(t, tl.Log, 9, 6)
	for _, want := range []int64{12, 15} {
		if ev, _ := recv(t, ch); ev.Seq != want || ev.Type != audit.TypeJoin {
			t.Fatalf("live event = %d %s, want %d", ev.Seq, ev.Type, want)
		}
	}
}

// emitFrom emits event(from) .. event(from+n-1).
func emitFrom(t *testing.T, l *audit.Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := l.Emit(t.Context(), event(i)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSubscribeBacklogModes(t *testing.T) {
	tl := newTestLog(t)
	emitN(t, tl.Log, 5)

	// backlog 0: live only.
	liveOnly, err := tl.Subscribe(t.Context(), audit.Query{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Resuming after event 2, with backlog 0 or < 0, gets 3, 4, 5 then live.
	resumed, err := tl.Subscribe(t.Context(), audit.Query{AfterSeq: 2}, 0)
	if err != nil {
		t.Fatal(err)
	}
	resumedAll, err := tl.Subscribe(t.Context(), audit.Query{AfterSeq: 2}, -1)
	if err != nil {
		t.Fatal(err)
	}
	// backlog < 0 without AfterSeq: everything.
	everything, err := tl.Subscribe(t.Context(), audit.Query{}, -1)
	if err != nil {
		t.Fatal(err)
	}
	// backlog > 0 with AfterSeq: the newest 2 after event 2.
	capped, err := tl.Subscribe(t.Context(), audit.Query{AfterSeq: 2}, 2)
	if err != nil {
		t.Fatal(err)
	}
	emitFrom(t, tl.Log, 5, 1) // seq 6
	for name, c := range map[string]struct {
		ch   <-chan audit.Event
		want []int64
	}{
		"live only":           {liveOnly, []int64{6}},
		"resumed, backlog 0":  {resumed, []int64{3, 4, 5, 6}},
		"resumed, backlog -1": {resumedAll, []int64{3, 4, 5, 6}},
		"everything":          {everything, []int64{1, 2, 3, 4, 5, 6}},
		"capped":              {capped, []int64{4, 5, 6}},
	} {
		for _, want := range c.want {
			if ev, _ := recv(t, c.ch); ev.Seq != want {
				t.Fatalf("%s: got event %d, want %d", name, ev.Seq, want)
			}
		}
	}
}

func TestSubscribeClosesOnContext(t *testing.T) {
	tl := newTestLog(t)
	ctx, cancel := context.WithCancel(t.Context())
	ch, err := tl.Subscribe(ctx, audit.Query{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, ok := recv(t, ch); ok {
		t.Fatal("received an event after cancel, want a closed channel")
	}
	// The log carries on for others.
	emitN(t, tl.Log, 1)
}

func TestSubscribeClosesWhenLogStops(t *testing.T) {
	tl := newTestLog(t)
	ch, err := tl.Subscribe(t.Context(), audit.Query{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	tl.stop()
	if _, ok := recv(t, ch); ok {
		t.Fatal("received an event, want a closed channel")
	}
}

// TestSlowSubscriberIsDropped checks that a subscriber that stops reading
// does not hold up Emit, and that its channel closes after delivering what
// was buffered, in order, so that it can resume from the last seq.
func TestSlowSubscriberIsDropped(t *testing.T) {
	tl := newTestLog(t)
	slow, err := tl.Subscribe(t.Context(), audit.Query{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	const total = 1500
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < total; i += 32 {
				if _, err := tl.Emit(t.Context(), event(i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait() // every Emit returned although nobody reads slow

	var lastSeq int64
	n := 0
	for {
		ev, ok := recv(t, slow)
		if !ok {
			break
		}
		n++
		if ev.Seq != lastSeq+1 {
			t.Fatalf("event %d after %d", ev.Seq, lastSeq)
		}
		lastSeq = ev.Seq
	}
	if n == 0 || n >= total {
		t.Fatalf("slow subscriber got %d of %d events before its channel closed, want some but not all", n, total)
	}

	resumed, err := tl.Subscribe(t.Context(), audit.Query{AfterSeq: lastSeq}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for want := lastSeq + 1; want <= total; want++ {
		if ev, _ := recv(t, resumed); ev.Seq != want {
			t.Fatalf("resumed at %d, got %d", want, ev.Seq)
		}
	}
}
