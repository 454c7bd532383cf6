// Package testkit holds what the tests of several packages share: a buffer
// that goroutines and child processes write while a test reads it, and
// waiting for a condition with a deadline in place of sleeping. Only tests
// import it.
package testkit

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// SyncBuffer is an output (a log, a command's stdout) that a test may read
// while others write to it. The zero value is ready to use.
type SyncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	written chan struct{}
}

// NewSyncBuffer returns an empty SyncBuffer.
func NewSyncBuffer() *SyncBuffer { return &SyncBuffer{} }

// wakeLocked is the channel signalled (without blocking) after each
// write; the caller holds mu.
func (b *SyncBuffer) wakeLocked() chan struct{} {
	if b.written == nil {
		b.written = make(chan struct{}, 1)
	}
	return b.written
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case b.wakeLocked() <- struct{}{}:
	default:
	}
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WaitFor waits until s has been written, woken by each write, and fails
// the test after timeout.
func (b *SyncBuffer) WaitFor(t testing.TB, s string, timeout time.Duration) {
	t.Helper()
	b.mu.Lock()
	wake := b.wakeLocked()
	b.mu.Unlock()
	deadline := time.After(timeout)
	for !strings.Contains(b.String(), s) {
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("%q was not written within %s; got:\n%s", s, timeout, b.String())
		}
	}
}

// Eventually checks cond until it holds, every few milliseconds, and fails
// the test with what (and its args) if it does not within timeout. It is
// for conditions nothing signals: an exit, a file, another process's state.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, what string, args ...any) {
	t.Helper()
	if !Within(timeout, cond) {
		t.Fatalf("not within %s: "+what, append([]any{timeout}, args...)...)
	}
}

// EventuallyEvery is Eventually checking cond every interval: for a cond
// that is costly to check, such as one that runs a command.
func EventuallyEvery(t testing.TB, timeout, interval time.Duration, cond func() bool, what string, args ...any) {
	t.Helper()
	if !WithinEvery(timeout, interval, cond) {
		t.Fatalf("not within %s: "+what, append([]any{timeout}, args...)...)
	}
}

// Within checks cond until it holds (true) or timeout passes (false).
func Within(timeout time.Duration, cond func() bool) bool {
	return WithinEvery(timeout, 10*time.Millisecond, cond)
}

// WithinEvery is Within checking cond every interval.
func WithinEvery(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// ClosedAddr is a loopback host:port where nothing listens: connecting to
// it is refused, as connecting to a stopped server is.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Succeeds calls try until it returns nil, every few milliseconds, and
// fails the test with what (and its args) and try's last error if it does
// not within timeout: for conditions whose failure says why, such as a
// call that is refused until a server is ready.
func Succeeds(t testing.TB, timeout time.Duration, try func() error, what string, args ...any) {
	t.Helper()
	var err error
	if !Within(timeout, func() bool { err = try(); return err == nil }) {
		t.Fatalf("not within %s: "+what+": %v", append(append([]any{timeout}, args...), err)...)
	}
}
