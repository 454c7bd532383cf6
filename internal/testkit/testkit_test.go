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
