package svid

import (
	"strings"
	"testing"
)

// FuzzDecode feeds svid inspect's decoder what a user may hand it: any
// file. It must not panic, must name the input in every refusal, and what
// it accepts must be what it claims to be.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy94In0.c2ln"))
	f.Add([]byte("a.b.c"))
	f.Add([]byte("not an svid"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := decode("input", data)
		if err != nil {
			if d != nil {
				t.Fatal("a refusal came with a decoded SVID")
			}
			if !strings.HasPrefix(err.Error(), "input") {
				t.Fatalf("the refusal %q does not name the input", err)
			}
			return
		}
		switch {
		case d.token != "":
			if len(d.certs) != 0 {
				t.Fatal("decoded as both a token and certificates")
			}
			if _, _, err := jwtClaims(d.token); err != nil {
				t.Fatalf("accepted a token whose claims do not decode: %v", err)
			}
		case len(d.certs) > 0:
			for i, c := range d.certs {
				if c == nil || len(c.Raw) == 0 {
					t.Fatalf("certificate %d is empty", i+1)
				}
			}
		default:
			t.Fatal("accepted input that is neither a token nor certificates")
		}
	})
}
