package issuer

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
)

const (
	minRSABits = 2048
	// maxRSABits bounds the cost of checking a CSR's signature, which an
	// unauthenticated caller can make us do.
	maxRSABits = 8192
)

const supportedKeys = "use ECDSA P-256 or P-384, RSA of 2048 bits or more, or Ed25519"

// ParseCSR parses a DER PKCS#10 request, checks its key type and its
// signature (proof that the caller holds the private key), and returns its
// public key. Everything else in the CSR (subject, SANs) is ignored: what
// goes into a certificate comes from the authorised request, never from the
// CSR.
func ParseCSR(der []byte) (crypto.PublicKey, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		if bytes.HasPrefix(bytes.TrimSpace(der), []byte("-----BEGIN")) {
			return nil, errors.New("the CSR is PEM-encoded: send its DER bytes")
		}
		return nil, fmt.Errorf("the CSR is not a valid PKCS#10 request: %w", err)
	}
	// Check the key type before the signature: it is cheaper, and says more
	// about a weak key than a failed signature check would.
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, errors.New("the CSR's signature does not verify")
	}
	return csr.PublicKey, nil
}

// ParsePublicKey parses a DER SubjectPublicKeyInfo (PKIX) and checks its key
// type as ParseCSR does.
func ParsePublicKey(der []byte) (crypto.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		if bytes.HasPrefix(bytes.TrimSpace(der), []byte("-----BEGIN")) {
			return nil, errors.New("the public key is PEM-encoded: send its DER bytes")
		}
		return nil, fmt.Errorf("the public key is not a valid PKIX key: %w", err)
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// checkPublicKey accepts the key types SVIDs may hold.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("ECDSA keys must use curve P-256 or P-384, got %s", k.Curve.Params().Name)
	case *rsa.PublicKey:
		bits := k.N.BitLen()
		if bits < minRSABits {
			return fmt.Errorf("RSA keys must be at least %d bits, got %d", minRSABits, bits)
		}
		if bits > maxRSABits {
			return fmt.Errorf("RSA keys must be at most %d bits, got %d", maxRSABits, bits)
		}
		return nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("an Ed25519 key must be %d bytes, got %d", ed25519.PublicKeySize, len(k))
		}
		return nil
	case nil:
		return fmt.Errorf("no public key given: %s", supportedKeys)
	default:
		return fmt.Errorf("unsupported key type %T: %s", pub, supportedKeys)
	}
}
