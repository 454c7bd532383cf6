package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"
)

// The fast paths of SubjectKeyID must give what the general SPKI path gives.
func TestSubjectKeyIDFastPathsMatchSPKI(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for name, pub := range map[string]crypto.PublicKey{
		"P-256": p256.Public(), "P-384": p384.Public(), "Ed25519": edPub, "RSA": rsaKey.Public(),
	} {
		got, err := SubjectKeyID(pub)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want, err := subjectKeyIDFromSPKI(pub)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, want) || len(got) != 20 {
			t.Errorf("%s: SubjectKeyID %x, SPKI method %x", name, got, want)
		}
	}
}
