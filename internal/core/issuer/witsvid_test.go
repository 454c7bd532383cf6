package issuer_test

import (
	"crypto"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/exp/bundle/witbundle"
	"github.com/spiffe/go-spiffe/v2/exp/svid/witsvid"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/issuer"
)

func TestSignWITSVIDVerifiesAgainstTheWITBundle(t *testing.T) {
	iss, m := newIssuer(t)
	id := spiffeid.RequireFromPath(td, "/svc/web")
	workloadKey := ecKey(t, elliptic.P256())
	before := time.Now().Truncate(time.Second)
	svid, err := iss.SignWITSVID(issuer.WITParams{ID: id, PublicKey: workloadKey.Public()})
	if err != nil {
		t.Fatalf("SignWITSVID: %v", err)
	}

	// go-jose: the signature verifies with the wit JWKS, and the header is right.
	witJWKS, err := m.WITJWKS()
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(witJWKS, &set); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(svid.Token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("parsing the WIT: %v", err)
	}
	h := jws.Signatures[0].Header
	witKS, _ := m.Signer(ca.TypeWIT)
	if h.ExtraHeaders[jose.HeaderType] != "wit+jwt" || h.KeyID != witKS.KID || svid.KID != witKS.KID || h.Algorithm != "ES256" {
		t.Fatalf("header typ %v kid %q alg %s; want wit+jwt, %q, ES256", h.ExtraHeaders[jose.HeaderType], h.KeyID, h.Algorithm, witKS.KID)
	}
	keys := set.Key(h.KeyID)
	if len(keys) != 1 || keys[0].Use != "wit-svid" {
		t.Fatalf("the wit JWKS has no wit-svid key %q", h.KeyID)
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		t.Fatalf("the WIT does not verify with the wit JWKS: %v", err)
	}

	var claims struct {
		Iss string `json:"iss"`
		Sub string `json:"sub"`
		Exp int64  `json:"exp"`
		Iat int64  `json:"iat"`
		JTI string `json:"jti"`
		Aud any    `json:"aud"`
		Cnf struct {
			JWK jose.JSONWebKey `json:"jwk"`
		} `json:"cnf"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Sub != id.String() || claims.Iss != "spiffe://"+td.Name() || claims.Aud != nil {
		t.Errorf("sub %q iss %q aud %v; want %s, spiffe://%s, no aud", claims.Sub, claims.Iss, claims.Aud, id, td.Name())
	}
	if claims.Iat < before.Unix() || claims.Iat != svid.IssuedAt.Unix() || claims.Exp-claims.Iat != int64(issuer.DefaultWITTTL/time.Second) || claims.Exp != svid.ExpiresAt.Unix() {
		t.Errorf("iat %d exp %d, want now and now+1h (returned %s..%s)", claims.Iat, claims.Exp, svid.IssuedAt, svid.ExpiresAt)
	}
	if b, err := hex.DecodeString(claims.JTI); err != nil || len(b) != 16 || claims.JTI != svid.JTI {
		t.Errorf("jti %q (returned %q), want 128 random bits in hex", claims.JTI, svid.JTI)
	}
	if !workloadKey.PublicKey.Equal(claims.Cnf.JWK.Key) || claims.Cnf.JWK.Algorithm != "ES256" || !claims.Cnf.JWK.IsPublic() {
		t.Errorf("cnf.jwk = %+v, want the workload's public key with alg ES256", claims.Cnf.JWK)
	}

	// go-spiffe, the peer that matters, accepts it.
	wb, err := witbundle.Parse(td, witJWKS)
	if err != nil {
		t.Fatal(err)
	}
	got, err := witsvid.ParseAndValidate(svid.Token, wb)
	if err != nil {
		t.Fatalf("witsvid.ParseAndValidate: %v", err)
	}
	if got.ID != id || !workloadKey.PublicKey.Equal(got.PublicKey) || got.KeyID != witKS.KID {
		t.Errorf("go-spiffe read %s bound to %v kid %s", got.ID, got.PublicKey, got.KeyID)
	}

	// It is not a JWT-SVID: the jwt bundle does not hold the wit key.
	jwks, _ := m.BundleJWKS()
	bundle, err := spiffebundle.Parse(td, jwks)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Token, bundle, nil); err == nil {
		t.Error("the WIT validated as a JWT-SVID against the jwt bundle")
	}
	jwtKS, _ := m.Signer(ca.TypeJWT)
	if _, err := jws.Verify(jwtKS.PublicKey); err == nil {
		t.Error("the WIT verifies with the jwt CA key")
	}
}

func TestSignWITSVIDKeyTypes(t *testing.T) {
	iss, _ := newIssuer(t)
	id := spiffeid.RequireFromPath(td, "/svc/web")
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	for name, tt := range map[string]struct {
		pub     crypto.PublicKey
		wantAlg string
		wantErr string
	}{
		"P-256":   {ecKey(t, elliptic.P256()).Public(), "ES256", ""},
		"P-384":   {ecKey(t, elliptic.P384()).Public(), "ES384", ""},
		"RSA":     {rsaKey(t, 2048).Public(), "RS256", ""},
		"Ed25519": {edPriv.Public(), "", "Ed25519"},
		"P-224":   {ecKey(t, elliptic.P224()).Public(), "", "P-256 or P-384"},
		"none":    {nil, "", "no public key"},
	} {
		svid, err := iss.SignWITSVID(issuer.WITParams{ID: id, PublicKey: tt.pub})
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err = %v, want one containing %q", name, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		got, err := witsvid.ParseInsecure(svid.Token)
		if err != nil {
			t.Errorf("%s: go-spiffe cannot read the WIT: %v", name, err)
			continue
		}
		parts := strings.Split(svid.Token, ".")
		var claims struct {
			Cnf struct {
				JWK map[string]any `json:"jwk"`
			} `json:"cnf"`
		}
		decodeSegment(t, parts[1], &claims)
		if claims.Cnf.JWK["alg"] != tt.wantAlg {
			t.Errorf("%s: cnf.jwk alg %v, want %s", name, claims.Cnf.JWK["alg"], tt.wantAlg)
		}
		if !tt.pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(got.PublicKey) {
			t.Errorf("%s: cnf.jwk holds another key", name)
		}
	}
}

func TestSignWITSVIDRejects(t *testing.T) {
	iss, _ := newIssuer(t)
	pub := ecKey(t, elliptic.P256()).Public()
	for name, tt := range map[string]struct {
		p    issuer.WITParams
		want string
	}{
		"other trust domain": {issuer.WITParams{ID: spiffeid.RequireFromString("spiffe://other.org/a"), PublicKey: pub}, "not in trust domain"},
		"reserved path":      {issuer.WITParams{ID: spiffeid.RequireFromPath(td, "/_wid/bot/x"), PublicKey: pub}, "/_wid"},
		"TTL over max":       {issuer.WITParams{ID: spiffeid.RequireFromPath(td, "/a"), PublicKey: pub, TTL: 25 * time.Hour}, "maximum"},
		"negative TTL":       {issuer.WITParams{ID: spiffeid.RequireFromPath(td, "/a"), PublicKey: pub, TTL: -time.Second}, "negative"},
	} {
		if _, err := iss.SignWITSVID(tt.p); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want one containing %q", name, err, tt.want)
		}
	}
	// The TTL is honoured up to the maximum.
	svid, err := iss.SignWITSVID(issuer.WITParams{ID: spiffeid.RequireFromPath(td, "/a"), PublicKey: pub, TTL: 24 * time.Hour})
	if err != nil || svid.ExpiresAt.Sub(svid.IssuedAt) != 24*time.Hour {
		t.Errorf("24h WIT: %v, lifetime %s", err, svid.ExpiresAt.Sub(svid.IssuedAt))
	}
}
