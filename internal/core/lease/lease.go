// Package lease elects one holder among the auth replicas that share a
// store, for the periodic work that must run exactly once per trust domain
// (automatic CA rotation, expiry sweeps). A lease is one stored item
// written with compare-and-set, so it works the same on every store
// backend; PostgreSQL needs no advisory lock held on a dedicated
// connection.
//
// Expiry is judged by each replica's own monotonic clock, never by
// comparing wall-clock times written by another host: a contender takes
// the lease over once it has seen the same stored revision for a whole
// TTL, and the holder stops its work once a TTL (less a margin) has passed
// since it began its last successful renewal. The holder's renewal write
// happened before any contender saw it, so the holder has stopped before
// anyone else starts, whatever the wall clocks say. It must never let two
// holders run work at once while clocks run at the same rate.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/wid-project/wid/internal/core/store"
)

// Kind is the store kind of leases.
const Kind = "lease"

// DefaultTTL is how long a lease outlives its holder's last renewal: a
// holder that dies (kill -9, its host lost) is replaced within about this
// long.
const DefaultTTL = 5 * time.Second

// record is a lease as stored.
type record struct {
	// Holder names the replica holding the lease.
	Holder string `json:"holder"`
	// TTLMillis is the holder's TTL, so that contenders with another
	// setting wait as long as the holder counts on.
	TTLMillis int64 `json:"ttl_ms"`
	// Renewed is the holder's wall-clock time of the renewal, for people
	// reading the store; nobody's expiry depends on it.
	Renewed time.Time `json:"renewed"`
}

// Lease is one process's part in the election of the lease called Name.
type Lease struct {
	db     store.Backend
	name   string
	holder string
	ttl    time.Duration
	log    *slog.Logger
}

// New returns holder's part in lease name, kept in db. ttl <= 0 means
// DefaultTTL.
func New(db store.Backend, name, holder string, ttl time.Duration, log *slog.Logger) *Lease {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Lease{db: db, name: name, holder: holder, ttl: ttl, log: log}
}

// margin is how much sooner than a contender would the holder gives its
// work up: room for the time between a renewal's start and its commit
// that the holder cannot see, and for timer lateness on a loaded host.
func (l *Lease) margin() time.Duration { return l.ttl / 4 }

// every is how often the lease is renewed, or looked at by a contender.
func (l *Lease) every() time.Duration { return l.ttl / 5 }

// Run takes part in the election until ctx ends. While this process holds
// the lease, work runs with a context that ends when the lease is lost (or
// ctx ends); Run waits for work to return before it contends again. On the
// way out a held lease is released at once, so a graceful stop hands over
// without waiting for the TTL. Run returns nil when ctx ends.
func (l *Lease) Run(ctx context.Context, work func(ctx context.Context)) error {
	var (
		held       bool
		renewedAt  time.Time // start of the last successful write, while held
		seenRev    int64     // the other holder's revision, as last seen
		seenAt     time.Time // when seenRev was first seen
		seenTTL    time.Duration
		stopWork   context.CancelFunc
		workDone   chan struct{}
		releaseRev int64
		// failing keeps an unreachable store from being logged at
		// every look: once when it fails, once when it is back.
		failing bool
	)
	storeFailed := func(what string, err error) {
		if !failing && ctx.Err() == nil {
			l.log.Warn(what, "lease", l.name, "error", err)
		}
		failing = true
	}
	stop := func(why string) {
		if !held {
			return
		}
		held = false
		stopWork()
		<-workDone
		l.log.Info("gave up the lease", "lease", l.name, "holder", l.holder, "why", why)
	}
	tick := time.NewTicker(l.every())
	defer tick.Stop()
	for {
		if held && time.Since(renewedAt) > l.ttl-l.margin() {
			stop("no renewal succeeded within its TTL")
		}
		if ctx.Err() != nil {
			if held {
				stop("stopping")
				l.release(releaseRev)
			}
			return nil
		}

		start := time.Now()
		rev, rec, err := l.read(ctx)
		if err == nil && failing {
			failing = false
			l.log.Info("the lease's store answers again", "lease", l.name)
		}
		switch {
		case err != nil:
			storeFailed("reading the lease", err)
		case rev == 0 || rec.Holder == l.holder || (rev == seenRev && time.Since(seenAt) >= seenTTL):
			// Free, ours, or its holder has not renewed it for a whole
			// TTL of its own: write it with compare-and-set on what was read.
			newRev, werr := l.write(ctx, rev)
			switch {
			case werr == nil:
				renewedAt, releaseRev = start, newRev
				if !held {
					held = true
					wctx, cancel := context.WithCancel(ctx)
					stopWork, workDone = cancel, make(chan struct{})
					l.log.Info("took the lease", "lease", l.name, "holder", l.holder, "from", rec.Holder)
					go func() {
						defer close(workDone)
						work(wctx)
					}()
				}
			case errors.Is(werr, store.ErrConflict), errors.Is(werr, store.ErrAlreadyExists), errors.Is(werr, store.ErrNotFound):
				// Another replica wrote first: it holds the lease now.
				stop("another replica took it")
				seenRev = 0
			default:
				storeFailed("writing the lease", werr)
			}
		default:
			stop("another replica holds it")
			if rev != seenRev {
				seenRev, seenAt = rev, time.Now()
				seenTTL = time.Duration(rec.TTLMillis) * time.Millisecond
				if seenTTL <= 0 {
					seenTTL = l.ttl
				}
			}
		}

		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// Holder returns who holds the lease as stored ("" when nobody does). It
// may name a holder that died and is not replaced yet.
func (l *Lease) Holder(ctx context.Context) (string, error) {
	_, rec, err := l.read(ctx)
	return rec.Holder, err
}

func (l *Lease) read(ctx context.Context) (int64, record, error) {
	item, err := l.db.Get(ctx, Kind, l.name)
	if errors.Is(err, store.ErrNotFound) {
		return 0, record{}, nil
	}
	if err != nil {
		return 0, record{}, fmt.Errorf("reading lease %s: %w", l.name, err)
	}
	var rec record
	if err := json.Unmarshal(item.Data, &rec); err != nil {
		// Unreadable: treated as held by nobody known, so it expires.
		return item.Revision, record{Holder: "?"}, nil
	}
	return item.Revision, rec, nil
}

// write stores the lease as this holder's, over revision rev (0: create).
func (l *Lease) write(ctx context.Context, rev int64) (int64, error) {
	data, err := json.Marshal(record{Holder: l.holder, TTLMillis: l.ttl.Milliseconds(), Renewed: time.Now().UTC()})
	if err != nil {
		return 0, err
	}
	o := store.Op{Type: store.OpCreate, Item: store.Item{Kind: Kind, Name: l.name, Data: data}}
	if rev != 0 {
		o.Type, o.ExpectRevision = store.OpUpdate, rev
	}
	revs, err := l.db.Apply(ctx, o)
	if err != nil {
		return 0, err
	}
	return revs[0], nil
}

// release deletes the lease if it is still as this holder last wrote it.
func (l *Lease) release(rev int64) {
	ctx, cancel := context.WithTimeout(context.Background(), l.ttl)
	defer cancel()
	_, err := l.db.Apply(ctx, store.Op{Type: store.OpDelete, Item: store.Item{Kind: Kind, Name: l.name}, ExpectRevision: rev})
	if err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
		l.log.Warn("releasing the lease", "lease", l.name, "error", err)
	}
}
