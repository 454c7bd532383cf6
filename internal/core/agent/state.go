package agent

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"slices"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
)

// state is what the auth service last pushed: the trust bundle and the
// workload identities this agent's bot may issue, compiled for matching.
// A state is never modified once built; a push builds a new one.
type state struct {
	generation int64
	td         spiffeid.TrustDomain
	// identities, sorted by name.
	identities []*rbac.Workload

	x509Authorities []*x509.Certificate
	// x509BundleDER is the authorities' DER, concatenated, as the Workload
	// API carries an X.509 bundle.
	x509BundleDER []byte
	jwtBundle     *jwtbundle.Bundle
	jwtJWKS       []byte
	witJWKS       []byte
	sequence      int64
	// cas are each CA type's sequence and signing key.
	cas map[string]*authv1.AgentCA
	// hostAuthorities verify the auth service (DER).
	hostAuthorities [][]byte
	// compiled maps each identity's document to its compiled form, for
	// the next state to reuse.
	compiled map[string]*rbac.Workload
}

// newState decodes a pushed AgentState. A workload identity that does not
// decode or compile is skipped and reported, so one bad document cannot
// stop the agent from serving the rest. Identities whose documents are
// byte for byte those of prev are taken from it rather than compiled again:
// a push that changes only the bundle (a CA rotation step) costs little
// however many identities there are.
func newState(msg *authv1.AgentState, prev *state) (*state, []error, error) {
	td, err := spiffeid.TrustDomainFromString(msg.GetTrustDomain())
	if err != nil {
		return nil, nil, fmt.Errorf("auth service sent trust domain %q: %w", msg.GetTrustDomain(), err)
	}
	b := msg.GetBundle()
	if b == nil || len(b.GetX509Authorities()) == 0 {
		return nil, nil, fmt.Errorf("auth service sent a state without X.509 authorities")
	}
	s := &state{generation: msg.GetGeneration(), td: td, sequence: b.GetSequence(), jwtJWKS: b.GetJwtJwks(), witJWKS: b.GetWitJwks(),
		cas: msg.GetCas(), hostAuthorities: msg.GetHostAuthorities()}
	for _, der := range b.GetX509Authorities() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("auth service sent an X.509 authority that does not parse: %w", err)
		}
		s.x509Authorities = append(s.x509Authorities, c)
		s.x509BundleDER = append(s.x509BundleDER, der...)
	}
	if len(s.jwtJWKS) > 0 {
		s.jwtBundle, err = jwtbundle.Parse(td, s.jwtJWKS)
		if err != nil {
			return nil, nil, fmt.Errorf("auth service sent a JWT bundle that does not parse: %w", err)
		}
	} else {
		s.jwtBundle = jwtbundle.New(td)
	}
	var skipped []error
	s.compiled = make(map[string]*rbac.Workload, len(msg.GetWorkloadIdentities()))
	for _, doc := range msg.GetWorkloadIdentities() {
		if prev != nil {
			if w, ok := prev.compiled[string(doc)]; ok {
				s.compiled[string(doc)] = w
				s.identities = append(s.identities, w)
				continue
			}
		}
		v, err := resource.UnmarshalStored(doc)
		if err != nil {
			skipped = append(skipped, fmt.Errorf("decoding a workload identity: %w", err))
			continue
		}
		wi, ok := v.(*resource.WorkloadIdentity)
		if !ok {
			skipped = append(skipped, fmt.Errorf("auth service sent a %s where a workload identity was expected", v.GetKind()))
			continue
		}
		w, err := rbac.CompileWorkload(wi)
		if err != nil {
			skipped = append(skipped, err)
			continue
		}
		s.compiled[string(doc)] = w
		s.identities = append(s.identities, w)
	}
	slices.SortFunc(s.identities, func(a, b *rbac.Workload) int {
		switch {
		case a.Name() < b.Name():
			return -1
		case a.Name() > b.Name():
			return 1
		}
		return 0
	})
	return s, skipped, nil
}

// sameBundle reports whether two states carry the same trust bundle.
func sameBundle(a, b *state) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.td == b.td && a.sequence == b.sequence && bytes.Equal(a.x509BundleDER, b.x509BundleDER) &&
		bytes.Equal(a.jwtJWKS, b.jwtJWKS) && bytes.Equal(a.witJWKS, b.witJWKS)
}

// notifier wakes every waiter when something changes: wait returns a channel
// that is closed by the next notify. Waiters take a new channel after each
// wake, so none misses a change made after it started waiting.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func newNotifier() *notifier { return &notifier{ch: make(chan struct{})} }

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	close(n.ch)
	n.ch = make(chan struct{})
}
