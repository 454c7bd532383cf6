package resource

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Bundle endpoint profiles of the SPIFFE Federation standard.
const (
	ProfileHTTPSSPIFFE = "https_spiffe"
	ProfileHTTPSWeb    = "https_web"
)

// MaxBundleSize bounds a SPIFFE bundle document, whether an operator gives
// it or a bundle endpoint serves it.
const MaxBundleSize = 1 << 20

// MaxBundleEndpointURL bounds a bundle endpoint URL.
const MaxBundleEndpointURL = 2048

// BundleEndpointPath is the path of the SPIFFE ID a wid bundle endpoint
// serves with under the https_spiffe profile.
const BundleEndpointPath = "/_wid/bundle-endpoint"

// Federation makes this trust domain trust another one: the auth service
// fetches the foreign trust domain's bundle from its bundle endpoint and
// hands it to the workloads whose identities federate with it. The name is
// the foreign trust domain.
type Federation struct {
	Header `json:",inline" yaml:",inline"`
	Spec   FederationSpec `json:"spec" yaml:"spec"`
	// Status is what the auth service reports of the last refreshes when
	// the federation is read; never stored, dropped from what it is sent.
	Status *FederationStatus `json:"status,omitempty" yaml:"status,omitempty"`
}

type FederationSpec struct {
	// BundleEndpointURL is the foreign bundle endpoint, https only.
	BundleEndpointURL string `json:"bundle_endpoint_url" yaml:"bundle_endpoint_url"`
	// Profile is https_spiffe or https_web.
	Profile string `json:"profile" yaml:"profile"`
	// EndpointSPIFFEID is the SPIFFE ID the https_spiffe endpoint must
	// present; empty means spiffe://<trust domain>/_wid/bundle-endpoint.
	EndpointSPIFFEID string `json:"endpoint_spiffe_id,omitempty" yaml:"endpoint_spiffe_id,omitempty"`
	// Bundle is the foreign trust domain's SPIFFE bundle (JSON) to start
	// from: required with https_spiffe, whose endpoint it authenticates.
	Bundle string `json:"bundle,omitempty" yaml:"bundle,omitempty"`
}

// FederationStatus is how refreshing the foreign bundle goes.
type FederationStatus struct {
	// LastRefresh is when a fetched bundle was last accepted.
	LastRefresh time.Time `json:"last_refresh,omitzero" yaml:"last_refresh,omitempty"`
	// LastAttempt is when the endpoint was last asked.
	LastAttempt time.Time `json:"last_attempt,omitzero" yaml:"last_attempt,omitempty"`
	// Sequence is the spiffe_sequence of the bundle held.
	Sequence uint64 `json:"sequence,omitempty" yaml:"sequence,omitempty"`
	// Error says why the last attempt was refused; empty when it was not.
	Error string `json:"error,omitempty" yaml:"error,omitempty"`
}

// TrustDomain is the foreign trust domain.
func (f *Federation) TrustDomain() (spiffeid.TrustDomain, error) {
	return spiffeid.TrustDomainFromString(f.Metadata.Name)
}

// EndpointID is the SPIFFE ID the https_spiffe endpoint must present.
func (f *Federation) EndpointID() (spiffeid.ID, error) {
	if f.Spec.EndpointSPIFFEID != "" {
		return spiffeid.FromString(f.Spec.EndpointSPIFFEID)
	}
	td, err := f.TrustDomain()
	if err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromPath(td, BundleEndpointPath)
}

// Validate checks the federation; the error names the offending field.
func (f *Federation) Validate() error {
	if err := f.validateHeader(KindFederation); err != nil {
		return err
	}
	res := resourceName(KindFederation, f.Metadata.Name)
	td, err := f.TrustDomain()
	if err != nil {
		return fieldErrorf(res, "metadata.name", "%s is not a trust domain name (%v): name a federation after the foreign trust domain, such as partner.example", quote(f.Metadata.Name), err)
	}
	if err := ValidateBundleEndpointURL(f.Spec.BundleEndpointURL); err != nil {
		return fieldErrorf(res, "spec.bundle_endpoint_url", "%v", err)
	}
	switch f.Spec.Profile {
	case ProfileHTTPSSPIFFE:
		id, err := f.EndpointID()
		if err != nil {
			return fieldErrorf(res, "spec.endpoint_spiffe_id", "%s is not a SPIFFE ID (%v): give the ID the bundle endpoint serves with, such as spiffe://%s%s", quote(f.Spec.EndpointSPIFFEID), err, td.Name(), BundleEndpointPath)
		}
		if id.TrustDomain() != td {
			return fieldErrorf(res, "spec.endpoint_spiffe_id", "%s is not in trust domain %s, whose bundle is the only one that can authenticate the endpoint: give an ID of %s", id, td.Name(), td.Name())
		}
		if f.Spec.Bundle == "" {
			return fieldErrorf(res, "spec.bundle", "is missing: an https_spiffe endpoint is authenticated with the foreign trust domain's bundle, so give the one the other side exports in SPIFFE format")
		}
	case ProfileHTTPSWeb:
		if f.Spec.EndpointSPIFFEID != "" {
			return fieldErrorf(res, "spec.endpoint_spiffe_id", "is set, but an https_web endpoint is authenticated by its web certificate: remove it, or use profile https_spiffe")
		}
	case "":
		return fieldErrorf(res, "spec.profile", "is missing: use https_spiffe or https_web")
	default:
		return fieldErrorf(res, "spec.profile", "%s is not a bundle endpoint profile: use https_spiffe or https_web", quote(f.Spec.Profile))
	}
	if f.Spec.Bundle != "" {
		if _, err := ParseBundle(td, []byte(f.Spec.Bundle)); err != nil {
			return fieldErrorf(res, "spec.bundle", "%v", err)
		}
	}
	return nil
}

// ValidateBundleEndpointURL checks a bundle endpoint URL: https, a host,
// no credentials, bounded.
func ValidateBundleEndpointURL(raw string) error {
	if raw == "" {
		return fmt.Errorf("is missing: give the foreign bundle endpoint's https URL")
	}
	if len(raw) > MaxBundleEndpointURL {
		return fmt.Errorf("is %d bytes long, over the limit of %d", len(raw), MaxBundleEndpointURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s is not a URL: %v", quote(raw), err)
	}
	switch {
	case u.Scheme != "https":
		return fmt.Errorf("%s is not an https URL: both bundle endpoint profiles are served over https", quote(raw))
	case u.Host == "":
		return fmt.Errorf("%s has no host: write it as https://host:port/", quote(raw))
	case u.User != nil:
		return fmt.Errorf("%s carries credentials: a bundle endpoint is public, so remove them", quote(raw))
	case u.Fragment != "":
		return fmt.Errorf("%s has a fragment: remove it", quote(raw))
	}
	return nil
}

// ParseBundle decodes a SPIFFE bundle of td, bounded in size, and checks
// that it holds at least one X.509 authority and that none of its
// authorities names another trust domain.
func ParseBundle(td spiffeid.TrustDomain, data []byte) (*spiffebundle.Bundle, error) {
	if len(data) > MaxBundleSize {
		return nil, fmt.Errorf("the bundle is %d bytes, over the limit of %d", len(data), MaxBundleSize)
	}
	b, err := spiffebundle.Parse(td, data)
	if err != nil {
		return nil, fmt.Errorf("the bundle is not a SPIFFE bundle: %v", strings.TrimPrefix(err.Error(), "spiffebundle: "))
	}
	if len(b.X509Authorities()) == 0 && len(b.JWTAuthorities()) == 0 {
		return nil, fmt.Errorf("the bundle holds no authorities")
	}
	// go-spiffe takes any JWK, a symmetric ("oct") key included; only the
	// key types a JWT-SVID is signed with are taken, so that every bundle
	// held can be handed to agents as a JWKS.
	for use, keys := range map[string]map[string]crypto.PublicKey{"JWT": b.JWTAuthorities(), "WIT": b.WITAuthorities()} {
		for _, kid := range slices.Sorted(maps.Keys(keys)) {
			switch keys[kid].(type) {
			case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
			default:
				return nil, fmt.Errorf("the bundle's %s authority %q is a %s key, which signs no SVID: only EC, RSA and Ed25519 public keys are taken", use, kid, keyTypeName(keys[kid]))
			}
		}
	}
	for _, c := range b.X509Authorities() {
		for _, u := range c.URIs {
			id, err := spiffeid.FromURI(u)
			if err == nil && id.TrustDomain() != td {
				return nil, fmt.Errorf("the bundle's X.509 authority %q is of trust domain %s, not %s: the endpoint serves another trust domain's bundle", c.Subject.String(), id.TrustDomain().Name(), td.Name())
			}
		}
	}
	return b, nil
}

// keyTypeName names a JWK's key type for an error.
func keyTypeName(k crypto.PublicKey) string {
	if _, ok := k.([]byte); ok {
		return `symmetric ("kty":"oct")`
	}
	return fmt.Sprintf("%T", k)
}

func validateFederatesWith(res string, tds []string) error {
	seen := map[string]bool{}
	for i, t := range tds {
		f := fmt.Sprintf("spec.federates_with[%d]", i+1)
		td, err := spiffeid.TrustDomainFromString(t)
		if err != nil || strings.Contains(t, "/") || td.Name() != t {
			return fieldErrorf(res, f, "%s is not a trust domain name: write it as partner.example, without spiffe://", quote(t))
		}
		if seen[t] {
			return fieldErrorf(res, f, "%s is listed twice: keep one", quote(t))
		}
		seen[t] = true
	}
	if len(tds) > MaxFederations {
		return fieldErrorf(res, "spec.federates_with", "lists %d trust domains, over the limit of %d", len(tds), MaxFederations)
	}
	return nil
}

// MaxFederations bounds how many trust domains one trust domain federates
// with, and so how many bundles every agent holds.
const MaxFederations = 64
