package ca

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/wid-project/wid/internal/core/store"
)

// Rotation is a CA's rotation in progress (or the last one, once it is back
// in standby). It lives in the CA's document, so a restarted auth service
// resumes in the phase it stopped in.
type Rotation struct {
	// Started is when the rotation entered init.
	Started time.Time `json:"started"`
	// PhaseStarted is when the CA entered its current phase.
	PhaseStarted time.Time `json:"phase_started"`
	// GracePeriod is the whole rotation's length in automatic mode.
	GracePeriod time.Duration `json:"grace_period,omitempty"`
	// Tail is how much of an automatic rotation comes after the old key
	// stops signing (update_clients and update_servers, half each): at
	// least the longest life of what the old key signed, so that it
	// expires before the key leaves the bundle; init has the rest.
	Tail time.Duration `json:"tail,omitempty"`
	// Old is the key set that signed before the rotation; New the one made
	// for it.
	Old string `json:"old"`
	New string `json:"new"`
	// RolledBackFrom is the phase a rollback left.
	RolledBackFrom Phase `json:"rolled_back_from,omitempty"`
	// Completed is when the CA returned to standby.
	Completed time.Time `json:"completed,omitzero"`
}

// NextStepAt is when an automatic rotation moves on from its current phase:
// init lasts the grace period less the Tail, update_clients and
// update_servers half the Tail each. Zero for manual rotations and outside
// a rotation.
func (d Document) NextStepAt() time.Time {
	r := d.Rotation
	if d.Mode != ModeAuto || r == nil || r.GracePeriod <= 0 {
		return time.Time{}
	}
	tail := r.Tail
	if tail <= 0 || tail > r.GracePeriod {
		tail = r.GracePeriod * 2 / 3
	}
	switch d.Phase {
	case PhaseInit:
		return r.PhaseStarted.Add(r.GracePeriod - tail)
	case PhaseUpdateClients, PhaseUpdateServers:
		return r.PhaseStarted.Add(tail / 2)
	}
	return time.Time{}
}

// rotationTail is the Tail of an automatic rotation of length grace whose
// old key signed things living up to maxTTL: two thirds of the grace
// period, or maxTTL if longer, never more than the grace period.
func rotationTail(grace, maxTTL time.Duration) time.Duration {
	return min(max(grace*2/3, maxTTL), grace)
}

// NextPhase is where an automatic rotation goes from p; "" at the end.
func NextPhase(p Phase) Phase {
	switch p {
	case PhaseInit:
		return PhaseUpdateClients
	case PhaseUpdateClients:
		return PhaseUpdateServers
	case PhaseUpdateServers, PhaseRollback:
		return PhaseStandby
	}
	return ""
}

// ParsePhase returns the phase named by s.
func ParsePhase(s string) (Phase, error) {
	p := Phase(strings.ToLower(strings.TrimSpace(s)))
	if slices.Contains(phases, p) {
		return p, nil
	}
	names := make([]string, len(phases))
	for i, p := range phases {
		names[i] = string(p)
	}
	return "", fmt.Errorf("unknown rotation phase %q: use one of %s", s, strings.Join(names, ", "))
}

// AllowedPhases lists the phases a CA in phase p may move to.
func AllowedPhases(p Phase) []Phase {
	switch p {
	case PhaseStandby:
		return []Phase{PhaseInit}
	case PhaseInit:
		return []Phase{PhaseUpdateClients, PhaseRollback}
	case PhaseUpdateClients:
		return []Phase{PhaseUpdateServers, PhaseRollback}
	case PhaseUpdateServers:
		return []Phase{PhaseStandby, PhaseRollback}
	case PhaseRollback:
		return []Phase{PhaseStandby}
	}
	return nil
}

// ErrTransition is wrapped by every refused phase change.
var ErrTransition = errors.New("phase change not allowed")

// ErrMoved is wrapped, with ErrTransition, by a phase change refused
// because the CA moved since the caller looked at it: it should look again.
var ErrMoved = errors.New("the CA moved meanwhile")

type transitionError struct {
	msg   string
	moved bool
}

func (e *transitionError) Error() string { return e.msg }
func (e *transitionError) Unwrap() []error {
	if e.moved {
		return []error{ErrTransition, ErrMoved}
	}
	return []error{ErrTransition}
}

func transitionErrorf(format string, args ...any) error {
	return &transitionError{msg: fmt.Sprintf(format, args...)}
}

// movedErrorf is a transitionErrorf that also wraps ErrMoved.
func movedErrorf(format string, args ...any) error {
	return &transitionError{msg: fmt.Sprintf(format, args...), moved: true}
}

// Step is one phase change as it was stored.
type Step struct {
	Type     Type
	From, To Phase
	Mode     Mode
	// Old and New are the fingerprints of the rotation's key sets.
	Old, New string
	// Sequence is the CA's sequence after the step.
	Sequence int64
	Doc      Document
}

// StepRequest asks for one phase change.
type StepRequest struct {
	Type Type
	// From, when set, must be the CA's phase: a step decided on an older
	// reading of the CA (an automatic advance, a gate check) is refused
	// with ErrTransition instead of applied to a newer one.
	From Phase
	To   Phase
	// Mode applies when starting a rotation (standby -> init); a step of a
	// rotation in progress must not ask for another mode. "" is manual.
	Mode Mode
	// GracePeriod is the automatic rotation's length.
	GracePeriod time.Duration
	// MaxTTL is the longest life of what the CA signs, for an automatic
	// rotation's Tail.
	MaxTTL time.Duration
	// Generation, when set, must be the CA's generation: like From, it
	// refuses a step decided on an older reading, even one whose phase
	// came round again.
	Generation int64
}

// Document returns CA t's document as last loaded.
func (m *Manager) Document(t Type) (Document, error) {
	a, err := m.authority(t)
	if err != nil {
		return Document{}, err
	}
	return a.doc, nil
}

// SignerID names the key that signed something: the hex subject key ID of
// an X.509 CA's certificate (what a leaf's authority key ID holds), or the
// kid of a JWT or WIT key.
func (k *KeySet) SignerID() string {
	if k.Cert != nil {
		return hex.EncodeToString(k.Cert.SubjectKeyId)
	}
	return k.KID
}

// SignerID is KeySet.SignerID for a stored key set.
func (ks KeySetDocument) SignerID() (string, error) {
	if len(ks.Cert) == 0 {
		return ks.KID, nil
	}
	skid, err := subjectKeyIDFromCertDER(ks.Cert)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(skid), nil
}

// Step moves CA req.Type to req.To: it reads the CA's document from the
// store, checks the transition, writes the next document with a
// compare-and-set on the revision read (so two auth processes never apply
// the same step twice), and reloads. Gates that depend on agents are the
// caller's: Step checks only what the CA itself allows.
func (m *Manager) Step(ctx context.Context, req StepRequest) (Step, error) {
	item, err := m.backend.Get(ctx, StoreKind, string(req.Type))
	if err != nil {
		return Step{}, fmt.Errorf("reading the %s CA: %w", req.Type, err)
	}
	doc, err := DecodeDocument(item)
	if err != nil {
		return Step{}, err
	}
	next, step, err := m.nextDocument(doc, req)
	if err != nil {
		return Step{}, err
	}
	newItem, err := next.Item()
	if err != nil {
		return Step{}, err
	}
	if _, err := m.backend.Apply(ctx, store.Op{Type: store.OpUpdate, Item: newItem, ExpectRevision: item.Revision}); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return Step{}, movedErrorf("the %s CA changed while this step was being made (the automatic rotation, or another auth process, moved it)", req.Type)
		}
		return Step{}, fmt.Errorf("storing the %s CA: %w", req.Type, err)
	}
	if err := m.Reload(ctx); err != nil {
		return Step{}, fmt.Errorf("the %s CA moved to %s but reloading it failed: %w", req.Type, req.To, err)
	}
	step.Doc = next
	return step, nil
}

// CheckStep says whether doc may take req, without changing anything; the
// error wraps ErrTransition and says which phases are allowed now.
func CheckStep(doc Document, req StepRequest) error {
	from, to := doc.Phase, req.To
	if (req.From != "" && req.From != from) || (req.Generation != 0 && req.Generation != doc.Generation) {
		return movedErrorf("the %s CA moved meanwhile (it is in %s now)", doc.Type, from)
	}
	if !slices.Contains(AllowedPhases(from), to) {
		return transitionErrorf("the %s CA is in %s and cannot move to %s: from %s it may move to %s",
			doc.Type, from, to, from, phaseList(AllowedPhases(from)))
	}
	if from == PhaseStandby {
		if req.Mode == ModeAuto && req.GracePeriod <= 0 {
			return transitionErrorf("an automatic rotation needs a grace period")
		}
		return nil
	}
	if req.Mode != "" && req.Mode != doc.Mode {
		return transitionErrorf("the %s CA is in %s of a rotation in %s mode: %s step cannot move it; let it run, or roll it back with --phase rollback",
			doc.Type, from, doc.Mode, map[Mode]string{ModeAuto: "an automatic", ModeManual: "a manual"}[req.Mode])
	}
	return nil
}

func (m *Manager) nextDocument(doc Document, req StepRequest) (Document, Step, error) {
	if err := CheckStep(doc, req); err != nil {
		return Document{}, Step{}, err
	}
	from, to := doc.Phase, req.To
	now := m.clock().UTC()
	next := doc
	next.KeySets = slices.Clone(doc.KeySets)
	next.Generation++
	step := Step{Type: doc.Type, From: from, To: to}

	if from == PhaseStandby {
		mode := req.Mode
		if mode == "" {
			mode = ModeManual
		}
		old, ok := doc.Active()
		if !ok {
			return Document{}, Step{}, fmt.Errorf("the %s CA has no active key set", doc.Type)
		}
		ks, err := m.rotationKeySet(doc, now)
		if err != nil {
			return Document{}, Step{}, err
		}
		// Keep one earlier rotation's retired keys for the record, no more.
		next.KeySets = slices.DeleteFunc(next.KeySets, func(k KeySetDocument) bool {
			return k.State == KeyRetired && (doc.Rotation == nil || k.ID != doc.Rotation.Old)
		})
		next.KeySets = append(next.KeySets, ks)
		next.Mode = mode
		next.Sequence++
		next.Rotation = &Rotation{Started: now, PhaseStarted: now, Old: old.ID, New: ks.ID}
		if mode == ModeAuto {
			next.Rotation.GracePeriod = req.GracePeriod
			next.Rotation.Tail = rotationTail(req.GracePeriod, req.MaxTTL)
		}
	} else {
		if doc.Rotation == nil {
			return Document{}, Step{}, fmt.Errorf("the %s CA is in %s but has no rotation record: the store is inconsistent", doc.Type, from)
		}
		r := *doc.Rotation
		next.Rotation = &r
		next.Rotation.PhaseStarted = now
		setState := func(id string, st KeyState) error {
			for i := range next.KeySets {
				if next.KeySets[i].ID == id {
					next.KeySets[i].State = st
					if st == KeyRetired {
						// The private key goes; the public record stays.
						next.KeySets[i].EncryptedPrivateKey = nil
					}
					return nil
				}
			}
			return fmt.Errorf("the %s CA's rotation names key set %s, which it does not hold", doc.Type, id)
		}
		var err error
		switch {
		case to == PhaseUpdateClients:
			// The new keys sign; the old ones still verify.
			err = errors.Join(setState(r.New, KeyActive), setState(r.Old, KeyAdditional))
		case to == PhaseUpdateServers:
			// Keys stay as they are: only agents' state changes.
		case to == PhaseStandby && from == PhaseUpdateServers:
			err = setState(r.Old, KeyRetired)
			next.Sequence++
			next.Rotation.Completed = now
		case to == PhaseRollback && from == PhaseInit:
			// Nothing was signed with the new keys yet: they leave at once.
			err = setState(r.New, KeyRetired)
			next.Sequence++
			next.Rotation.RolledBackFrom = from
			next.Rotation.Completed = now
			to = PhaseStandby
			step.To = to
		case to == PhaseRollback:
			// The old keys sign again; the new ones stay trusted until
			// what they signed has been re-issued.
			err = errors.Join(setState(r.Old, KeyActive), setState(r.New, KeyAdditional))
			next.Rotation.RolledBackFrom = from
		case to == PhaseStandby && from == PhaseRollback:
			err = setState(r.New, KeyRetired)
			next.Sequence++
			next.Rotation.Completed = now
		}
		if err != nil {
			return Document{}, Step{}, err
		}
	}
	next.Phase = to
	if to == PhaseStandby {
		next.Mode = ModeManual
		// Keep this rotation's retired keys for the record, no older ones.
		next.KeySets = slices.DeleteFunc(next.KeySets, func(k KeySetDocument) bool {
			return k.State == KeyRetired && k.ID != next.Rotation.Old && k.ID != next.Rotation.New
		})
	}
	if err := next.Validate(); err != nil {
		return Document{}, Step{}, err
	}
	step.Mode = next.Mode
	step.Sequence = next.Sequence
	for _, k := range next.KeySets {
		switch k.ID {
		case next.Rotation.Old:
			step.Old = Fingerprint(k.PublicKey)
		case next.Rotation.New:
			step.New = Fingerprint(k.PublicKey)
		}
	}
	return next, step, nil
}

// rotationKeySet makes the new key set a rotation starts with: a fresh
// self-signed CA, or under an upstream CA a new intermediate that the
// upstream key signs. In CSR mode no key can be signed here: the rotation
// waits for the operator (RequestCSR, then ImportUpstream).
func (m *Manager) rotationKeySet(doc Document, now time.Time) (KeySetDocument, error) {
	switch doc.UpstreamMode() {
	case UpstreamKey:
		up, err := m.upstreamSigner(doc.Upstream)
		if err != nil {
			return KeySetDocument{}, err
		}
		ks, _, err := m.signIntermediate(*doc.Upstream, up, now, KeyAdditional)
		return ks, err
	case UpstreamCSR:
		return KeySetDocument{}, transitionErrorf("the %s CA's upstream key is offline: its next intermediate waits for a signature (widctl ca csr --type %s, then widctl ca import --type %s --cert signed.pem)", doc.Type, doc.Type, doc.Type)
	}
	return generateKeySet(doc.Type, m.td, m.Subject, m.kek, now, m.caTTL(), KeyAdditional)
}

func phaseList(ps []Phase) string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = string(p)
	}
	return strings.Join(names, " or ")
}

func subjectKeyIDFromCertDER(der []byte) ([]byte, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing CA certificate: %w", err)
	}
	return cert.SubjectKeyId, nil
}

// ActiveSignerID is the SignerID of CA t's active key set; "" when unknown.
func (m *Manager) ActiveSignerID(t Type) string {
	a, err := m.authority(t)
	if err != nil || a.active == nil {
		return ""
	}
	return a.active.SignerID()
}

// CAView is one CA as agents see it.
type CAView struct {
	Sequence       int64
	Generation     int64
	Phase          Phase
	ActiveSignerID string
}

// AgentView is everything agents are served from the CAs, read from one
// snapshot: a state pushed while a rotation step is applied is never half
// the old CAs and half the new.
type AgentView struct {
	// X509Authorities are the spiffe CA's trusted certificates.
	X509Authorities []*x509.Certificate
	JWTJWKS         []byte
	WITJWKS         []byte
	BundleSequence  uint64
	// HostAuthorities verify the auth service.
	HostAuthorities []*x509.Certificate
	CAs             map[Type]CAView
}

// AgentView returns the CAs as agents see them.
func (m *Manager) AgentView() (*AgentView, error) {
	s := m.state.Load()
	if s == nil {
		return nil, errNotLoaded
	}
	seq, _ := s.bundle.bundle.SequenceNumber()
	v := &AgentView{
		X509Authorities: slices.Clone(s.cas[TypeSPIFFE].certs),
		JWTJWKS:         slices.Clone(s.bundle.jwtJWKS),
		WITJWKS:         slices.Clone(s.bundle.witJWKS),
		BundleSequence:  seq,
		HostAuthorities: slices.Clone(s.cas[TypeHost].certs),
		CAs:             make(map[Type]CAView, len(Types)),
	}
	for _, t := range Types {
		a := s.cas[t]
		cv := CAView{Sequence: a.doc.Sequence, Generation: a.doc.Generation, Phase: a.doc.Phase}
		if a.active != nil {
			cv.ActiveSignerID = a.active.SignerID()
		}
		v.CAs[t] = cv
	}
	return v, nil
}
