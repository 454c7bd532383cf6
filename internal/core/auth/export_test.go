package auth

import (
	"context"

	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/store"
)

// AddCAKeyForTest adds a key set to CA t as a rotation's init phase does
// (trusted, not signing, sequence bumped) and reloads the CAs.
func (s *Server) AddCAKeyForTest(ctx context.Context, t ca.Type) error {
	item, err := s.db.Get(ctx, ca.StoreKind, string(t))
	if err != nil {
		return err
	}
	doc, err := ca.DecodeDocument(item)
	if err != nil {
		return err
	}
	ks, err := s.cas.NewKeySet(t, ca.KeyAdditional)
	if err != nil {
		return err
	}
	doc.Phase = ca.PhaseInit
	doc.Sequence++
	doc.KeySets = append(doc.KeySets, ks)
	next, err := doc.Item()
	if err != nil {
		return err
	}
	if _, err := s.db.Apply(ctx, store.Op{Type: store.OpUpdate, Item: next, ExpectRevision: item.Revision}); err != nil {
		return err
	}
	return s.cas.Reload(ctx)
}

// CreateEachForTest creates each document in its own store write, without
// auditing: a burst of changes as fast as the store takes them.
func (s *Server) CreateEachForTest(ctx context.Context, docs ...[]byte) error {
	for _, doc := range docs {
		v, err := decodeRequest(doc)
		if err != nil {
			return err
		}
		o, err := op(store.OpCreate, v)
		if err != nil {
			return err
		}
		if _, err := s.res.apply(ctx, o); err != nil {
			return err
		}
	}
	return nil
}

// AgentPushIntervalForTest is agentPushInterval, for tests outside the package.
const AgentPushIntervalForTest = agentPushInterval
