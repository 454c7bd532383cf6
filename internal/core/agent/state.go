package agent

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/agentsync"
	"github.com/wid-project/wid/internal/core/rbac"
)

// state is what the auth service last pushed: the trust bundle and the
// workload identities this agent's bot may issue, compiled for matching.
// A state is never modified once built; a push builds a new one.
type state struct {
	generation int64
	td         spiffeid.TrustDomain
	// pos is where the state stands in the auth service's change log
	// (empty epoch: the auth service keeps none for this agent).
	pos agentsync.Position
	// held are the workload identities pushed, sorted by name, with
	// those that cannot be served; served counts the others.
	held   []*heldIdentity
	served int
	// index narrows matching a workload to the identities that may
	// select it (see candidates).
	index []indexEntry
	// undecodable are the documents of the last snapshot that did not
	// decode (their names are unknown); corrupt are those the auth
	// service says are stored corrupt.
	undecodable []error
	corrupt     []*authv1.CorruptResource

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
	// federated are the foreign trust domains' bundles, by trust domain
	// name, decoded from federatedMsg.
	federated    map[string]*federatedBundle
	federatedMsg []*authv1.FederatedBundle
	// locks are the SPIFFE ID locks pushed with the bundle (see locks.go).
	locks []*authv1.AgentLock
	// revokedIDs are the revoked SPIFFE IDs pushed with the bundle, which
	// JWT-SVID validation applies (see locks.go).
	revokedIDs []*authv1.AgentRevokedID
	// crlPEM are the CRLs pushed with the bundle, PEM, for relying
	// parties; revoked are the serials they list (hex, as svid.serial).
	crlPEM  []byte
	revoked map[string]bool
}

// newState decodes a pushed AgentState that is a whole state. A workload
// identity that does not decode or compile is skipped and reported, so one
// bad document cannot stop the agent from serving the rest. Identities
// whose documents are byte for byte those of prev are taken from it rather
// than compiled again: a push that changes only the bundle (a CA rotation
// step) costs little however many identities there are.
func newState(msg *authv1.AgentState, prev *state) (*state, []error, error) {
	td, err := spiffeid.TrustDomainFromString(msg.GetTrustDomain())
	if err != nil {
		return nil, nil, fmt.Errorf("auth service sent trust domain %q: %w", msg.GetTrustDomain(), err)
	}
	s := &state{generation: msg.GetGeneration(), td: td, pos: agentsync.Of(msg), corrupt: msg.GetCorruptWorkloadIdentities()}
	if err := s.setCAs(msg); err != nil {
		return nil, nil, err
	}
	byName := make(map[string]*heldIdentity, len(msg.GetWorkloadIdentities()))
	var fresh []indexEntry
	for _, doc := range msg.GetWorkloadIdentities() {
		h, entries, err := pushed(doc, prev)
		if err != nil {
			s.undecodable = append(s.undecodable, err)
			continue
		}
		byName[h.name] = h
		fresh = append(fresh, entries...)
	}
	s.held = slices.AppendSeq(make([]*heldIdentity, 0, len(byName)), maps.Values(byName))
	s.sortHeld(prev, fresh)
	return s, s.skipped(), nil
}

// applyDelta is prev changed by the delta msg. Any doubt (a delta not based
// on prev, a document that does not decode, so that which identity it
// replaces is unknown) is an error, and the agent asks for a snapshot.
func applyDelta(prev *state, msg *authv1.AgentState) (*state, []error, error) {
	if prev == nil {
		return nil, nil, fmt.Errorf("the auth service sent a delta to an agent that holds no state")
	}
	if err := agentsync.CheckDelta(prev.pos, msg); err != nil {
		return nil, nil, err
	}
	s := *prev
	s.generation, s.pos, s.corrupt = msg.GetGeneration(), agentsync.Of(msg), msg.GetCorruptWorkloadIdentities()
	if msg.GetBundle() != nil {
		if err := s.setCAs(msg); err != nil {
			return nil, nil, err
		}
	}
	// Documents sent replace the identities of their names; removals
	// are applied first, so a name both removed and sent is held.
	sent := make(map[string]*heldIdentity, len(msg.GetWorkloadIdentities()))
	var fresh []indexEntry
	for _, doc := range msg.GetWorkloadIdentities() {
		h, entries, err := pushed(doc, prev)
		if err != nil {
			return nil, nil, err
		}
		sent[h.name] = h
		fresh = append(fresh, entries...)
	}
	removed := make(map[string]bool, len(msg.GetRemovedWorkloadIdentities()))
	for _, n := range msg.GetRemovedWorkloadIdentities() {
		removed[n] = true
	}
	s.held = make([]*heldIdentity, 0, len(prev.held)+len(sent))
	for _, h := range prev.held {
		if !removed[h.name] && sent[h.name] == nil {
			s.held = append(s.held, h)
		}
	}
	for _, h := range sent {
		s.held = append(s.held, h)
	}
	s.sortHeld(prev, fresh)
	return &s, s.skipped(), nil
}

// pushed is one pushed document held: taken from prev when prev holds
// the same document, else decoded and compiled once, to report now an
// identity that cannot be served, and its index entries are returned. err
// is set when the document does not decode.
func pushed(doc []byte, prev *state) (*heldIdentity, []indexEntry, error) {
	wi, err := decodeIdentity(doc)
	if err != nil {
		return nil, nil, err
	}
	h := &heldIdentity{name: wi.Metadata.Name, doc: deflateDoc(doc)}
	if prev != nil {
		if old := heldNamed(prev.held, h.name); old != nil && bytes.Equal(old.doc, h.doc) {
			return old, nil, nil
		}
	}
	// The compiled form is dropped: most held identities never select a
	// workload here, and workload compiles again those that are candidates.
	if _, h.err = rbac.CompileWorkload(wi); h.err != nil {
		return h, nil, nil
	}
	return h, indexEntries(h, wi), nil
}

// setCAs takes the bundle, CAs and host authorities of msg.
func (s *state) setCAs(msg *authv1.AgentState) error {
	b := msg.GetBundle()
	if b == nil || len(b.GetX509Authorities()) == 0 {
		return fmt.Errorf("auth service sent a state without X.509 authorities")
	}
	s.sequence, s.jwtJWKS, s.witJWKS = b.GetSequence(), b.GetJwtJwks(), b.GetWitJwks()
	s.cas, s.hostAuthorities, s.locks = msg.GetCas(), msg.GetHostAuthorities(), msg.GetLocks()
	s.revokedIDs = msg.GetRevokedIds()
	s.crlPEM, s.revoked = nil, nil
	for _, der := range msg.GetCrls() {
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			return fmt.Errorf("auth service sent a CRL that does not parse: %w", err)
		}
		s.crlPEM = append(s.crlPEM, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})...)
		for _, e := range crl.RevokedCertificateEntries {
			if s.revoked == nil {
				s.revoked = map[string]bool{}
			}
			s.revoked[fmt.Sprintf("%032x", e.SerialNumber)] = true
		}
	}
	s.x509Authorities, s.x509BundleDER = nil, nil
	for _, der := range b.GetX509Authorities() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("auth service sent an X.509 authority that does not parse: %w", err)
		}
		s.x509Authorities = append(s.x509Authorities, c)
		s.x509BundleDER = append(s.x509BundleDER, der...)
	}
	if len(s.jwtJWKS) > 0 {
		var err error
		if s.jwtBundle, err = jwtbundle.Parse(s.td, s.jwtJWKS); err != nil {
			return fmt.Errorf("auth service sent a JWT bundle that does not parse: %w", err)
		}
	} else {
		s.jwtBundle = jwtbundle.New(s.td)
	}
	return s.setFederated(b)
}

// sortHeld sorts the identities by name, counts those served and builds
// the index from prev's and the fresh entries.
func (s *state) sortHeld(prev *state, fresh []indexEntry) {
	slices.SortFunc(s.held, func(a, b *heldIdentity) int { return strings.Compare(a.name, b.name) })
	s.served = 0
	for _, h := range s.held {
		if h.err == nil {
			s.served++
		}
	}
	s.index = buildIndex(s.held, prev, fresh)
}

// skipped are the pushed identities the agent cannot serve, sorted.
func (s *state) skipped() []error {
	out := slices.Clone(s.undecodable)
	for _, h := range s.held {
		if h.err != nil {
			out = append(out, h.err)
		}
	}
	return out
}

// sameBundle reports whether two states carry the same trust bundle.
func sameBundle(a, b *state) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.td == b.td && a.sequence == b.sequence && bytes.Equal(a.x509BundleDER, b.x509BundleDER) &&
		bytes.Equal(a.jwtJWKS, b.jwtJWKS) && bytes.Equal(a.witJWKS, b.witJWKS) && sameFederated(a, b)
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
