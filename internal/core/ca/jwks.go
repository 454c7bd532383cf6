package ca

import (
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/exp/bundle/witbundle"
)

// JWKS "use" values of the SPIFFE standards.
const (
	UseJWTSVID = "jwt-svid"
	UseWITSVID = "wit-svid"
)

// JOSEAlgorithm is the JWS algorithm a key signs with, as JWKs and JOSE
// headers name it: ES256 for P-256, ES384 for P-384, ES512 for P-521, RS256
// for RSA and EdDSA for Ed25519.
func JOSEAlgorithm(pub crypto.PublicKey) (jose.SignatureAlgorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return jose.ES256, nil
		case elliptic.P384():
			return jose.ES384, nil
		case elliptic.P521():
			return jose.ES512, nil
		}
		return "", fmt.Errorf("ECDSA curve %s has no JWS algorithm", k.Curve.Params().Name)
	case *rsa.PublicKey:
		return jose.RS256, nil
	case ed25519.PublicKey:
		return jose.EdDSA, nil
	}
	return "", fmt.Errorf("key type %T has no JWS algorithm", pub)
}

// encodeJWKS encodes keys (by kid) as a JWKS whose keys all have use, sorted
// by kid so that the same keys always give the same bytes: agents compare
// states by their contents.
func encodeJWKS(keys map[string]crypto.PublicKey, use string) ([]byte, error) {
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(keys))}
	for kid, pub := range keys {
		alg, err := JOSEAlgorithm(pub)
		if err != nil {
			return nil, fmt.Errorf("encoding key %s: %w", kid, err)
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: pub, KeyID: kid, Use: use, Algorithm: string(alg)})
	}
	slices.SortFunc(set.Keys, func(a, b jose.JSONWebKey) int { return cmp.Compare(a.KeyID, b.KeyID) })
	b, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("encoding %s JWKS: %w", use, err)
	}
	return b, nil
}

// JWTJWKS returns the jwt CA's trusted public keys as a plain JWKS (RFC
// 7517), each with use "jwt-svid", its kid and alg: what an agent serves as
// the JWT bundle. The bytes only change when the keys do.
func (m *Manager) JWTJWKS() ([]byte, error) {
	s := m.state.Load()
	if s == nil {
		return nil, errNotLoaded
	}
	return slices.Clone(s.bundle.jwtJWKS), nil
}

// WITJWKS returns the wit CA's trusted public keys as a plain JWKS, each
// with use "wit-svid", its kid and alg: the WIT bundle. WIT keys are never
// part of the SPIFFE bundle (see buildBundle). The bytes only change when
// the keys do.
func (m *Manager) WITJWKS() ([]byte, error) {
	s := m.state.Load()
	if s == nil {
		return nil, errNotLoaded
	}
	return slices.Clone(s.bundle.witJWKS), nil
}

// WITBundle returns the trust domain's WIT bundle (a copy the caller may
// change): the wit CA's trusted keys by kid.
func (m *Manager) WITBundle() (*witbundle.Bundle, error) {
	s := m.state.Load()
	if s == nil {
		return nil, errNotLoaded
	}
	return witbundle.FromWITAuthorities(m.td, s.cas[TypeWIT].jwtKeys), nil
}
