package ca

import (
	"crypto/x509/pkix"
	"fmt"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Subject is what an operator may set in the subject of the trust domain's
// CA certificates (the auth service's ca_subject setting, as SPIRE's
// server has one). Empty fields keep wid's defaults.
type Subject struct {
	// Country is an ISO 3166 two-letter code, e.g. "DE".
	Country string `mapstructure:"country" yaml:"country"`
	// Organization replaces the default, the trust domain's name.
	Organization string `mapstructure:"organization" yaml:"organization"`
	// CommonName names the spiffe CA, the one in the trust bundle; the
	// internal CAs append their type ("<common name> user CA") so that
	// the certificates stay told apart.
	CommonName string `mapstructure:"common_name" yaml:"common_name"`
}

// maxSubjectField bounds each field: RFC 5280's upper bounds are 64
// characters for a common name or organization.
const maxSubjectField = 64

// Validate says in one sentence what is wrong with s, if anything.
func (s Subject) Validate() error {
	if s.Country != "" {
		if len(s.Country) != 2 || s.Country[0] < 'A' || s.Country[0] > 'Z' || s.Country[1] < 'A' || s.Country[1] > 'Z' {
			return fmt.Errorf("ca_subject.country %q is not an ISO 3166 two-letter code in capitals, such as DE or US", s.Country)
		}
	}
	for _, f := range []struct{ name, v string }{{"organization", s.Organization}, {"common_name", s.CommonName}} {
		if !utf8.ValidString(f.v) || utf8.RuneCountInString(f.v) > maxSubjectField {
			return fmt.Errorf("ca_subject.%s must be UTF-8 of at most %d characters", f.name, maxSubjectField)
		}
	}
	return nil
}

// name is the subject of a new certificate of CA t in trust domain td.
func (s Subject) name(t Type, td spiffeid.TrustDomain) pkix.Name {
	n := pkix.Name{
		Organization: []string{td.Name()},
		CommonName:   "wid " + string(t) + " CA",
	}
	if s.Organization != "" {
		n.Organization = []string{s.Organization}
	}
	if s.Country != "" {
		n.Country = []string{s.Country}
	}
	if s.CommonName != "" {
		n.CommonName = s.CommonName
		if t != TypeSPIFFE {
			n.CommonName += " " + string(t) + " CA"
		}
	}
	return n
}
