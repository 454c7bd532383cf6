package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultCATTL is how long a new CA certificate or key is valid.
const DefaultCATTL = 365 * 24 * time.Hour

// backdate covers clock skew between the auth service and verifiers.
const backdate = time.Minute

// KeySet is a CA key set decrypted and ready to use. Key sets are shared by
// every caller and must not be modified.
type KeySet struct {
	ID        string
	Type      Type
	State     KeyState
	Algorithm Algorithm
	// Cert is the CA certificate; nil for jwt and wit.
	Cert *x509.Certificate
	// Chain holds the certificates between an intermediate Cert and its
	// root (root left out): what goes after Cert in an SVID's chain.
	Chain []*x509.Certificate
	// Roots are an intermediate Cert's trust anchors; empty for a
	// self-signed Cert.
	Roots     []*x509.Certificate
	PublicKey crypto.PublicKey
	// Signer holds the private key. Never log or print it.
	Signer crypto.Signer
	// KID names the key in JWT headers and JWKS (jwt and wit only).
	KID       string
	NotBefore time.Time
	NotAfter  time.Time
	// Fingerprint is "sha256:" + hex of the SHA-256 of the public key's SPKI DER.
	Fingerprint string
}

// String keeps the private key out of %v and %s.
func (k KeySet) String() string {
	return fmt.Sprintf("%s key set %s (%s, %s)", k.Type, k.ID, k.State, k.Fingerprint)
}

// GoString keeps the private key out of %#v.
func (k KeySet) GoString() string { return k.String() }

// LogValue keeps the private key out of slog output.
func (k KeySet) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("type", string(k.Type)),
		slog.String("id", k.ID),
		slog.String("state", string(k.State)),
		slog.String("fingerprint", k.Fingerprint),
		slog.Time("not_after", k.NotAfter),
	)
}

// Fingerprint returns "sha256:" and the hex SHA-256 of a DER
// SubjectPublicKeyInfo: the form of CA pins and of key fingerprints.
func Fingerprint(spkiDER []byte) string {
	sum := sha256.Sum256(spkiDER)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// SubjectKeyID computes a subject key identifier with method 1 of RFC 7093
// (the leftmost 160 bits of the SHA-256 of the subjectPublicKey bits), the
// method Go uses for the CA certificates it generates.
func SubjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	// EC and Ed25519 keys are their own subjectPublicKey bits; skipping the
	// DER round trip matters on the issuance path.
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if raw, err := k.Bytes(); err == nil {
			sum := sha256.Sum256(raw)
			return sum[:20], nil
		}
	case ed25519.PublicKey:
		sum := sha256.Sum256(k)
		return sum[:20], nil
	}
	return subjectKeyIDFromSPKI(pub)
}

func subjectKeyIDFromSPKI(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("decoding public key: %w", err)
	}
	sum := sha256.Sum256(spki.PublicKey.Bytes)
	return sum[:20], nil
}

// RandomSerial returns a positive serial number holding 128 random bits.
func RandomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	for {
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("generating serial number: %w", err)
		}
		// Zero is not a valid serial; the chance is 2^-128 but costs nothing to rule out.
		if n := new(big.Int).SetBytes(b); n.Sign() > 0 {
			return n, nil
		}
	}
}

// FormatSerial is the one way wid prints a certificate serial number, in
// responses, audit events, the CLI and the TUI, so that the serial a user
// reads in one place can be searched for in another: lower-case hex,
// zero-padded to the 32 digits of the 128-bit serials wid issues (a longer
// serial of a foreign certificate keeps all its digits).
func FormatSerial(n *big.Int) string {
	if n == nil {
		return ""
	}
	return fmt.Sprintf("%032x", n)
}

// keyAAD binds a sealed private key to its CA type and key set, so that a
// sealed key moved to another CA or key set in the store does not open.
func keyAAD(t Type, id string) []byte {
	return []byte("wid/ca/v1\x00" + string(t) + "\x00" + id)
}

// generateKeySet makes a new key pair (and CA certificate for X.509 CAs) and
// seals its private key with kek.
func generateKeySet(t Type, td spiffeid.TrustDomain, subj Subject, kek *KEK, now time.Time, ttl time.Duration, state KeyState) (KeySetDocument, error) {
	if ttl <= 0 {
		return KeySetDocument{}, fmt.Errorf("CA TTL must be positive, got %s", ttl)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeySetDocument{}, fmt.Errorf("generating %s CA key: %w", t, err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return KeySetDocument{}, fmt.Errorf("encoding %s CA public key: %w", t, err)
	}
	sum := sha256.Sum256(pubDER)
	doc := KeySetDocument{
		// Derived from the key, so an ID always names the same key.
		ID:        hex.EncodeToString(sum[:16]),
		State:     state,
		Algorithm: AlgorithmECDSAP256,
		PublicKey: pubDER,
		NotBefore: now.Add(-backdate).UTC(),
		NotAfter:  now.Add(ttl).UTC(),
		Created:   now.UTC(),
	}
	if t.HasCertificate() {
		doc.Cert, err = selfSignedCA(t, td, subj, key, doc.NotBefore, doc.NotAfter)
		if err != nil {
			return KeySetDocument{}, err
		}
	} else {
		if doc.KID, err = jwkThumbprint(key.Public()); err != nil {
			return KeySetDocument{}, err
		}
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return KeySetDocument{}, fmt.Errorf("encoding %s CA private key: %w", t, err)
	}
	defer clear(pkcs8)
	doc.EncryptedPrivateKey, err = kek.Seal(pkcs8, keyAAD(t, doc.ID))
	if err != nil {
		return KeySetDocument{}, fmt.Errorf("sealing %s CA private key: %w", t, err)
	}
	return doc, nil
}

// jwkThumbprint returns the RFC 7638 SHA-256 thumbprint of a public key,
// base64url: a kid that any JOSE library can recompute from the JWKS.
func jwkThumbprint(pub crypto.PublicKey) (string, error) {
	sum, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("computing key thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

func selfSignedCA(t Type, td spiffeid.TrustDomain, subj Subject, key *ecdsa.PrivateKey, notBefore, notAfter time.Time) ([]byte, error) {
	serial, err := RandomSerial()
	if err != nil {
		return nil, err
	}
	skid, err := SubjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	tdURL := td.ID().URL()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subj.name(t, td),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// wid signs leaves directly with its CAs; no intermediates below them.
		MaxPathLen:     0,
		MaxPathLenZero: true,
		URIs:           []*url.URL{tdURL},
		SubjectKeyId:   skid,
	}
	if t == TypeSPIFFE {
		// Every SVID this CA signs names the trust domain as its URI host; a
		// certificate claiming another trust domain fails verification even
		// by a verifier that forgets to check the SPIFFE ID. The extension is
		// critical as RFC 5280 asks.
		tmpl.PermittedURIDomains = []string{td.Name()}
		tmpl.PermittedDNSDomainsCritical = true
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating %s CA certificate: %w", t, err)
	}
	return der, nil
}

// openKeySet decrypts a stored key set and checks that all its parts hold
// the same key. A cached signer for the same key is used instead of
// decrypting again.
func openKeySet(t Type, d KeySetDocument, kek *KEK, cached crypto.Signer) (*KeySet, error) {
	pub, err := x509.ParsePKIXPublicKey(d.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	ks := &KeySet{
		ID:          d.ID,
		Type:        t,
		State:       d.State,
		Algorithm:   d.Algorithm,
		PublicKey:   pub,
		KID:         d.KID,
		NotBefore:   d.NotBefore,
		NotAfter:    d.NotAfter,
		Fingerprint: Fingerprint(d.PublicKey),
	}
	if len(d.Cert) > 0 {
		ks.Cert, err = x509.ParseCertificate(d.Cert)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate: %w", err)
		}
		// The certificate is what verifiers see; leaves must not outlive it.
		ks.NotBefore, ks.NotAfter = ks.Cert.NotBefore, ks.Cert.NotAfter
		for _, der := range d.Chain {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("parsing upstream chain: %w", err)
			}
			ks.Chain = append(ks.Chain, c)
		}
		for _, der := range d.Roots {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("parsing upstream root: %w", err)
			}
			ks.Roots = append(ks.Roots, c)
		}
	}
	if d.State == KeyRetired {
		return ks, nil
	}
	if cached != nil && samePublicKey(cached.Public(), pub) {
		ks.Signer = cached
		return ks, nil
	}
	plain, err := kek.Open(d.EncryptedPrivateKey, keyAAD(t, d.ID))
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	priv, err := x509.ParsePKCS8PrivateKey(plain)
	if err != nil {
		// The parser's error says nothing of the key's content.
		return nil, fmt.Errorf("decoding private key: %w", err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", priv)
	}
	if err := checkAlgorithm(d.Algorithm, signer.Public()); err != nil {
		return nil, err
	}
	if !samePublicKey(signer.Public(), pub) {
		return nil, errors.New("private key does not match the public key")
	}
	ks.Signer = signer
	return ks, nil
}

func checkAlgorithm(alg Algorithm, pub crypto.PublicKey) error {
	switch alg {
	case AlgorithmECDSAP256:
		if k, ok := pub.(*ecdsa.PublicKey); ok && k.Curve == elliptic.P256() {
			return nil
		}
		return fmt.Errorf("key is %T, not the ECDSA P-256 key its algorithm %s says", pub, alg)
	default:
		return fmt.Errorf("unsupported algorithm %q", alg)
	}
}

func samePublicKey(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}
