package auth

import (
	"context"
	"time"

	"golang.org/x/time/rate"

	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/lease"
	"github.com/wid-project/wid/internal/core/login"
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

// SetArgon2MemoryForTest makes password hashes cheap for the rest of the
// test, so that a test can run many logins at once without taking 64 MiB
// each.
func SetArgon2MemoryForTest(t interface{ Cleanup(func()) }, kib uint32) {
	login.SetArgon2MemoryForTest(t, kib)
}

// SetLoginLimitsForTest replaces the login admission bounds: concurrent
// hashes, and the per-source and per-user rates and bursts.
func (s *Server) SetLoginLimitsForTest(concurrent int, perSecond float64, burst int) {
	s.logins = login.NewLimiterWith(time.Now, concurrent, rate.Limit(perSecond), burst)
}

// DenialRate and DenialBurst are how many denials per source reach the
// audit log: a burst, then so many a second.
const (
	DenialRate  = float64(denialRate)
	DenialBurst = denialBurst
)

// FlushDenialSummaryForTest writes the summary of unrecorded denials now.
func (s *Server) FlushDenialSummaryForTest(ctx context.Context) { s.flushDenialSummary(ctx) }

// CredentialDataForTest is the stored credential document of user.
func (s *Server) CredentialDataForTest(ctx context.Context, user string) ([]byte, error) {
	item, err := s.db.Get(ctx, login.CredentialKind, user)
	return item.Data, err
}

// PutCredentialDataForTest overwrites user's stored credential document, as
// an earlier version may have written it.
func (s *Server) PutCredentialDataForTest(ctx context.Context, user string, data []byte) error {
	_, err := s.db.Apply(ctx, store.Op{Type: store.OpUpsert, Item: store.Item{Kind: login.CredentialKind, Name: user, Data: data}})
	return err
}

// SealTOTPSecretsForTest runs the start-up sealing of clear TOTP secrets.
func (s *Server) SealTOTPSecretsForTest(ctx context.Context) error {
	return login.SealTOTPSecrets(ctx, s.db, s.kek, s.log)
}

// KubernetesJoinRefusedForTest is the one answer of a refused kubernetes join.
func (s *Server) KubernetesJoinRefusedForTest() string { return s.kubernetesJoinRefused() }

// FailLoginForTest counts one wrong login of user name from source, as a
// wrong password sent from that address would.
func (s *Server) FailLoginForTest(ctx context.Context, name, source string) error {
	return s.loginFailed(ctx, name, true, source, "wrong password")
}

// StoredDataForTest is the document of kind/name as the store holds it.
func (s *Server) StoredDataForTest(ctx context.Context, kind, name string) ([]byte, error) {
	item, err := s.db.Get(ctx, kind, name)
	return item.Data, err
}

// ReplicaForTest names this auth process among the replicas of its store.
func (s *Server) ReplicaForTest() string { return s.replica }

// PeriodicLeaseHolderForTest is the replica that the store says holds the
// periodic-work lease.
func (s *Server) PeriodicLeaseHolderForTest(ctx context.Context) (string, error) {
	return lease.New(s.db, periodicLease, s.replica, s.cfg.LeaseTTL, nil).Holder(ctx)
}

// CloseStoreForTest cuts this process off its store, as its death or a
// network partition would: nothing it does reaches the store any more.
func (s *Server) CloseStoreForTest() { s.db.Close() }

// ForgetIdleUnknownLoginsForTest runs the lease holder's sweep of the
// failed-login counts of unknown names now.
func (s *Server) ForgetIdleUnknownLoginsForTest(ctx context.Context) {
	login.ForgetIdleUnknown(ctx, s.db, s.clock(), s.log)
}

// UnknownLoginStoredForTest says whether the store counts failed logins
// of name, which is not a user.
func (s *Server) UnknownLoginStoredForTest(ctx context.Context, name string) (bool, error) {
	_, e, err := login.UnknownFailures(ctx, s.db, name)
	if err != nil {
		return false, err
	}
	return e.Stored(), nil
}

// UnknownPerBucketForTest is how many unknown names one stored bucket counts.
const UnknownPerBucketForTest = login.UnknownPerBucket

// UnknownLoginKind is the store kind of unknown names' failed logins.
const UnknownLoginKind = login.UnknownKind

// UnknownBucketForTest names the stored bucket of unknown name's counts.
func UnknownBucketForTest(name string) string { return login.UnknownBucketKey(name) }

// FailUnknownLoginForTest counts one wrong login of name, which is not a
// user, from source.
func (s *Server) FailUnknownLoginForTest(ctx context.Context, name, source string) error {
	return s.loginFailed(ctx, name, false, source, "wrong password")
}

// StoredItemsForTest counts the stored items of kind.
func (s *Server) StoredItemsForTest(ctx context.Context, kind string) (int, error) {
	items, err := s.db.List(ctx, kind)
	return len(items), err
}

// PauseChangeFeedForTest stops the change feed from applying changes until
// resume is called, as if this replica had been cut off from the store's
// notifications and log for a while.
func (s *Server) PauseChangeFeedForTest() (resume func()) {
	s.feed.mu.Lock()
	return s.feed.mu.Unlock
}
