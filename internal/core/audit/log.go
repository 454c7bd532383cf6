package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/wid-project/wid/internal/core/store"
)

// ErrStopped is returned by Emit and Subscribe once Run has returned.
var ErrStopped = errors.New("audit log is stopped")

// maxBatch bounds one commit, so a burst cannot turn into one huge
// transaction that keeps every caller in it waiting.
const maxBatch = 512

// rechainAttempts bounds how often one batch is re-chained because another
// writer moved the head first. Replicas sharing one database do that all
// the time: each loss costs one round trip and the next attempt starts
// from the head the winner left, so a batch loses this often only if the
// database commits that many other batches in the meantime.
const rechainAttempts = 1000

// Group commit. Each commit costs a WAL write and an fsync whatever its
// size, so under load the writer lingers a moment before taking a batch,
// letting the callers already on their way join it: one fsync then covers
// many events, and the CPU the commits no longer burn goes to issuing. An
// idle log (nothing committed within busyGap) commits at once, so a lone
// request never waits for the linger.
const (
	linger  = 400 * time.Microsecond
	busyGap = 2 * time.Millisecond
)

type logState int

const (
	stateIdle logState = iota
	stateRunning
	stateStopped
)

// pending is one Emit waiting for its event to be committed.
type pending struct {
	ev   Event
	data []byte
	// done receives nil once ev is durable (with Seq and hashes filled in),
	// or why it is not. Buffered so the writer never waits on a caller.
	done chan error
}

// Log is the audit log of one trust domain. Emit records events; Run is the
// single writer that commits them in batches; Query, Subscribe and Verify
// read them. Keep one Log per store: it holds the chain head in memory.
type Log struct {
	backend store.Backend
	logger  *slog.Logger

	mu    sync.Mutex
	state logState
	queue []*pending
	// wake tells Run that the queue is not empty. Capacity one: a signal
	// already waiting covers every Emit that follows it.
	wake chan struct{}

	// seq and hash are the chain head as last committed; only Run touches
	// them after Open.
	seq  int64
	hash string

	// published is the seq of the last event handed to subscribers, or
	// skipped while there were none; only Run touches it after Open.
	published int64

	// onCommit, when set, hears of every new head (see OnCommit).
	onCommit func(seq int64, hash string)

	subMu   sync.Mutex
	subs    map[*subscriber]struct{}
	subDone bool
}

// Open returns the log kept in b, continuing its chain from the recorded
// head. Nothing is written until Run is running.
func Open(ctx context.Context, b store.Backend, logger *slog.Logger) (*Log, error) {
	seq, hash, err := b.AuditHead(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening audit log: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Log{
		backend:   b,
		logger:    logger,
		wake:      make(chan struct{}, 1),
		seq:       seq,
		hash:      hash,
		published: seq,
		subs:      make(map[*subscriber]struct{}),
	}, nil
}

// OnCommit registers fn to hear the new head after every commit, once it is
// durable: the trust domain's anchor follows the head this way. fn runs on
// the writer and must be quick. Call it before Run.
func (l *Log) OnCommit(fn func(seq int64, hash string)) { l.onCommit = fn }

// Run is the log's writer; run it exactly once, alongside the services that
// emit. It commits whatever Emit callers have queued as one transaction,
// then wakes them, and repeats: while one batch commits the next one
// gathers, and under load Run lingers briefly (see linger) so that batches
// grow with concurrency.
//
// When ctx is done Run stops accepting events, commits those already
// queued, closes every subscription and returns nil. A failed commit fails
// only the Emit calls in that batch: the service keeps refusing what it
// cannot audit rather than stopping.
func (l *Log) Run(ctx context.Context) error {
	l.mu.Lock()
	switch l.state {
	case stateRunning:
		l.mu.Unlock()
		return errors.New("running audit log: already running")
	case stateStopped:
		l.mu.Unlock()
		return fmt.Errorf("running audit log: %w", ErrStopped)
	}
	l.state = stateRunning
	l.mu.Unlock()

	// Commits outlive ctx: an event taken from the queue is written even if
	// the service is shutting down, since its caller may already be waiting.
	writeCtx := context.WithoutCancel(ctx)
	var lastCommit time.Time
	poll := time.NewTicker(othersPoll)
	defer poll.Stop()
	for {
		select {
		case <-poll.C:
			l.followOthers(ctx)
		case <-l.wake:
			for ctx.Err() == nil {
				n := l.queued()
				if n == 0 {
					break
				}
				if n < maxBatch && time.Since(lastCommit) < busyGap {
					time.Sleep(linger)
				}
				batch := l.take()
				l.commit(writeCtx, batch)
				lastCommit = time.Now()
			}
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}

	l.mu.Lock()
	l.state = stateStopped
	l.mu.Unlock()
	// No Emit can queue now; what is queued is bounded, so this ends.
	for batch := l.take(); len(batch) > 0; batch = l.take() {
		l.commit(writeCtx, batch)
	}
	l.closeSubscribers()
	return nil
}

// queued is how many events wait for the writer.
func (l *Log) queued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue)
}

// take removes and returns up to maxBatch queued events, oldest first.
func (l *Log) take() []*pending {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := min(len(l.queue), maxBatch)
	if n == 0 {
		return nil
	}
	batch := slices.Clone(l.queue[:n])
	rest := copy(l.queue, l.queue[n:])
	clear(l.queue[rest:]) // drop references to events handed out
	l.queue = l.queue[:rest]
	return batch
}

// chainAppender is a store that chains a batch while it holds the head
// (the PostgreSQL store, shared by replicas): the batch then follows the
// head as it is and never has to be re-chained.
type chainAppender interface {
	AppendAuditChained(ctx context.Context, build func(headSeq int64, headHash string) []store.AuditRow) ([]store.AuditRow, error)
}

// commit chains batch onto the head, writes it in one transaction and
// answers every caller in it.
//
// Other writers (auth replicas on the same database) may move the head
// between two commits of this one. A store that chains under its head lock
// (chainAppender) has the batch chained there; on any other, the backend
// refuses a batch that no longer follows the head with
// store.ErrAuditChain and writes nothing, and the batch is re-chained on
// the head as it is now, under new seqs and hashes, and tried again.
// When the outcome of a commit is unknown (the connection broke during
// it), the stored row at the batch's first seq says whether it landed: its
// hash covers the previous hash and every column, so only this batch's row
// has it. Either way each event is stored exactly once.
func (l *Log) commit(ctx context.Context, batch []*pending) {
	rows := make([]store.AuditRow, len(batch))
	var err error
	chainer, _ := l.backend.(chainAppender)
	for attempt := 1; ; attempt++ {
		fromSeq, fromHash := l.seq, l.hash
		if chainer != nil {
			_, err = chainer.AppendAuditChained(ctx, func(seq int64, hash string) []store.AuditRow {
				l.seq, l.hash = seq, hash
				l.chain(batch, rows)
				return rows
			})
		} else {
			l.chain(batch, rows)
			err = l.backend.AppendAudit(ctx, rows)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrAuditChain) {
			landed, lerr := l.landed(ctx, rows[0])
			if lerr != nil {
				err = errors.Join(err, lerr)
			} else if landed {
				err = nil
				break
			}
		}
		// Either another writer moved the head, or this batch did not
		// land: the next batch (or this one again) follows the head as
		// recorded now.
		headSeq, headHash, headErr := l.backend.AuditHead(ctx)
		if headErr != nil {
			err = errors.Join(err, headErr)
			break
		}
		l.seq, l.hash = headSeq, headHash
		if !errors.Is(err, store.ErrAuditChain) || attempt >= rechainAttempts {
			break
		}
		if headSeq == fromSeq && headHash == fromHash {
			// Nobody moved the head, yet the batch does not follow it:
			// the rows table disagrees with the head (see Verify), and
			// trying again would meet the same refusal.
			break
		}
		l.logger.Debug("audit head moved under this writer; re-chaining batch",
			"head_seq", headSeq, "batch_size", len(batch), "attempt", attempt)
	}
	if err != nil {
		err = fmt.Errorf("recording %d audit events: %w", len(batch), err)
		l.logger.Error("audit commit failed", "batch_size", len(batch), "error", err)
		for _, p := range batch {
			p.done <- err
		}
		return
	}

	last := rows[len(rows)-1]
	l.seq, l.hash = last.Seq, last.Hash
	if l.onCommit != nil {
		l.onCommit(last.Seq, last.Hash)
	}
	events := make([]Event, len(batch))
	for i, p := range batch {
		p.ev.Seq, p.ev.PrevHash, p.ev.Hash = rows[i].Seq, rows[i].PrevHash, rows[i].Hash
		events[i] = p.ev
	}
	// Publish before answering: once Emit has returned, its event is in
	// every existing subscription and a later one sees it only as backlog.
	// Events other writers committed before this batch go first.
	l.publishOthers(ctx, rows[0].Seq)
	l.publish(events)
	l.published = last.Seq
	for _, p := range batch {
		p.done <- nil
	}
}

// othersPoll is how often the writer looks for events that other writers
// (replicas sharing the store) committed, for its subscribers.
const othersPoll = 200 * time.Millisecond

// followOthers publishes the events other writers committed since the last
// one published, and moves the in-memory head to theirs, so that the next
// commit needs no re-chaining. It reads the store only for subscribers.
func (l *Log) followOthers(ctx context.Context) {
	if !l.hasSubscribers() {
		return
	}
	seq, hash, err := l.backend.AuditHead(ctx)
	if err != nil {
		if ctx.Err() == nil {
			l.logger.Warn("reading the audit head for subscribers", "error", err)
		}
		return
	}
	if seq > l.seq {
		l.seq, l.hash = seq, hash
	}
	if seq > l.published {
		l.publishOthers(ctx, seq+1)
	}
}

// publishOthers hands subscribers the stored events after the last one
// published and before seq `before`: those of other writers. With no
// subscriber there is nobody to hand them to, and nothing is read.
func (l *Log) publishOthers(ctx context.Context, before int64) {
	if before <= l.published+1 {
		return
	}
	if !l.hasSubscribers() {
		l.published = before - 1
		return
	}
	err := l.backend.ScanAudit(ctx, l.published, func(r store.AuditRow) error {
		if r.Seq >= before {
			return errStopScan
		}
		ev, err := decodeRow(r)
		if err != nil {
			return err
		}
		l.publish([]Event{ev})
		l.published = r.Seq
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		// Subscribers miss these; they see them with their next backlog.
		l.logger.Warn("reading other writers' audit events for subscribers", "error", err)
		l.published = before - 1
	}
}

// chain fills rows with batch's events chained onto the head in memory.
func (l *Log) chain(batch []*pending, rows []store.AuditRow) {
	seq, hash := l.seq, l.hash
	for i, p := range batch {
		seq++
		rows[i] = store.AuditRow{
			Seq:      seq,
			Time:     p.ev.Time,
			Type:     p.ev.Type,
			Actor:    p.ev.Actor,
			SPIFFEID: p.ev.SPIFFEID,
			Outcome:  p.ev.Outcome,
			Data:     p.data,
			PrevHash: hash,
		}
		rows[i].Hash = HashRow(rows[i])
		hash = rows[i].Hash
	}
}

// landed reports whether first, the first row of a batch whose commit
// ended in an error, is stored: a batch lands whole or not at all.
func (l *Log) landed(ctx context.Context, first store.AuditRow) (bool, error) {
	got, err := l.backend.QueryAudit(ctx, store.AuditFilter{AfterSeq: first.Seq - 1, BeforeSeq: first.Seq + 1, Limit: 1})
	if err != nil {
		return false, fmt.Errorf("checking whether audit event %d was recorded: %w", first.Seq, err)
	}
	return len(got) == 1 && got[0].Hash == first.Hash, nil
}

// EmitAll records events as Emit does, queued together and in order, so
// that they land in as few commits as maxBatch allows: a caller with many
// events at once (an agent's batch of SVIDs or attestations) pays one or two
// fsyncs instead of one per event. It returns the events as stored once all
// are durable. On error (the first met, in order) some events may have been
// recorded and others not; each one recorded is whole and chained.
func (l *Log) EmitAll(ctx context.Context, evs []Event) ([]Event, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	ps := make([]*pending, len(evs))
	now := time.Now()
	for i, ev := range evs {
		p, err := newPending(ev, now)
		if err != nil {
			return nil, err
		}
		ps[i] = p
	}
	l.mu.Lock()
	if l.state == stateStopped {
		l.mu.Unlock()
		return nil, fmt.Errorf("recording %d audit events: %w", len(evs), ErrStopped)
	}
	l.queue = append(l.queue, ps...)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}

	out := make([]Event, len(ps))
	for i, p := range ps {
		select {
		case err := <-p.done:
			if err != nil {
				return nil, err
			}
			out[i] = p.ev
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %d audit events to be recorded: %w", len(evs), ctx.Err())
		}
	}
	return out, nil
}

// newPending checks and encodes ev for the queue; a zero Time becomes now.
func newPending(ev Event, now time.Time) (*pending, error) {
	if ev.Type == "" || ev.Outcome == "" {
		return nil, fmt.Errorf("recording audit event: type and outcome are required (got type %q, outcome %q)", ev.Type, ev.Outcome)
	}
	if ev.Time.IsZero() {
		ev.Time = now
	}
	ev.Time = ev.Time.UTC() // also drops the monotonic reading
	ev.Seq, ev.PrevHash, ev.Hash = 0, "", ""
	// Encoded here, in the caller's goroutine, to keep the single writer's
	// work per event small. The stored form never carries seq or hashes:
	// those live in their columns and the hash covers them there.
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encoding audit event %s: %w", ev.Type, err)
	}
	return &pending{ev: ev, data: data, done: make(chan error, 1)}, nil
}

// Emit records ev and returns it as stored (Time set if it was zero and
// made UTC; Seq, PrevHash and Hash filled in) only once it is durable, so a
// caller that answers after Emit never answers for an unrecorded action.
//
// Emit waits for Run's next commit: called before Run starts, it waits for
// Run (so a service's start-up order does not matter); after Run has
// returned it fails with ErrStopped. If ctx ends first Emit returns its
// error, and the event may still be recorded.
func (l *Log) Emit(ctx context.Context, ev Event) (Event, error) {
	p, err := newPending(ev, time.Now())
	if err != nil {
		return Event{}, err
	}

	l.mu.Lock()
	if l.state == stateStopped {
		l.mu.Unlock()
		return Event{}, fmt.Errorf("recording audit event %s: %w", ev.Type, ErrStopped)
	}
	l.queue = append(l.queue, p)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}

	select {
	case err := <-p.done:
		if err != nil {
			return Event{}, err
		}
		return p.ev, nil
	case <-ctx.Done():
		return Event{}, fmt.Errorf("waiting for audit event %s to be recorded: %w", ev.Type, ctx.Err())
	}
}

// Query selects events; zero fields match everything.
type Query struct {
	// Types matches any of these event types.
	Types    []string
	Actor    string
	SPIFFEID string
	Outcome  string
	// Since is inclusive, Until exclusive.
	Since time.Time
	Until time.Time
	// AfterSeq matches events with a greater seq: where a reader left off.
	AfterSeq int64
	// BeforeSeq > 0 matches events with a smaller seq: paging back.
	BeforeSeq int64
	// Limit > 0 keeps the newest Limit matching events.
	Limit int
}

func (q Query) filter() store.AuditFilter {
	return store.AuditFilter{
		Types:     q.Types,
		Actor:     q.Actor,
		SPIFFEID:  q.SPIFFEID,
		Outcome:   q.Outcome,
		Since:     q.Since,
		Until:     q.Until,
		AfterSeq:  q.AfterSeq,
		BeforeSeq: q.BeforeSeq,
		Limit:     q.Limit,
	}
}

// matches is filter() for events that have not been read from the store.
func (q Query) matches(ev Event) bool {
	return (len(q.Types) == 0 || slices.Contains(q.Types, ev.Type)) &&
		(q.Actor == "" || q.Actor == ev.Actor) &&
		(q.SPIFFEID == "" || q.SPIFFEID == ev.SPIFFEID) &&
		(q.Outcome == "" || q.Outcome == ev.Outcome) &&
		(q.Since.IsZero() || !ev.Time.Before(q.Since)) &&
		(q.Until.IsZero() || ev.Time.Before(q.Until)) &&
		ev.Seq > q.AfterSeq && (q.BeforeSeq <= 0 || ev.Seq < q.BeforeSeq)
}

// Query returns the events matching q, oldest first.
func (l *Log) Query(ctx context.Context, q Query) ([]Event, error) {
	rows, err := l.backend.QueryAudit(ctx, q.filter())
	if err != nil {
		return nil, fmt.Errorf("querying audit log: %w", err)
	}
	events := make([]Event, 0, len(rows))
	for _, r := range rows {
		ev, err := decodeRow(r)
		if err != nil {
			return nil, fmt.Errorf("querying audit log: %w", err)
		}
		events = append(events, ev)
	}
	return events, nil
}

// decodeRow rebuilds the event stored in r.
func decodeRow(r store.AuditRow) (Event, error) {
	var ev Event
	if err := json.Unmarshal(r.Data, &ev); err != nil {
		return Event{}, fmt.Errorf("decoding audit event %d: %w", r.Seq, err)
	}
	ev.Seq, ev.PrevHash, ev.Hash = r.Seq, r.PrevHash, r.Hash
	return ev, nil
}
