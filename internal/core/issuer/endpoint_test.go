package issuer_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/wid-project/wid/internal/core/issuer"
)

// The bundle endpoint's SVID is under /_wid, which SignX509SVID refuses to
// anyone else, and verifies against the trust domain's bundle.
func TestSignBundleEndpointSVID(t *testing.T) {
	iss, m := newIssuer(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := iss.SignBundleEndpointSVID(key.Public(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want := spiffeid.RequireFromPath(td, issuer.BundleEndpointPath)
	bundle, err := m.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := x509svid.Verify(svid.Certificates, bundle)
	if err != nil || id != want {
		t.Fatalf("verified %s, %v; want %s", id, err, want)
	}
	if _, err := iss.SignX509SVID(issuer.X509Params{ID: want, PublicKey: key.Public()}); err == nil || !strings.Contains(err.Error(), "which wid keeps for its own") {
		t.Errorf("SignX509SVID for the bundle endpoint's ID: %v", err)
	}
}

// iss is in JWT-SVIDs only once an issuer is set.
func TestJWTIssuer(t *testing.T) {
	iss, _ := newIssuer(t)
	id := spiffeid.RequireFromPath(td, "/svc/web")
	claims := func() map[string]any {
		t.Helper()
		svid, err := iss.SignJWTSVID(issuer.JWTParams{ID: id, Audience: []string{"a"}})
		if err != nil {
			t.Fatal(err)
		}
		var c map[string]any
		decodeSegment(t, strings.Split(svid.Token, ".")[1], &c)
		return c
	}
	if c, ok := claims()["iss"]; ok {
		t.Errorf("iss %v without an issuer set", c)
	}
	iss.SetJWTIssuer("https://oidc.example.org")
	if c := claims()["iss"]; c != "https://oidc.example.org" {
		t.Errorf("iss %v, want https://oidc.example.org", c)
	}
}
