package audit

import (
	"context"
	"fmt"
)

// subscriberBuffer is how far a subscriber may fall behind the writer
// before it is dropped. The writer never waits for a subscriber.
const subscriberBuffer = 1024

type subscriber struct {
	q    Query
	live chan Event
}

// Subscribe streams the events matching q: first some already recorded,
// then each new one as it is committed, in seq order with no duplicate and
// no gap between the two. Which recorded ones come first:
//
//   - backlog > 0: the newest backlog of them (after q.AfterSeq, if set);
//   - backlog < 0: all of them after q.AfterSeq;
//   - backlog == 0: all of them after q.AfterSeq when it is set (the stream
//     resumes right after that event), none otherwise (live only).
//
// The channel closes when ctx is done or the log stops, and also when the
// subscriber falls more than 1024 events behind: rather than slow down
// every Emit, the log drops it. To carry on after such a close, subscribe
// again with q.AfterSeq set to the last seq received. The recorded events
// are read into memory at once, so resume from a recent seq, and do not ask
// for the whole of a large log with backlog < 0.
func (l *Log) Subscribe(ctx context.Context, q Query, backlog int) (<-chan Event, error) {
	sub := &subscriber{q: q, live: make(chan Event, subscriberBuffer)}
	// Listen for live events before reading the backlog: an event committed
	// in between is then in both, and dropped once from live by its seq,
	// instead of in neither.
	l.subMu.Lock()
	if l.subDone {
		l.subMu.Unlock()
		return nil, fmt.Errorf("subscribing to audit log: %w", ErrStopped)
	}
	l.subs[sub] = struct{}{}
	l.subMu.Unlock()

	var history []Event
	if backlog != 0 || q.AfterSeq > 0 {
		hq := q
		hq.Limit = max(backlog, 0)
		var err error
		history, err = l.Query(ctx, hq)
		if err != nil {
			l.unsubscribe(sub)
			return nil, fmt.Errorf("subscribing to audit log: %w", err)
		}
	}

	out := make(chan Event)
	go func() {
		defer close(out)
		defer l.unsubscribe(sub)
		last := q.AfterSeq
		send := func(ev Event) bool {
			select {
			case out <- ev:
				last = ev.Seq
				return true
			case <-ctx.Done():
				return false
			}
		}
		for _, ev := range history {
			if !send(ev) {
				return
			}
		}
		for {
			select {
			case ev, ok := <-sub.live:
				if !ok {
					return
				}
				if ev.Seq <= last {
					continue
				}
				if !send(ev) {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

func (l *Log) hasSubscribers() bool {
	l.subMu.Lock()
	defer l.subMu.Unlock()
	return len(l.subs) > 0
}

func (l *Log) unsubscribe(sub *subscriber) {
	l.subMu.Lock()
	delete(l.subs, sub)
	l.subMu.Unlock()
}

// publish hands committed events, in seq order, to every matching
// subscriber without ever blocking.
func (l *Log) publish(events []Event) {
	l.subMu.Lock()
	defer l.subMu.Unlock()
	for sub := range l.subs {
		for _, ev := range events {
			if !sub.q.matches(ev) {
				continue
			}
			select {
			case sub.live <- ev:
			default:
				l.logger.Warn("audit subscriber fell behind; closing its stream",
					"seq", ev.Seq, "buffer", subscriberBuffer)
				delete(l.subs, sub)
				close(sub.live)
			}
			if _, ok := l.subs[sub]; !ok {
				break
			}
		}
	}
}

// closeSubscribers ends every subscription; the log has stopped.
func (l *Log) closeSubscribers() {
	l.subMu.Lock()
	defer l.subMu.Unlock()
	l.subDone = true
	for sub := range l.subs {
		delete(l.subs, sub)
		close(sub.live)
	}
}
