package agent

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// sendBounded sends one response on a stream, giving up when the client
// has not taken it within the stream send timeout. A stream's loop builds
// each response from the current state only once the previous one was
// taken, so changes made meanwhile are coalesced into the newest state;
// what bounds the memory of a client that never reads is gRPC's own
// per-stream queue (its 64 KB write quota, then one response waits here)
// plus this timeout, after which the stream is ended and its queue freed.
//
// The send runs on a goroutine of its own so that the wait can end; the
// caller must return (ending the stream, which unblocks that send) when
// sendBounded fails, and must not send again before then.
func (a *Agent) sendBounded(ctx context.Context, method string, send func() error) error {
	done := make(chan error, 1)
	go func() { done <- send() }()
	t := time.NewTimer(a.cfg.StreamSendTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return nil
	case <-t.C:
	}
	a.metrics.dropped.WithLabelValues(method).Inc()
	if n, ok := a.dropLog.allow(time.Now()); ok {
		a.logger.Warn("ended a stream whose client reads nothing", "rpc", method, "timeout", a.cfg.StreamSendTimeout,
			"ended_since_last_line", n, "metric", "wid_agent_streams_dropped_total")
	}
	return status.Errorf(codes.ResourceExhausted, "the stream was ended: the client read nothing for %s while an update waited", a.cfg.StreamSendTimeout)
}

// rateLog lets a repeated log line through at most once per interval
// (every, 5s when zero), counting the occurrences it held back.
type rateLog struct {
	every time.Duration
	mu    sync.Mutex
	last  time.Time
	held  int
}

// allow reports whether to log now, and how many occurrences (this one
// included) the line stands for.
func (r *rateLog) allow(now time.Time) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held++
	every := r.every
	if every == 0 {
		every = 5 * time.Second
	}
	if !r.last.IsZero() && now.Sub(r.last) < every {
		return 0, false
	}
	n := r.held
	r.last, r.held = now, 0
	return n, true
}
