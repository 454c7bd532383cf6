package issuer_test

import (
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"

	"github.com/wid-project/wid/internal/core/issuer"
)

// FuzzParseCSR feeds arbitrary bytes to the CSR parser, which faces
// unauthenticated callers: it must never panic, and must never return a key
// without an error or an error with a key.
func FuzzParseCSR(f *testing.F) {
	f.Add(csrFor(f, ecKey(f, elliptic.P256())))
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	f.Add(csrFor(f, ed))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----"))
	f.Fuzz(func(t *testing.T, der []byte) {
		pub, err := issuer.ParseCSR(der)
		if (pub == nil) == (err == nil) {
			t.Fatalf("ParseCSR = %v, %v: want exactly one of a key and an error", pub, err)
		}
	})
}

// FuzzParsePublicKey does the same for bare PKIX public keys.
func FuzzParsePublicKey(f *testing.F) {
	der, err := x509.MarshalPKIXPublicKey(ecKey(f, elliptic.P256()).Public())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(der)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		pub, err := issuer.ParsePublicKey(der)
		if (pub == nil) == (err == nil) {
			t.Fatalf("ParsePublicKey = %v, %v: want exactly one of a key and an error", pub, err)
		}
	})
}
