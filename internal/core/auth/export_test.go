package auth

import (
	"context"

	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/store"
)

// AddCAKeyForTest starts a rotation of CA t: its init phase adds a key set
// (trusted, not signing) and bumps the sequence.
func (s *Server) AddCAKeyForTest(ctx context.Context, t ca.Type) error {
	_, err := s.cas.Step(ctx, ca.StepRequest{Type: t, To: ca.PhaseInit})
	return err
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
