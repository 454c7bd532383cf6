package testkit

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitForWakesOnWrite(t *testing.T) {
	var b SyncBuffer
	go func() {
		for i := range 50 {
			fmt.Fprintf(&b, "line %d\n", i)
		}
	}()
	b.WaitFor(t, "line 49\n", 10*time.Second)
}

func TestWithin(t *testing.T) {
	var n atomic.Int32
	if !Within(5*time.Second, func() bool { return n.Add(1) >= 3 }) {
		t.Fatal("a condition that comes true was not seen")
	}
	start := time.Now()
	if Within(50*time.Millisecond, func() bool { return false }) {
		t.Fatal("a condition that never holds was reported as holding")
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 5*time.Second {
		t.Fatalf("Within gave up after %s, want about 50ms", d)
	}
}

// fatalRecorder records a Fatalf instead of ending the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
}

func TestSucceeds(t *testing.T) {
	var n atomic.Int32
	Succeeds(t, 5*time.Second, func() error {
		if n.Add(1) < 3 {
			return fmt.Errorf("try %d refused", n.Load())
		}
		return nil
	}, "never accepted")
	if n.Load() != 3 {
		t.Fatalf("tried %d times, want 3", n.Load())
	}
	r := &fatalRecorder{TB: t}
	Succeeds(r, 30*time.Millisecond, func() error { return fmt.Errorf("still refused") }, "the %s never answered", "server")
	if want := "not within 30ms: the server never answered: still refused"; r.msg != want {
		t.Fatalf("failure message %q, want %q", r.msg, want)
	}
}

func TestWithinEveryKeepsItsInterval(t *testing.T) {
	var n atomic.Int32
	start := time.Now()
	if !WithinEvery(5*time.Second, 100*time.Millisecond, func() bool { return n.Add(1) >= 3 }) {
		t.Fatal("a condition that comes true was not seen")
	}
	// Three checks: at once, then two intervals later.
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("three checks took %s, want at least two 100ms intervals", d)
	}
}
