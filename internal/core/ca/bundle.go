package ca

import (
	"encoding/pem"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// BundleRefreshHint is how often bundle consumers should look for a new
// bundle. Agents are pushed changes; this is for everyone else (federation,
// bundle endpoint clients).
const BundleRefreshHint = 5 * time.Minute

// bundleData is built once per reload: the bundle is read on every agent
// sync and bundle export, and its JWKS encoding walks a map, so encoding it
// once also keeps the bytes stable between reloads.
type bundleData struct {
	bundle *spiffebundle.Bundle
	pem    []byte
	jwks   []byte
	// jwtJWKS and witJWKS are the jwt and wit CAs' keys as plain JWKS.
	jwtJWKS []byte
	witJWKS []byte
}

// buildBundle makes the trust domain's SPIFFE bundle: the spiffe CA's trusted
// certificates as X.509 authorities and the jwt CA's trusted keys as JWT
// authorities.
//
// Its sequence number is the spiffe CA's sequence plus the jwt CA's. Each
// only grows and every bundle change bumps one of them, so the sum grows with
// every change, needs no counter of its own in the store and comes out the
// same on every auth replica. WIT authorities are left out: bundle consumers
// built on older go-spiffe releases refuse JWKS entries with use "wit-svid".
func buildBundle(td spiffeid.TrustDomain, spiffeCA, jwtCA, witCA *authority) (*bundleData, error) {
	b := spiffebundle.New(td)
	b.SetX509Authorities(spiffeCA.certs)
	b.SetJWTAuthorities(jwtCA.jwtKeys)
	b.SetSequenceNumber(uint64(spiffeCA.doc.Sequence) + uint64(jwtCA.doc.Sequence))
	b.SetRefreshHint(BundleRefreshHint)

	jwks, err := b.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encoding the trust bundle: %w", err)
	}
	var pemBytes []byte
	for _, c := range spiffeCA.certs {
		pemBytes = append(pemBytes, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	jwtJWKS, err := encodeJWKS(jwtCA.jwtKeys, UseJWTSVID)
	if err != nil {
		return nil, err
	}
	witJWKS, err := encodeJWKS(witCA.jwtKeys, UseWITSVID)
	if err != nil {
		return nil, err
	}
	return &bundleData{bundle: b, pem: pemBytes, jwks: jwks, jwtJWKS: jwtJWKS, witJWKS: witJWKS}, nil
}

// Bundle returns the trust domain's SPIFFE bundle (a copy the caller may
// change). See buildBundle for what it holds and how it is numbered.
func (m *Manager) Bundle() (*spiffebundle.Bundle, error) {
	s := m.state.Load()
	if s == nil {
		return nil, errNotLoaded
	}
	return s.bundle.bundle.Clone(), nil
}

// BundleSequence is the bundle's sequence number; 0 before Init.
func (m *Manager) BundleSequence() uint64 {
	s := m.state.Load()
	if s == nil {
		return 0
	}
	n, _ := s.bundle.bundle.SequenceNumber()
	return n
}

// BundlePEM returns the bundle's X.509 authorities as PEM certificates; nil
// before Init.
func (m *Manager) BundlePEM() []byte {
	s := m.state.Load()
	if s == nil {
		return nil
	}
	return slices.Clone(s.bundle.pem)
}

// BundleJWKS returns the bundle in the SPIFFE bundle format (a JWKS whose
// keys have use "x509-svid" or "jwt-svid", with spiffe_sequence and
// spiffe_refresh_hint).
func (m *Manager) BundleJWKS() ([]byte, error) {
	s := m.state.Load()
	if s == nil {
		return nil, errNotLoaded
	}
	return slices.Clone(s.bundle.jwks), nil
}
