package ca

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/wid-project/wid/internal/core/store"
)

// StoreKind is the store item kind of CA documents; the item name is the CA type.
const StoreKind = "cert_authority"

// Document is one CA as stored. It is the unit of change: a rotation step
// rewrites the whole document with a compare-and-set on its revision, so a
// CA's phase, keys and sequence always change together.
type Document struct {
	Type        Type   `json:"type"`
	TrustDomain string `json:"trust_domain"`
	Phase       Phase  `json:"phase"`
	Mode        Mode   `json:"mode"`
	// Sequence increases with every change to the CA's trusted keys, so that
	// holders of a bundle can tell a newer one.
	Sequence int64            `json:"sequence"`
	KeySets  []KeySetDocument `json:"key_sets"`
	// Generation counts the CA's rotation steps. Unlike Sequence it moves
	// on every step, including those that change no trusted key (entering
	// update_clients or rollback), so an agent's report can say which step
	// it answers.
	Generation int64 `json:"generation,omitempty"`
	// Rotation is the rotation in progress, or the last one; nil for a CA
	// that never rotated.
	Rotation *Rotation `json:"rotation,omitempty"`
	// Upstream is the operator's CA above the spiffe CA; nil while the
	// spiffe CA is its own root.
	Upstream *Upstream `json:"upstream,omitempty"`
	// PendingCSR is an intermediate key waiting for the upstream's
	// signature (CSR mode).
	PendingCSR *PendingCSR `json:"pending_csr,omitempty"`
}

// KeySetDocument is one key pair of a CA, with its certificate for X.509 CAs.
type KeySetDocument struct {
	ID        string    `json:"id"`
	State     KeyState  `json:"state"`
	Algorithm Algorithm `json:"algorithm"`
	// Cert is the CA certificate (DER): self-signed, or an intermediate
	// signed by the upstream CA; empty for jwt and wit.
	Cert []byte `json:"cert,omitempty"`
	// Chain holds the certificates between an intermediate Cert and its
	// root, issuer first, root left out (DER); SVID chains carry them.
	Chain [][]byte `json:"chain,omitempty"`
	// Roots are the trust anchors of an intermediate Cert: the bundle
	// publishes them instead of Cert.
	Roots [][]byte `json:"roots,omitempty"`
	// PublicKey is PKIX DER.
	PublicKey []byte `json:"public_key"`
	// EncryptedPrivateKey is the PKCS#8 private key sealed with the KEK, with
	// the CA type and key set ID as additional data.
	EncryptedPrivateKey []byte `json:"encrypted_private_key"`
	// KID names the key in JWKS and JWT headers (jwt and wit only).
	KID       string    `json:"kid,omitempty"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Created   time.Time `json:"created"`
}

// DecodeDocument decodes and validates a stored CA document.
func DecodeDocument(item store.Item) (Document, error) {
	var d Document
	if err := json.Unmarshal(item.Data, &d); err != nil {
		return Document{}, fmt.Errorf("decoding CA %q: %w", item.Name, err)
	}
	if string(d.Type) != item.Name {
		return Document{}, fmt.Errorf("CA %q: document says type %q", item.Name, d.Type)
	}
	if err := d.Validate(); err != nil {
		return Document{}, err
	}
	return d, nil
}

// Marshal validates d and encodes it for the store.
func (d Document) Marshal() ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(d)
}

// Item returns d as a store item (kind StoreKind, name = type).
func (d Document) Item() (store.Item, error) {
	data, err := d.Marshal()
	if err != nil {
		return store.Item{}, err
	}
	return store.Item{Kind: StoreKind, Name: string(d.Type), Data: data}, nil
}

// Active returns the key set that signs.
func (d Document) Active() (KeySetDocument, bool) {
	for _, ks := range d.KeySets {
		if ks.State == KeyActive {
			return ks, true
		}
	}
	return KeySetDocument{}, false
}

// Validate checks the invariants every stored CA keeps in every phase,
// including in the middle of a rotation.
func (d Document) Validate() error {
	if !d.Type.valid() {
		return fmt.Errorf("CA document has unknown type %q", d.Type)
	}
	if d.TrustDomain == "" {
		return fmt.Errorf("CA %s has no trust domain", d.Type)
	}
	if !slices.Contains(phases, d.Phase) {
		return fmt.Errorf("CA %s has unknown phase %q", d.Type, d.Phase)
	}
	if d.Mode != ModeManual && d.Mode != ModeAuto {
		return fmt.Errorf("CA %s has unknown mode %q", d.Type, d.Mode)
	}
	if d.Sequence < 1 {
		return fmt.Errorf("CA %s has sequence %d, want at least 1", d.Type, d.Sequence)
	}
	active := 0
	ids := map[string]bool{}
	kids := map[string]bool{}
	for i, ks := range d.KeySets {
		if err := ks.validate(d.Type); err != nil {
			return fmt.Errorf("CA %s key set %d: %w", d.Type, i, err)
		}
		if ids[ks.ID] {
			return fmt.Errorf("CA %s has two key sets with id %s", d.Type, ks.ID)
		}
		ids[ks.ID] = true
		if ks.KID != "" {
			if kids[ks.KID] {
				return fmt.Errorf("CA %s has two key sets with kid %s", d.Type, ks.KID)
			}
			kids[ks.KID] = true
		}
		if ks.State == KeyActive {
			active++
		}
	}
	if active != 1 {
		return fmt.Errorf("CA %s has %d active key sets, want exactly 1", d.Type, active)
	}
	if d.Upstream != nil || d.PendingCSR != nil {
		if d.Type != TypeSPIFFE {
			return fmt.Errorf("CA %s has an upstream CA, which only the spiffe CA may have", d.Type)
		}
		if d.Upstream != nil {
			if err := d.Upstream.validate(); err != nil {
				return fmt.Errorf("CA %s: %w", d.Type, err)
			}
		}
		if d.PendingCSR != nil {
			if err := d.PendingCSR.validate(); err != nil {
				return fmt.Errorf("CA %s: %w", d.Type, err)
			}
		}
	}
	if d.Phase != PhaseStandby {
		if d.Rotation == nil || !ids[d.Rotation.Old] || !ids[d.Rotation.New] {
			return fmt.Errorf("CA %s is in %s without a rotation record naming its old and new key sets", d.Type, d.Phase)
		}
	}
	return nil
}

func (ks KeySetDocument) validate(t Type) error {
	switch {
	case ks.ID == "":
		return fmt.Errorf("no id")
	case ks.State != KeyActive && ks.State != KeyAdditional && ks.State != KeyRetired:
		return fmt.Errorf("unknown state %q", ks.State)
	case ks.Algorithm != AlgorithmECDSAP256:
		return fmt.Errorf("unsupported algorithm %q", ks.Algorithm)
	case len(ks.PublicKey) == 0:
		return fmt.Errorf("no public key")
	case len(ks.EncryptedPrivateKey) == 0 && ks.State != KeyRetired:
		return fmt.Errorf("no private key")
	case t.HasCertificate() && len(ks.Cert) == 0:
		return fmt.Errorf("no certificate")
	case !t.HasCertificate() && ks.KID == "":
		return fmt.Errorf("no kid")
	case !ks.NotAfter.After(ks.NotBefore):
		return fmt.Errorf("not_after %s is not after not_before %s", ks.NotAfter.Format(time.RFC3339), ks.NotBefore.Format(time.RFC3339))
	}
	pub, err := x509.ParsePKIXPublicKey(ks.PublicKey)
	if err != nil {
		return fmt.Errorf("parsing public key: %w", err)
	}
	if err := checkAlgorithm(ks.Algorithm, pub); err != nil {
		return err
	}
	if len(ks.Cert) > 0 {
		cert, err := x509.ParseCertificate(ks.Cert)
		if err != nil {
			return fmt.Errorf("parsing certificate: %w", err)
		}
		if !cert.IsCA || !cert.BasicConstraintsValid {
			return fmt.Errorf("certificate is not a CA certificate")
		}
		if !samePublicKey(cert.PublicKey, pub) {
			return fmt.Errorf("certificate does not hold the key set's public key")
		}
	}
	if (len(ks.Chain) > 0 || len(ks.Roots) > 0) && t != TypeSPIFFE {
		return fmt.Errorf("only spiffe key sets have an upstream chain")
	}
	for _, der := range slices.Concat(ks.Chain, ks.Roots) {
		if _, err := x509.ParseCertificate(der); err != nil {
			return fmt.Errorf("parsing upstream chain: %w", err)
		}
	}
	return nil
}
