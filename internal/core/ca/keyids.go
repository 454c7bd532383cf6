package ca

import (
	"context"
	"errors"
	"fmt"

	"github.com/wid-project/wid/internal/core/store"
)

// ErrNoCAs: the store holds no CA at all.
var ErrNoCAs = errors.New("the store holds no CAs")

// Load loads the trust domain's CAs from the store, like Init, but never
// creates them: a store that lost its CAs is an error, not a new trust
// domain.
func (m *Manager) Load(ctx context.Context) error {
	items, err := m.backend.List(ctx, StoreKind)
	if err != nil {
		return fmt.Errorf("listing CAs: %w", err)
	}
	if len(items) == 0 {
		return ErrNoCAs
	}
	return m.Reload(ctx)
}

// KeyIDs returns, per CA type, the IDs of the key sets in use (not
// retired), in document order; nil before Init or Load.
func (m *Manager) KeyIDs() map[string][]string {
	s := m.state.Load()
	if s == nil {
		return nil
	}
	out := make(map[string][]string, len(s.cas))
	for t, a := range s.cas {
		out[string(t)] = liveKeyIDs(a.doc)
	}
	return out
}

// StoredKeyIDs reads KeyIDs straight from the store's CA documents, without
// opening any key: to compare a store with what it should hold before
// trusting it.
func StoredKeyIDs(ctx context.Context, b store.Backend) (map[string][]string, error) {
	items, err := b.List(ctx, StoreKind)
	if err != nil {
		return nil, fmt.Errorf("listing CAs: %w", err)
	}
	out := make(map[string][]string, len(items))
	for _, it := range items {
		doc, err := DecodeDocument(it)
		if err != nil {
			return nil, err
		}
		out[string(doc.Type)] = liveKeyIDs(doc)
	}
	return out, nil
}

func liveKeyIDs(doc Document) []string {
	var ids []string
	for _, ks := range doc.KeySets {
		if ks.State != KeyRetired {
			ids = append(ids, ks.ID)
		}
	}
	return ids
}
