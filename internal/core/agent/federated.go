package agent

import (
	"crypto/x509"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"google.golang.org/protobuf/proto"
)

// federatedBundle is a foreign trust domain's bundle as the auth service
// last fetched it. A workload gets those its workload identities list in
// federates_with.
type federatedBundle struct {
	td              spiffeid.TrustDomain
	x509Authorities []*x509.Certificate
	// x509BundleDER is the authorities' DER, concatenated, as the Workload
	// API carries an X.509 bundle.
	x509BundleDER []byte
	jwtJWKS       []byte
	jwtBundle     *jwtbundle.Bundle
}

// setFederated decodes the federated bundles pushed with the CAs.
func (s *state) setFederated(b *authv1.AgentBundle) error {
	s.federatedMsg = b.GetFederatedBundles()
	s.federated = make(map[string]*federatedBundle, len(s.federatedMsg))
	for _, fb := range s.federatedMsg {
		td, err := spiffeid.TrustDomainFromString(fb.GetTrustDomain())
		if err != nil {
			return fmt.Errorf("auth service sent a federated bundle of %q: %w", fb.GetTrustDomain(), err)
		}
		if td == s.td {
			return fmt.Errorf("auth service sent a federated bundle of its own trust domain %s", td.Name())
		}
		f := &federatedBundle{td: td, jwtJWKS: fb.GetJwtJwks()}
		for _, der := range fb.GetX509Authorities() {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return fmt.Errorf("auth service sent an X.509 authority of %s that does not parse: %w", td.Name(), err)
			}
			f.x509Authorities = append(f.x509Authorities, c)
			f.x509BundleDER = append(f.x509BundleDER, der...)
		}
		if len(f.jwtJWKS) > 0 {
			if f.jwtBundle, err = jwtbundle.Parse(td, f.jwtJWKS); err != nil {
				return fmt.Errorf("auth service sent a JWT bundle of %s that does not parse: %w", td.Name(), err)
			}
		} else {
			f.jwtBundle = jwtbundle.New(td)
		}
		s.federated[td.Name()] = f
	}
	return nil
}

// sameFederated reports whether two states carry the same federated bundles.
func sameFederated(a, b *state) bool {
	return slices.EqualFunc(a.federatedMsg, b.federatedMsg, func(x, y *authv1.FederatedBundle) bool { return proto.Equal(x, y) })
}

// federatedFor is the federated bundles that ents' workload identities
// federate with, sorted by trust domain. A trust domain listed but not
// (yet) held is left out.
func (s *state) federatedFor(ents []entitlement) []*federatedBundle {
	var names []string
	for _, en := range ents {
		if en.workload == nil {
			continue
		}
		for _, td := range en.workload.Identity.Spec.FederatesWith {
			if !slices.Contains(names, td) {
				names = append(names, td)
			}
		}
	}
	slices.Sort(names)
	out := make([]*federatedBundle, 0, len(names))
	for _, n := range names {
		if f := s.federated[n]; f != nil {
			out = append(out, f)
		}
	}
	return out
}
