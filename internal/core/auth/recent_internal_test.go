package auth

import (
	"context"
	"testing"
	"time"
)

func claimed(t *testing.T, r *recentIDs, ids ...string) []*idState {
	t.Helper()
	c, err := r.claim(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func countClaimed(c []*idState) int {
	n := 0
	for _, st := range c {
		if st != nil {
			n++
		}
	}
	return n
}

func TestRecentIDs(t *testing.T) {
	r := newRecentIDs(3)
	ids := []string{"a", "b", "c", "b"}
	c := claimed(t, r, ids...)
	if countClaimed(c) != 3 || c[3] != nil {
		t.Fatalf("claims %v: want a, b, c once each", c)
	}
	r.finish(ids, c, true)
	if n := countClaimed(claimed(t, r, "a", "b", "c")); n != 0 {
		t.Fatalf("recorded ids claimed again (%d)", n)
	}
	// A fourth id pushes out the oldest.
	d := claimed(t, r, "d")
	r.finish([]string{"d"}, d, true)
	if n := countClaimed(claimed(t, r, "a")); n != 1 {
		t.Fatal("the oldest id is still remembered past the capacity")
	}

	// A failed write forgets its ids.
	r = newRecentIDs(10)
	x := claimed(t, r, "x")
	r.finish([]string{"x"}, x, false)
	if countClaimed(claimed(t, r, "x")) != 1 {
		t.Fatal("an id whose write failed cannot be claimed again")
	}

	// A second claim of an id being written waits for the write.
	y := claimed(t, r, "y")
	got := make(chan []*idState)
	go func() {
		c, _ := r.claim(context.Background(), []string{"y"})
		got <- c
	}()
	select {
	case <-got:
		t.Fatal("a claim of an id being written did not wait")
	case <-time.After(50 * time.Millisecond):
	}
	r.finish([]string{"y"}, y, true)
	if c := <-got; countClaimed(c) != 0 {
		t.Fatal("an id recorded while waited for was claimed again")
	}

	// Waiting ends with the caller's context, releasing what it claimed.
	z := claimed(t, r, "z")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := r.claim(ctx, []string{"w", "z"}); err == nil {
		t.Fatal("claim did not end with its context")
	}
	r.finish([]string{"z"}, z, true)
	if countClaimed(claimed(t, r, "w")) != 1 {
		t.Fatal("an id claimed by a call that gave up stays claimed")
	}
	// Attestations without an id are never dropped.
	if countClaimed(claimed(t, r, "", "")) != 2 {
		t.Fatal("attestations without an id were dropped")
	}
}
