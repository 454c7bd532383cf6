package anchor

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// Interval is the least time between two writes of the audit head, so that
// a busy log does not pay a second fsync per commit. A crash loses at most
// this much of the anchor's lead, never the store's data: the store is
// accepted while its chain extends the anchored head.
const Interval = 50 * time.Millisecond

// Keeper keeps the anchor up to date with the running auth service. The
// store commits first and the Keeper follows, so the anchor never records
// what the store does not hold.
type Keeper struct {
	dir    string
	sealer Sealer
	log    *slog.Logger

	writeMu sync.Mutex
	mu      sync.Mutex
	// want is what the anchor should say; written what it last said on disk.
	want, written Anchor
	// caChanged asks for a write at once rather than after Interval.
	caChanged bool
	lastWrite time.Time
	wake      chan struct{}
}

// NewKeeper returns a Keeper of the anchor in keysDir, which now says a.
func NewKeeper(keysDir string, s Sealer, a Anchor, log *slog.Logger) *Keeper {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Keeper{dir: keysDir, sealer: s, log: log, want: a, written: a, wake: make(chan struct{}, 1)}
}

// SetCAKeys records the CAs' key sets after a change has been committed.
func (k *Keeper) SetCAKeys(keys map[string][]string) {
	k.mu.Lock()
	if maps.EqualFunc(keys, k.want.CAKeys, slices.Equal) {
		k.mu.Unlock()
		return
	}
	k.want.CAKeys = keys
	k.caChanged = true
	k.mu.Unlock()
	k.poke()
}

// SetAuditHead records the audit head after a commit. It is cheap: the
// audit log's writer calls it after every commit.
func (k *Keeper) SetAuditHead(seq int64, hash string) {
	k.mu.Lock()
	if seq <= k.want.AuditSeq {
		k.mu.Unlock()
		return
	}
	k.want.AuditSeq, k.want.AuditHash = seq, hash
	k.mu.Unlock()
	k.poke()
}

func (k *Keeper) poke() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// Anchored returns the audit head the anchor on disk records.
func (k *Keeper) Anchored() (seq int64, hash string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.written.AuditSeq, k.written.AuditHash
}

// Run writes the anchor whenever it is behind, CA changes at once and the
// audit head at most every Interval, until ctx ends. Call Flush after the
// audit log has stopped to record its final head.
func (k *Keeper) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-k.wake:
		}
		k.mu.Lock()
		wait := Interval - time.Since(k.lastWrite)
		urgent := k.caChanged
		k.mu.Unlock()
		if !urgent && wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		if err := k.Flush(); err != nil {
			// The store holds the data; a stale anchor only narrows what a
			// later start can vouch for. Say so and try again on the next change.
			k.log.Error("updating the trust domain's anchor failed", "error", err)
		}
	}
}

// Flush writes the anchor now if it is behind.
func (k *Keeper) Flush() error {
	// Writes are serialised, but the state lock is not held across one:
	// the audit log's writer must never wait for an fsync of the anchor.
	k.writeMu.Lock()
	defer k.writeMu.Unlock()
	k.mu.Lock()
	if k.want.AuditSeq == k.written.AuditSeq && !k.caChanged {
		k.mu.Unlock()
		return nil
	}
	a := k.want
	a.CAKeys = maps.Clone(a.CAKeys)
	k.caChanged = false
	k.mu.Unlock()

	a.Written = time.Now().UTC()
	err := Write(k.dir, k.sealer, a)

	k.mu.Lock()
	defer k.mu.Unlock()
	k.lastWrite = time.Now()
	if err != nil {
		k.caChanged = true
		return err
	}
	k.written = a
	return nil
}
