package issuer

import (
	"crypto"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wid-project/wid/internal/core/ca"
)

// DefaultWITTTL is a WIT-SVID's life when the request names none. A WIT is
// bound to a key the workload holds, like an X509-SVID, so it lives as long.
const DefaultWITTTL = time.Hour

// witType is the JOSE "typ" of a WIT (WIMSE workload identity token).
const witType = "wit+jwt"

// WITParams is an authorised WIT-SVID request.
type WITParams struct {
	ID spiffeid.ID
	// PublicKey is the workload's key, bound in the token's cnf claim; the
	// workload proves possession of it to whoever checks the WIT.
	PublicKey crypto.PublicKey
	// TTL is the token's life; 0 means DefaultWITTTL.
	TTL time.Duration
}

// WITSVID is a signed WIT-SVID.
type WITSVID struct {
	Token string
	// JTI is the token's unique id, 32 lower-case hex digits.
	JTI       string
	IssuedAt  time.Time
	ExpiresAt time.Time
	// KID names the wit CA key that signed, as in the WIT bundle's JWKS.
	KID string
}

// witClaims are the WIT-SVID claims (SPIFFE WIT-SVID, IETF WIMSE workload
// credentials): no aud, since a WIT is presented with a proof of
// possession, never as a bearer token.
type witClaims struct {
	Issuer   string       `json:"iss"`
	Subject  string       `json:"sub"`
	Expiry   int64        `json:"exp"`
	IssuedAt int64        `json:"iat"`
	ID       string       `json:"jti"`
	Confirm  confirmation `json:"cnf"`
}

type confirmation struct {
	JWK jose.JSONWebKey `json:"jwk"`
}

// SignWITSVID signs a WIT-SVID for p.ID with the active wit CA key (ES256,
// typ wit+jwt, the key's kid in the header) binding p.PublicKey in cnf.jwk
// with its alg. Ed25519 keys are refused: go-spiffe's WIT-SVID parser does
// not accept EdDSA for the bound key, and a token its peers reject is no use.
func (i *Issuer) SignWITSVID(p WITParams) (*WITSVID, error) {
	if err := i.checkSVIDID(p.ID); err != nil {
		return nil, err
	}
	if err := checkPublicKey(p.PublicKey); err != nil {
		return nil, err
	}
	alg, err := ca.JOSEAlgorithm(p.PublicKey)
	if err != nil {
		return nil, err
	}
	if alg == jose.EdDSA {
		return nil, fmt.Errorf("a WIT-SVID cannot bind an Ed25519 key, which WIT-SVID verifiers do not accept: use an ECDSA P-256 key")
	}
	ttl, err := svidTTL(p.TTL, DefaultWITTTL)
	if err != nil {
		return nil, err
	}
	t, err := i.planToken(ca.TypeWIT, "WIT-SVIDs", witType, ttl)
	if err != nil {
		return nil, err
	}
	token, err := jwt.Signed(t.signer).Claims(witClaims{
		Issuer:   i.cas.TrustDomain().IDString(),
		Subject:  p.ID.String(),
		Expiry:   t.expiresAt.Unix(),
		IssuedAt: t.issuedAt.Unix(),
		ID:       t.jti,
		Confirm:  confirmation{JWK: jose.JSONWebKey{Key: p.PublicKey, Algorithm: string(alg)}},
	}).Serialize()
	if err != nil {
		return nil, fmt.Errorf("signing WIT-SVID for %s: %w", p.ID, err)
	}
	return &WITSVID{Token: token, JTI: t.jti, IssuedAt: t.issuedAt, ExpiresAt: t.expiresAt, KID: t.kid}, nil
}
