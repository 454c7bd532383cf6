package store

import (
	"errors"
	"sync"
	"time"
)

// ErrChangesPruned: the change log no longer holds every change after the
// revision asked for. A follower that gets it has missed changes it can
// never read, so it drops everything it derived from the store and starts
// again from ChangeHead.
var ErrChangesPruned = errors.New("the change log was pruned past that revision")

// MaxChangesPage bounds one ChangesAfter answer, whatever limit is asked.
const MaxChangesPage = 1000

// Change is one entry of the change log: one op of a committed Apply.
type Change struct {
	// Revision numbers the change log. It grows in commit order across
	// every writer, so a follower that has read up to a revision has seen
	// every change committed before it. It is not the item's revision.
	Revision int64
	Kind     string
	Name     string
	// Op is OpCreate, OpUpdate or OpDelete: an upsert is recorded as what
	// it did.
	Op OpType
	// Time is when the change was recorded, by the writer's (SQLite) or
	// the database's (PostgreSQL) clock.
	Time time.Time
}

// OpName is how an op is recorded in the change log's op column.
func OpName(t OpType) string {
	switch t {
	case OpCreate:
		return "create"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	case OpUpsert:
		return "upsert"
	}
	return "unknown"
}

// ParseOpName is the inverse of OpName; 0 for a name it does not know.
func ParseOpName(s string) OpType {
	switch s {
	case "create":
		return OpCreate
	case "update":
		return OpUpdate
	case "delete":
		return OpDelete
	case "upsert":
		return OpUpsert
	}
	return 0
}

// ChangeSignal wakes the followers of a backend's change log. Each
// follower has a channel with room for one wake-up, so a signal never
// blocks the writer and a burst of changes is one wake-up: the follower
// reads everything after its revision anyway.
type ChangeSignal struct {
	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

// Watch returns a channel that receives after every Notify from now on,
// and a function that stops it.
func (s *ChangeSignal) Watch() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	if s.subs == nil {
		s.subs = map[chan struct{}]struct{}{}
	}
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.subs, ch)
			s.mu.Unlock()
		})
	}
}

// Notify wakes every watcher that is not already due to wake. It never blocks.
func (s *ChangeSignal) Notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
