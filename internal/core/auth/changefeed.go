package auth

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
)

// The change feed keeps this replica's memory level with the store when
// other replicas write to it: it follows the store's change log and drops
// or reloads exactly what each change touched, then wakes agent streams.
// It also sees this replica's own writes, already applied: handling a
// change twice costs a cache miss and nothing else.

// changeFeedPoll is how often the feed reads the log without being woken:
// the fallback for a listener that is down or silently cut off.
const changeFeedPoll = 2 * time.Second

// changeFeedPage is how many changes the feed reads at once.
const changeFeedPage = 500

// The change log keeps at least the newest changeLogKeep changes and every
// change younger than changeLogRetain: a replica cut off from the database
// for less than that catches up change by change; one cut off longer
// reloads everything. Each replica prunes every changeLogPruneInterval, at
// most changeLogPruneBatches batches at a time.
const (
	changeLogKeep          = 10000
	changeLogRetain        = time.Hour
	changeLogPruneInterval = time.Minute
	changeLogPruneBatch    = 1000
	changeLogPruneBatches  = 10
)

// changeFeed is the follower's position in the change log.
type changeFeed struct {
	// mu is held while the feed applies changes: one at a time.
	mu sync.Mutex
	// revision is the last change applied to this replica's memory.
	revision int64
	// failing is set while reading the log fails, so that an outage is
	// logged once, not on every attempt.
	failing bool
	// pending are the changes, by kind and name, that the feed moved past
	// although applying them failed (a CA document that does not load):
	// retried on every round, so that one of them cannot stop the rest.
	pending map[[2]string]bool
}

// storeChanged brings this replica's memory level with a change to kind/name
// in the store, whoever made it: it drops the cached copy (the next read
// goes to the store), reloads the CAs when a CA changed, and wakes agent
// streams when what they serve from may have changed. An empty kind means
// that this replica cannot know what changed (the log was pruned past its
// position): everything is dropped and reloaded. Calling it again for the
// same change is harmless. The feed calls it again later for a change that
// failed.
func (s *Server) storeChanged(ctx context.Context, kind, name string) error {
	switch kind {
	case "":
		s.res.forgetAll()
		s.locksChanged(ctx)
		s.agentsLostTrack(ctx)
		return s.cas.Reload(ctx)
	case ca.StoreKind:
		// Reload wakes agent streams and the anchor (cas.OnChange).
		return s.cas.Reload(ctx)
	case federatedBundleKind:
		return s.federationChanged(ctx)
	case crlNumberKind:
		// A CRL numbered on another replica: nothing here depends on it.
		return nil
	case resource.KindFederation:
		s.applyResourceChanges(ctx, resourceChange{kind, name})
		return s.federationChanged(ctx)
	}
	s.applyResourceChanges(ctx, resourceChange{kind, name})
	return nil
}

// followChanges runs the change feed until ctx ends: woken by the store
// (this replica's writes; on PostgreSQL, every replica's commits), and every
// changeFeedPoll in case a wake-up was lost. It also prunes the log.
func (s *Server) followChanges(ctx context.Context) error {
	wake, stop := s.db.WatchChanges()
	defer stop()
	poll := time.NewTicker(changeFeedPoll)
	defer poll.Stop()
	prune := time.NewTicker(changeLogPruneInterval)
	defer prune.Stop()
	for {
		s.catchUp(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-poll.C:
		case <-prune.C:
			s.pruneChanges(ctx)
		}
	}
}

// catchUp applies every change after the feed's revision.
func (s *Server) catchUp(ctx context.Context) {
	s.feed.mu.Lock()
	defer s.feed.mu.Unlock()
	for k := range s.feed.pending {
		s.applyChange(ctx, k)
	}
	for ctx.Err() == nil {
		more, err := s.applyChanges(ctx)
		if err != nil {
			if ctx.Err() == nil && !s.feed.failing {
				s.log.Warn("cannot follow the store's changes; retrying (other replicas' changes reach this one when it succeeds)", "revision", s.feed.revision, "error", err)
			}
			s.feed.failing = true
			return
		}
		if s.feed.failing {
			s.log.Info("following the store's changes again", "revision", s.feed.revision)
			s.feed.failing = false
		}
		if !more {
			return
		}
	}
}

// applyChanges reads one page of changes and applies it, reporting whether
// there may be more. Each (kind, name) is applied once per page; the
// position moves past a change only once it is applied.
func (s *Server) applyChanges(ctx context.Context) (more bool, err error) {
	page, err := s.db.ChangesAfter(ctx, s.feed.revision, changeFeedPage)
	if errors.Is(err, store.ErrChangesPruned) {
		// The head is read first: whatever commits after it is followed
		// from there, whatever before is in what the reload reads.
		head, err := s.db.ChangeHead(ctx)
		if err != nil {
			return false, err
		}
		s.log.Warn("the store's change log was pruned past this replica's position; reloading everything from the store", "revision", s.feed.revision, "head", head)
		s.applyChange(ctx, [2]string{"", ""})
		s.feed.revision = head
		return true, nil
	}
	if err != nil {
		return false, err
	}
	done := make(map[[2]string]bool, len(page))
	for _, c := range page {
		if k := [2]string{c.Kind, c.Name}; !done[k] {
			s.applyChange(ctx, k)
			done[k] = true
		}
		s.feed.revision = c.Revision
	}
	return len(page) == changeFeedPage, nil
}

// applyChange calls storeChanged for kind and name (k), keeping the change
// pending, to be tried again on the next round, when it fails.
func (s *Server) applyChange(ctx context.Context, k [2]string) {
	err := s.storeChanged(ctx, k[0], k[1])
	switch {
	case err == nil && s.feed.pending[k]:
		delete(s.feed.pending, k)
		s.log.Info("a change from the store applies now", "kind", k[0], "name", k[1])
	case err != nil && !s.feed.pending[k]:
		if s.feed.pending == nil {
			s.feed.pending = map[[2]string]bool{}
		}
		s.feed.pending[k] = true
		if ctx.Err() == nil {
			s.log.Warn("a change from the store does not apply; retrying (what it changed keeps its previous state here until then)", "kind", k[0], "name", k[1], "error", err)
		}
	}
}

// pruneChanges trims the change log. Every replica does it: the work is
// bounded and a second pruner finds nothing to do.
func (s *Server) pruneChanges(ctx context.Context) {
	for range changeLogPruneBatches {
		n, err := s.db.PruneChanges(ctx, changeLogKeep, time.Now().Add(-changeLogRetain), changeLogPruneBatch)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("cannot prune the store's change log; retrying later", "error", err)
			}
			return
		}
		if n < changeLogPruneBatch {
			return
		}
	}
}
