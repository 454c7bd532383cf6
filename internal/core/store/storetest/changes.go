package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/store"
)

// changes reads the whole log after after, page by page.
func changes(t *testing.T, b store.Backend, after int64) []store.Change {
	t.Helper()
	var out []store.Change
	for {
		page, err := b.ChangesAfter(t.Context(), after, 7)
		if err != nil {
			t.Fatalf("ChangesAfter(%d): %v", after, err)
		}
		out = append(out, page...)
		if len(page) < 7 {
			return out
		}
		after = page[len(page)-1].Revision
	}
}

func describeChanges(cs []store.Change) string {
	s := ""
	for _, c := range cs {
		s += fmt.Sprintf(" %s:%s/%s", store.OpName(c.Op), c.Kind, c.Name)
	}
	return s
}

func wantHeadRevision(t *testing.T, b store.Backend, want int64) {
	t.Helper()
	head, err := b.ChangeHead(t.Context())
	if err != nil {
		t.Fatalf("ChangeHead: %v", err)
	}
	if head != want {
		t.Fatalf("ChangeHead = %d, want %d", head, want)
	}
}

func testChangeLogOrder(t *testing.T, b store.Backend) {
	wantHeadRevision(t, b, 0)
	if cs := changes(t, b, 0); len(cs) != 0 {
		t.Fatalf("an empty store has changes:%s", describeChanges(cs))
	}
	start := time.Now()
	apply(t, b, store.Op{Type: store.OpCreate, Item: item("role", "web", "1")})
	apply(t, b,
		store.Op{Type: store.OpUpdate, Item: item("role", "web", "2")},
		store.Op{Type: store.OpUpsert, Item: item("bot", "b", "1")},
	)
	apply(t, b, store.Op{Type: store.OpUpsert, Item: item("bot", "b", "2")})
	apply(t, b, store.Op{Type: store.OpDelete, Item: store.Item{Kind: "role", Name: "web"}})
	// The same item twice in one Apply is two changes.
	apply(t, b,
		store.Op{Type: store.OpCreate, Item: item("role", "web", "3")},
		store.Op{Type: store.OpUpdate, Item: item("role", "web", "4")},
	)

	cs := changes(t, b, 0)
	want := " create:role/web update:role/web create:bot/b update:bot/b delete:role/web create:role/web update:role/web"
	if got := describeChanges(cs); got != want {
		t.Fatalf("change log =%s\nwant%s", got, want)
	}
	for i, c := range cs {
		if i > 0 && c.Revision <= cs[i-1].Revision {
			t.Fatalf("change %d has revision %d after %d: revisions must grow", i, c.Revision, cs[i-1].Revision)
		}
		if c.Time.Before(start.Add(-time.Minute)) || c.Time.After(time.Now().Add(time.Minute)) {
			t.Fatalf("change %d was recorded at %v, not around %v", i, c.Time, start)
		}
	}
	head := cs[len(cs)-1].Revision
	wantHeadRevision(t, b, head)
	if rest := changes(t, b, head); len(rest) != 0 {
		t.Fatalf("changes after the head:%s", describeChanges(rest))
	}
	if got := describeChanges(changes(t, b, cs[3].Revision)); got != " delete:role/web create:role/web update:role/web" {
		t.Fatalf("changes after the fourth =%s", got)
	}
}

func testChangeLogAtomic(t *testing.T, b store.Backend) {
	ctx := t.Context()
	apply(t, b, store.Op{Type: store.OpCreate, Item: item("role", "existing", "x")})
	head, err := b.ChangeHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Each fails on its last op, after the first took effect inside the
	// transaction.
	for _, ops := range [][]store.Op{
		{{Type: store.OpCreate, Item: item("role", "new", "x")}, {Type: store.OpCreate, Item: item("role", "existing", "x")}},
		{{Type: store.OpUpdate, Item: item("role", "existing", "y")}, {Type: store.OpDelete, Item: store.Item{Kind: "role", Name: "ghost"}}},
		{{Type: store.OpUpsert, Item: item("role", "new", "x")}, {Type: store.OpUpdate, Item: item("role", "existing", "z"), ExpectRevision: 9}},
	} {
		if _, err := b.Apply(ctx, ops...); err == nil {
			t.Fatalf("Apply(%v) succeeded, want a failure", ops)
		}
		wantHeadRevision(t, b, head)
		if cs := changes(t, b, head); len(cs) != 0 {
			t.Fatalf("a failed Apply left changes:%s", describeChanges(cs))
		}
	}
	apply(t, b, store.Op{Type: store.OpCreate, Item: item("role", "new", "x")})
	if got := describeChanges(changes(t, b, head)); got != " create:role/new" {
		t.Fatalf("changes after a failed and a good Apply =%s, want only the good one's", got)
	}
}

func testChangeLogPaging(t *testing.T, b store.Backend) {
	ctx := t.Context()
	ops := make([]store.Op, store.MaxChangesPage+5)
	for i := range ops {
		ops[i] = store.Op{Type: store.OpCreate, Item: item("own", fmt.Sprintf("i%04d", i), "x")}
	}
	apply(t, b, ops...)
	for _, limit := range []int{0, -1, store.MaxChangesPage + 100} {
		page, err := b.ChangesAfter(ctx, 0, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) != store.MaxChangesPage {
			t.Fatalf("ChangesAfter with limit %d returned %d changes, want the page bound %d", limit, len(page), store.MaxChangesPage)
		}
	}
	var all []store.Change
	var after int64
	for {
		page, err := b.ChangesAfter(ctx, after, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 100 {
			t.Fatalf("a page of limit 100 has %d changes", len(page))
		}
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
		after = page[len(page)-1].Revision
	}
	if len(all) != len(ops) {
		t.Fatalf("paging read %d changes, want %d", len(all), len(ops))
	}
	for i, c := range all {
		if want := fmt.Sprintf("i%04d", i); c.Name != want || c.Op != store.OpCreate {
			t.Fatalf("change %d is %s %s, want create %s: the log keeps the ops' order", i, store.OpName(c.Op), c.Name, want)
		}
	}
}

func testChangeLogPrune(t *testing.T, b store.Backend) {
	ctx := t.Context()
	future := time.Now().Add(time.Hour)
	if n, err := b.PruneChanges(ctx, 0, future, 10); err != nil || n != 0 {
		t.Fatalf("pruning an empty log = %d, %v; want 0, nil", n, err)
	}
	for i := range 20 {
		apply(t, b, store.Op{Type: store.OpUpsert, Item: item("own", fmt.Sprint(i), "x")})
	}
	cs := changes(t, b, 0)
	head := cs[19].Revision

	// Nothing older than a time in the past: nothing goes.
	if n, err := b.PruneChanges(ctx, 0, time.Now().Add(-time.Hour), 100); err != nil || n != 0 {
		t.Fatalf("pruning changes older than an hour ago = %d, %v; want 0, nil", n, err)
	}
	// At most limit go, oldest first.
	if n, err := b.PruneChanges(ctx, 5, future, 10); err != nil || n != 10 {
		t.Fatalf("PruneChanges(keep 5, limit 10) = %d, %v; want 10, nil", n, err)
	}
	// A follower that read the last pruned change has missed nothing.
	if got := changes(t, b, cs[9].Revision); len(got) != 10 || got[0].Revision != cs[10].Revision {
		t.Fatalf("changes after the last pruned one =%s, want the 10 kept", describeChanges(got))
	}
	// One behind it has.
	for _, after := range []int64{0, cs[8].Revision} {
		if _, err := b.ChangesAfter(ctx, after, 10); !errors.Is(err, store.ErrChangesPruned) {
			t.Fatalf("ChangesAfter(%d) after pruning error = %v, want ErrChangesPruned", after, err)
		}
	}
	// The newest keep stay.
	if n, err := b.PruneChanges(ctx, 5, future, 100); err != nil || n != 5 {
		t.Fatalf("second PruneChanges(keep 5) = %d, %v; want 5, nil", n, err)
	}
	if n, err := b.PruneChanges(ctx, 5, future, 100); err != nil || n != 0 {
		t.Fatalf("third PruneChanges(keep 5) = %d, %v; want 0, nil", n, err)
	}
	if got := changes(t, b, cs[14].Revision); len(got) != 5 {
		t.Fatalf("after pruning to 5 the log holds%s", describeChanges(got))
	}
	// keep 0 still keeps the newest, and the head survives pruning.
	if n, err := b.PruneChanges(ctx, 0, future, 100); err != nil || n != 4 {
		t.Fatalf("PruneChanges(keep 0) = %d, %v; want 4, nil", n, err)
	}
	wantHeadRevision(t, b, head)
	if got := changes(t, b, head); len(got) != 0 {
		t.Fatalf("changes after the head:%s", describeChanges(got))
	}
	if _, err := b.ChangesAfter(ctx, cs[17].Revision, 10); !errors.Is(err, store.ErrChangesPruned) {
		t.Fatalf("ChangesAfter behind the pruned head error = %v, want ErrChangesPruned", err)
	}
	// Revisions go on from the head, never reused.
	apply(t, b, store.Op{Type: store.OpUpsert, Item: item("own", "next", "x")})
	next := changes(t, b, head)
	if len(next) != 1 || next[0].Revision <= head {
		t.Fatalf("the change after pruning =%s at %v, want one above %d", describeChanges(next), next, head)
	}
}

// testChangeLogFollower reads the log while writers commit concurrently:
// it must see every change exactly once, which fails if a revision can
// become visible after a higher one was read.
func testChangeLogFollower(t *testing.T, b store.Backend) {
	ctx := t.Context()
	const workers, perWorker = 8, 15
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				if _, err := b.Apply(ctx,
					store.Op{Type: store.OpCreate, Item: item("own", fmt.Sprintf("w%d-%d", w, i), "x")},
					store.Op{Type: store.OpUpsert, Item: item("last", fmt.Sprint(w), fmt.Sprint(i))},
				); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()

	wake, stop := b.WatchChanges()
	defer stop()
	seen := map[string]int{}
	var after int64
	deadline := time.After(30 * time.Second)
	for n := 0; n < 2*workers*perWorker; {
		page, err := b.ChangesAfter(ctx, after, 5)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range page {
			if c.Revision <= after {
				t.Fatalf("revision %d after %d", c.Revision, after)
			}
			after = c.Revision
			seen[c.Kind+"/"+c.Name]++
			n++
		}
		if len(page) > 0 {
			continue
		}
		select {
		case <-wake:
		case err := <-errs:
			t.Fatal(err)
		case <-deadline:
			t.Fatalf("the follower saw %d of %d changes", n, 2*workers*perWorker)
		}
	}
	<-done
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if rest := changes(t, b, after); len(rest) != 0 {
		t.Fatalf("changes past the expected count:%s", describeChanges(rest))
	}
	for w := range workers {
		for i := range perWorker {
			if k := fmt.Sprintf("own/w%d-%d", w, i); seen[k] != 1 {
				t.Fatalf("the follower saw %s %d times, want once", k, seen[k])
			}
		}
		if k := fmt.Sprintf("last/%d", w); seen[k] != perWorker {
			t.Fatalf("the follower saw %s %d times, want %d", k, seen[k], perWorker)
		}
	}
}

func testWatchChanges(t *testing.T, b store.Backend) {
	wake, stop := b.WatchChanges()
	other, stopOther := b.WatchChanges()
	defer stopOther()
	// Whatever the watch said on its start is read and done with.
	drain := func(ch <-chan struct{}) {
		for {
			select {
			case <-ch:
			case <-time.After(200 * time.Millisecond):
				return
			}
		}
	}
	drain(wake)
	drain(other)
	apply(t, b, store.Op{Type: store.OpCreate, Item: item("role", "web", "x")})
	for name, ch := range map[string]<-chan struct{}{"first": wake, "second": other} {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("the %s watcher was not woken by an Apply", name)
		}
	}
	stop()
	stop() // twice is harmless
	apply(t, b, store.Op{Type: store.OpCreate, Item: item("role", "api", "x")})
	select {
	case <-other:
	case <-time.After(10 * time.Second):
		t.Fatal("a watcher was not woken after another stopped")
	}
}
