// Package catest gives tests a ready trust domain: an in-memory store holding
// just what the ca package uses, and a loaded ca.Manager. For tests only.
package catest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/store"
)

// errNoAudit: the memory store keeps no audit log.
var errNoAudit = errors.New("the catest memory store keeps no audit log")

// errNoChanges: the memory store keeps no change log.
var errNoChanges = errors.New("the catest memory store keeps no change log")

// Store is an in-memory store.Backend for items and metadata, with the same
// all-or-nothing Apply and revision rules as the real backends. Its audit
// and change log methods return an error.
type Store struct {
	mu    sync.Mutex
	items map[string]store.Item // by kind + "/" + name
	meta  map[string]string
	rev   int64

	// FailApply, when set, is returned by the next Apply calls instead of
	// applying anything, to test what callers do when the store fails.
	FailApply error
}

var _ store.Backend = (*Store)(nil)

// NewStore returns an empty Store.
func NewStore() *Store {
	return &Store{items: map[string]store.Item{}, meta: map[string]string{}}
}

func key(kind, name string) string { return kind + "/" + name }

func (s *Store) Get(_ context.Context, kind, name string) (store.Item, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.items[key(kind, name)]
	if !ok {
		return store.Item{}, fmt.Errorf("%s %q: %w", kind, name, store.ErrNotFound)
	}
	it.Data = slices.Clone(it.Data)
	return it, nil
}

func (s *Store) List(_ context.Context, kind string) ([]store.Item, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.Item
	for _, it := range s.items {
		if it.Kind == kind {
			it.Data = slices.Clone(it.Data)
			out = append(out, it)
		}
	}
	slices.SortFunc(out, func(a, b store.Item) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (s *Store) Apply(_ context.Context, ops ...store.Op) ([]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.FailApply != nil {
		return nil, s.FailApply
	}
	// Work on a copy so a failing op leaves nothing half-applied.
	next := make(map[string]store.Item, len(s.items))
	for k, v := range s.items {
		next[k] = v
	}
	rev := s.rev
	revs := make([]int64, len(ops))
	for i, op := range ops {
		k := key(op.Item.Kind, op.Item.Name)
		cur, exists := next[k]
		switch op.Type {
		case store.OpCreate:
			if exists {
				return nil, fmt.Errorf("%s: %w", k, store.ErrAlreadyExists)
			}
		case store.OpUpdate, store.OpDelete:
			if !exists {
				return nil, fmt.Errorf("%s: %w", k, store.ErrNotFound)
			}
			if op.ExpectRevision != 0 && cur.Revision != op.ExpectRevision {
				return nil, fmt.Errorf("%s: %w", k, store.ErrConflict)
			}
		case store.OpUpsert:
		default:
			return nil, fmt.Errorf("unknown op type %d", op.Type)
		}
		if op.Type == store.OpDelete {
			delete(next, k)
			continue
		}
		rev++
		it := op.Item
		it.Data = slices.Clone(it.Data)
		it.Revision = rev
		next[k] = it
		revs[i] = rev
	}
	s.items, s.rev = next, rev
	return revs, nil
}

func (s *Store) GetMeta(_ context.Context, k string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.meta[k]
	if !ok {
		return "", fmt.Errorf("meta %q: %w", k, store.ErrNotFound)
	}
	return v, nil
}

func (s *Store) PutMetaOnce(_ context.Context, k, v string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.meta[k]; ok && cur != v {
		return fmt.Errorf("meta %q: %w", k, store.ErrConflict)
	}
	s.meta[k] = v
	return nil
}

func (s *Store) AppendAudit(context.Context, []store.AuditRow) error { return errNoAudit }

func (s *Store) AuditHead(context.Context) (int64, string, error) { return 0, "", errNoAudit }

func (s *Store) QueryAudit(context.Context, store.AuditFilter) ([]store.AuditRow, error) {
	return nil, errNoAudit
}

func (s *Store) ScanAudit(context.Context, int64, func(store.AuditRow) error) error {
	return errNoAudit
}

func (s *Store) ChangesAfter(context.Context, int64, int) ([]store.Change, error) {
	return nil, errNoChanges
}

func (s *Store) ChangeHead(context.Context) (int64, error) { return 0, errNoChanges }

func (s *Store) PruneChanges(context.Context, int, time.Time, int) (int, error) {
	return 0, errNoChanges
}

// WatchChanges never wakes: nothing follows this store's changes.
func (s *Store) WatchChanges() (<-chan struct{}, func()) { return nil, func() {} }

func (s *Store) Close() error { return nil }

// TrustDomain is the trust domain NewManager uses.
var TrustDomain = spiffeid.RequireTrustDomainFromString("example.org")

// NewManager returns an initialised Manager for TrustDomain on a fresh
// memory store, with its KEK in a temporary directory, and that store.
func NewManager(tb testing.TB, clock func() time.Time) (*ca.Manager, *Store) {
	tb.Helper()
	kek, err := ca.LoadOrCreateKEK(filepath.Join(tb.TempDir(), "keys"))
	if err != nil {
		tb.Fatalf("creating KEK: %v", err)
	}
	st := NewStore()
	m := ca.NewManager(st, kek, TrustDomain, clock)
	if _, err := m.Init(context.Background()); err != nil {
		tb.Fatalf("initialising CAs: %v", err)
	}
	return m, st
}
