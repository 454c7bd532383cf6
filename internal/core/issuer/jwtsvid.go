package issuer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wid-project/wid/internal/core/ca"
)

// JWTParams is an authorised JWT-SVID request.
type JWTParams struct {
	ID       spiffeid.ID
	Audience []string
	// TTL is the token's life; 0 means DefaultJWTTTL.
	TTL time.Duration
}

// JWTSVID is a signed JWT-SVID.
type JWTSVID struct {
	Token string
	// JTI is the token's unique id, 32 lower-case hex digits.
	JTI       string
	IssuedAt  time.Time
	ExpiresAt time.Time
	// KID names the key that signed, as in the bundle's JWKS.
	KID string
}

// jwtClaims are the JWT-SVID claims. go-jose's jwt.Claims writes a single
// audience as a bare string; JWT-SVID validators accept both, but an array
// is what the SPIFFE examples show and what strict parsers expect.
type jwtClaims struct {
	Issuer   string   `json:"iss,omitempty"`
	Subject  string   `json:"sub"`
	Audience []string `json:"aud"`
	Expiry   int64    `json:"exp"`
	IssuedAt int64    `json:"iat"`
	ID       string   `json:"jti"`
}

// SignJWTSVID signs a JWT-SVID for p.ID with the active jwt CA key (ES256,
// with the key's kid in the header).
func (i *Issuer) SignJWTSVID(p JWTParams) (*JWTSVID, error) {
	if err := i.checkSVIDID(p.ID); err != nil {
		return nil, err
	}
	if len(p.Audience) == 0 {
		return nil, errors.New("a JWT-SVID needs at least one audience")
	}
	for _, aud := range p.Audience {
		if aud == "" {
			return nil, errors.New("a JWT-SVID audience cannot be empty")
		}
	}
	ttl, err := svidTTL(p.TTL, DefaultJWTTTL)
	if err != nil {
		return nil, err
	}
	t, err := i.planToken(ca.TypeJWT, "JWT-SVIDs", "JWT", ttl)
	if err != nil {
		return nil, err
	}
	token, err := jwt.Signed(t.signer).Claims(jwtClaims{
		Issuer:   i.jwtIssuer,
		Subject:  p.ID.String(),
		Audience: append([]string(nil), p.Audience...),
		Expiry:   t.expiresAt.Unix(),
		IssuedAt: t.issuedAt.Unix(),
		ID:       t.jti,
	}).Serialize()
	if err != nil {
		return nil, fmt.Errorf("signing JWT-SVID for %s: %w", p.ID, err)
	}
	return &JWTSVID{Token: token, JTI: t.jti, IssuedAt: t.issuedAt, ExpiresAt: t.expiresAt, KID: t.kid}, nil
}

// tokenPlan is what a signed token takes from its CA: a signer with the
// active key's kid, and the token's times and id.
type tokenPlan struct {
	signer              jose.Signer
	kid, jti            string
	issuedAt, expiresAt time.Time
}

// planToken prepares a JWS token of type typ (JWT-SVIDs and WIT-SVIDs,
// named by what) signed with ES256 by the active key of the CA caType,
// living ttl but never past the key.
func (i *Issuer) planToken(caType ca.Type, what, typ string, ttl time.Duration) (*tokenPlan, error) {
	ks, err := i.cas.Signer(caType)
	if err != nil {
		return nil, fmt.Errorf("getting the %s CA: %w", caType, err)
	}
	key, ok := ks.Signer.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("the %s CA key %s is %s, but %s are signed with ES256 (ECDSA P-256)", caType, ks.ID, ks.Algorithm, what)
	}
	// Tokens carry whole seconds; truncating keeps the returned times equal
	// to the token's claims. Unlike certificates, a token is not backdated:
	// iat says when it was issued.
	issuedAt := i.clock().UTC().Truncate(time.Second)
	if !issuedAt.Before(ks.NotAfter) {
		return nil, fmt.Errorf("the %s CA key expired at %s: rotate it", caType, ks.NotAfter.Format(time.RFC3339))
	}
	expiresAt := issuedAt.Add(ttl)
	if expiresAt.After(ks.NotAfter) {
		expiresAt = ks.NotAfter.UTC().Truncate(time.Second)
	}
	jti, err := randomHex128()
	if err != nil {
		return nil, err
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: ks.KID}},
		(&jose.SignerOptions{}).WithType(jose.ContentType(typ)),
	)
	if err != nil {
		return nil, fmt.Errorf("setting up %s signing: %w", what, err)
	}
	return &tokenPlan{signer: signer, kid: ks.KID, jti: jti, issuedAt: issuedAt, expiresAt: expiresAt}, nil
}
