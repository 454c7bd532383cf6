package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wid-project/wid/internal/core/store"
)

var errNotLoaded = errors.New("the CAs are not loaded yet: call Init first")

// Manager holds the trust domain's CAs in memory, decrypted, and answers the
// hot path (signers, pools, bundles) without touching the store or the KEK.
// The store is the source of truth: CAs change there (rotation) and Reload
// brings the Manager up to date.
type Manager struct {
	// CATTL is how long new CA certificates and keys are valid
	// (DefaultCATTL when zero). Set it before Init.
	CATTL time.Duration
	// Subject is the subject of new CA certificates (ca_subject); set it
	// before Init. Certificates already made keep theirs until rotated.
	Subject Subject

	backend store.Backend
	kek     *KEK
	td      spiffeid.TrustDomain
	clock   func() time.Time

	// reloadMu serialises Init and Reload, and guards signers.
	reloadMu sync.Mutex
	// signers caches decrypted private keys by CA type, key set ID and
	// sealed key, so a reload decrypts only keys it has not seen.
	signers map[string]crypto.Signer

	// state is replaced whole on every reload, so readers never see half of
	// a change and never wait for a reload.
	state atomic.Pointer[snapshot]

	// onChange are called after every reload (see OnChange).
	onChangeMu sync.Mutex
	onChange   []func()
}

type snapshot struct {
	cas       map[Type]*authority
	bundle    *bundleData
	hostPin   string
	summaries []Summary
}

type authority struct {
	doc    Document
	active *KeySet
	// trusted holds the active and additional key sets, in document order.
	trusted []*KeySet
	certs   []*x509.Certificate
	pool    *x509.CertPool
	jwtKeys map[string]crypto.PublicKey
}

// NewManager returns a Manager for trust domain td whose CAs live in b,
// sealed with kek. clock defaults to time.Now.
func NewManager(b store.Backend, kek *KEK, td spiffeid.TrustDomain, clock func() time.Time) *Manager {
	if clock == nil {
		clock = time.Now
	}
	return &Manager{backend: b, kek: kek, td: td, clock: clock, signers: map[string]crypto.Signer{}}
}

// Init creates the trust domain's CAs if the store has none, all in one
// transaction, then loads them. created reports whether this call made them.
func (m *Manager) Init(ctx context.Context) (created bool, err error) {
	items, err := m.backend.List(ctx, StoreKind)
	if err != nil {
		return false, fmt.Errorf("listing CAs: %w", err)
	}
	if len(items) == 0 {
		created, err = m.create(ctx)
		if err != nil {
			return false, err
		}
	} else if len(items) < len(Types) {
		return false, inconsistent(items)
	}
	if err := m.Reload(ctx); err != nil {
		return false, err
	}
	return created, nil
}

func inconsistent(items []store.Item) error {
	present := map[string]bool{}
	for _, it := range items {
		present[it.Name] = true
	}
	var have, missing []string
	for _, t := range Types {
		if present[string(t)] {
			have = append(have, string(t))
		} else {
			missing = append(missing, string(t))
		}
	}
	return fmt.Errorf("the store holds the %s CAs but not %s: it is inconsistent, restore it from a backup",
		strings.Join(have, ", "), strings.Join(missing, ", "))
}

func (m *Manager) create(ctx context.Context) (bool, error) {
	now := m.clock()
	ops := make([]store.Op, 0, len(Types))
	for _, t := range Types {
		ks, err := generateKeySet(t, m.td, m.Subject, m.kek, now, m.caTTL(), KeyActive)
		if err != nil {
			return false, err
		}
		doc := Document{
			Type:        t,
			TrustDomain: m.td.Name(),
			Phase:       PhaseStandby,
			Mode:        ModeManual,
			Sequence:    1,
			KeySets:     []KeySetDocument{ks},
		}
		item, err := doc.Item()
		if err != nil {
			return false, fmt.Errorf("creating %s CA: %w", t, err)
		}
		ops = append(ops, store.Op{Type: store.OpCreate, Item: item})
	}
	if _, err := m.backend.Apply(ctx, ops...); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			// Another auth process sharing the store created them first;
			// theirs are the trust domain's CAs.
			return false, nil
		}
		return false, fmt.Errorf("storing new CAs: %w", err)
	}
	return true, nil
}

func (m *Manager) caTTL() time.Duration {
	if m.CATTL > 0 {
		return m.CATTL
	}
	return DefaultCATTL
}

// Reload reads every CA from the store and replaces the in-memory view at
// once. On error the previous view stays in use.
func (m *Manager) Reload(ctx context.Context) error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()

	items, err := m.backend.List(ctx, StoreKind)
	if err != nil {
		return fmt.Errorf("listing CAs: %w", err)
	}
	byType := make(map[Type]store.Item, len(items))
	for _, it := range items {
		t := Type(it.Name)
		if !t.valid() {
			return fmt.Errorf("the store holds a CA of unknown type %q", it.Name)
		}
		byType[t] = it
	}
	if len(byType) != len(Types) {
		return inconsistent(items)
	}

	next := &snapshot{cas: make(map[Type]*authority, len(Types))}
	signers := make(map[string]crypto.Signer, len(m.signers))
	for _, t := range Types {
		a, err := m.loadAuthority(byType[t], signers)
		if err != nil {
			return err
		}
		next.cas[t] = a
	}
	if next.bundle, err = buildBundle(m.td, next.cas[TypeSPIFFE], next.cas[TypeJWT], next.cas[TypeWIT]); err != nil {
		return err
	}
	next.hostPin = Fingerprint(next.cas[TypeHost].active.Cert.RawSubjectPublicKeyInfo)
	next.summaries = summarize(next.cas)

	m.state.Store(next)
	// Keys that left the store leave memory too.
	m.signers = signers
	m.onChangeMu.Lock()
	fns := slices.Clone(m.onChange)
	m.onChangeMu.Unlock()
	for _, fn := range fns {
		fn()
	}
	return nil
}

// OnChange registers fn to be called after every successful Init or Reload,
// once the new CAs are in use: whoever serves something built from the CAs
// (bundles pushed to agents) rebuilds it then. A reload that changed
// nothing calls fn too; fn must be quick and must not call Reload.
func (m *Manager) OnChange(fn func()) {
	m.onChangeMu.Lock()
	defer m.onChangeMu.Unlock()
	m.onChange = append(m.onChange, fn)
}

func (m *Manager) loadAuthority(item store.Item, signers map[string]crypto.Signer) (*authority, error) {
	doc, err := DecodeDocument(item)
	if err != nil {
		return nil, err
	}
	if doc.TrustDomain != m.td.Name() {
		return nil, fmt.Errorf("the %s CA in the store belongs to trust domain %q, not %q", doc.Type, doc.TrustDomain, m.td.Name())
	}
	a := &authority{
		doc:     doc,
		pool:    x509.NewCertPool(),
		jwtKeys: map[string]crypto.PublicKey{},
	}
	for _, d := range doc.KeySets {
		if d.State == KeyRetired {
			continue
		}
		// The sealed bytes are part of the key: if they change in the store,
		// they are opened (and checked) again rather than trusted from memory.
		cacheKey := string(doc.Type) + "\x00" + d.ID + "\x00" + string(d.EncryptedPrivateKey)
		ks, err := openKeySet(doc.Type, d, m.kek, m.signers[cacheKey])
		if err != nil {
			return nil, fmt.Errorf("loading %s CA key set %s: %w", doc.Type, d.ID, err)
		}
		signers[cacheKey] = ks.Signer
		if ks.State == KeyActive {
			a.active = ks
		}
		a.trusted = append(a.trusted, ks)
		// An intermediate is verified through its roots, which are what
		// the bundle holds; a self-signed certificate is its own anchor.
		anchors := ks.Roots
		if len(anchors) == 0 && ks.Cert != nil {
			anchors = []*x509.Certificate{ks.Cert}
		}
		for _, c := range anchors {
			if !slices.ContainsFunc(a.certs, c.Equal) {
				a.certs = append(a.certs, c)
				a.pool.AddCert(c)
			}
		}
		if ks.KID != "" {
			a.jwtKeys[ks.KID] = ks.PublicKey
		}
	}
	return a, nil
}

func (m *Manager) authority(t Type) (*authority, error) {
	s := m.state.Load()
	if s == nil {
		return nil, errNotLoaded
	}
	a, ok := s.cas[t]
	if !ok {
		return nil, fmt.Errorf("unknown CA type %q: use one of %s", t, typeList())
	}
	return a, nil
}

// TrustDomain is the trust domain the Manager serves.
func (m *Manager) TrustDomain() spiffeid.TrustDomain { return m.td }

// Signer returns the active key set of CA t: the one that signs.
func (m *Manager) Signer(t Type) (*KeySet, error) {
	a, err := m.authority(t)
	if err != nil {
		return nil, err
	}
	return a.active, nil
}

// Authorities returns the CA certificates that verify what CA t signs: the
// active and additional key sets' certificates. Empty for jwt and wit.
func (m *Manager) Authorities(t Type) []*x509.Certificate {
	a, err := m.authority(t)
	if err != nil {
		return nil
	}
	return append([]*x509.Certificate(nil), a.certs...)
}

// KeySets returns CA t's trusted key sets, active and additional, in
// document order: during a rotation, both keys whose certificates are still
// in use. Key sets are shared and must not be modified.
func (m *Manager) KeySets(t Type) []*KeySet {
	a, err := m.authority(t)
	if err != nil {
		return nil
	}
	return slices.Clone(a.trusted)
}

// CertPool returns a new pool of Authorities(t). It is never nil, even for
// jwt, wit or an unknown type, because a nil pool in a tls.Config means
// "trust the system roots".
func (m *Manager) CertPool(t Type) *x509.CertPool {
	a, err := m.authority(t)
	if err != nil {
		return x509.NewCertPool()
	}
	return a.pool.Clone()
}

// JWTKeys returns the public keys of CA t's trusted key sets by kid (jwt and
// wit; empty for the others).
func (m *Manager) JWTKeys(t Type) map[string]crypto.PublicKey {
	a, err := m.authority(t)
	if err != nil {
		return map[string]crypto.PublicKey{}
	}
	return maps.Clone(a.jwtKeys)
}

// HostPin is the pin that clients check on first contact: "sha256:" and the
// hex SHA-256 of the active host CA certificate's SubjectPublicKeyInfo.
func (m *Manager) HostPin() string {
	s := m.state.Load()
	if s == nil {
		return ""
	}
	return s.hostPin
}

// NewKeySet generates a key set for CA t in the given state, sealed with the
// Manager's KEK, for a rotation to add to the CA's document. It does not
// touch the store.
func (m *Manager) NewKeySet(t Type, state KeyState) (KeySetDocument, error) {
	if !t.valid() {
		return KeySetDocument{}, fmt.Errorf("unknown CA type %q: use one of %s", t, typeList())
	}
	return generateKeySet(t, m.td, m.Subject, m.kek, m.clock(), m.caTTL(), state)
}
