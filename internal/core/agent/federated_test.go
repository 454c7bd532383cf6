package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/testkit"
)

var partnerTD = spiffeid.RequireTrustDomainFromString("partner.test")

// federate creates a federation with partner.test whose endpoint is never
// reached: the bundle it starts from is what agents get.
func federate(t *testing.T, e *env) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://partner.test")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "partner.test"}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	b := spiffebundle.FromX509Authorities(partnerTD, []*x509.Certificate{ca})
	b.SetSequenceNumber(1)
	jwtKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddJWTAuthority("partner-key", jwtKey.Public()); err != nil {
		t.Fatal(err)
	}
	data, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	fed := &resource.Federation{Header: resource.Header{Kind: resource.KindFederation, Version: resource.V1, Metadata: resource.Metadata{Name: "partner.test"}},
		Spec: resource.FederationSpec{BundleEndpointURL: "https://127.0.0.1:1/", Profile: resource.ProfileHTTPSSPIFFE, Bundle: string(data)}}
	doc, err := resource.MarshalJSON(fed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.CreateResource(context.Background(), &authv1.CreateResourceRequest{Resources: [][]byte{doc}}); err != nil {
		t.Fatalf("creating the federation: %v", err)
	}
	return ca, jwtKey
}

// partnerJWT is a JWT-SVID of spiffe://partner.test/svc/api for aud.
func partnerJWT(t *testing.T, key *ecdsa.PrivateKey, aud string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "partner-key"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	token, err := jwt.Signed(signer).Claims(map[string]any{"sub": "spiffe://partner.test/svc/api", "aud": []string{aud}, "exp": time.Now().Add(time.Minute).Unix(), "iat": time.Now().Unix()}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// A workload whose identity federates with partner.test gets its bundle in
// FetchX509Bundles and over SDS, by its name and in ALL; one whose identity
// does not, does not.
func TestFederatedBundlesReachWorkloads(t *testing.T) {
	e := start(t)
	partnerCA, partnerKey := federate(t, e)
	plain := identity("plain", "/plain/{{ workload.unix.uid }}", "", eq("workload.unix.uid", uid))
	e.create(t, plain)
	ctx := ctxT(t, 20*time.Second)

	// The agent may not hold plain yet when CreateResource returns: until
	// it does, the caller is entitled to nothing and refused.
	var bundles *x509bundle.Set
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if bundles, err = workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr(e.addr)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	if bundles.Has(partnerTD) {
		t.Fatal("a workload whose identity does not federate with partner.test got its bundle")
	}
	token := partnerJWT(t, partnerKey, "me")
	if _, err := workloadapi.ValidateJWTSVID(ctx, token, "me", workloadapi.WithAddr(e.addr)); err == nil {
		t.Fatal("a workload that does not federate with partner.test validated its JWT-SVID")
	}

	fed := identity("fed", "/fed/{{ workload.unix.uid }}", "", eq("workload.unix.uid", uid))
	fed.Spec.FederatesWith = []string{"partner.test"}
	e.create(t, fed)
	testkit.EventuallyEvery(t, 10*time.Second, 50*time.Millisecond, func() bool {
		bundles, err = workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr(e.addr))
		if err != nil {
			t.Fatal(err)
		}
		b, ok := bundles.Get(partnerTD)
		if ok && !b.HasX509Authority(partnerCA) {
			t.Fatal("partner.test's bundle lacks its CA")
		}
		return ok
	}, "the workload never got partner.test's bundle")
	svid, err := workloadapi.ValidateJWTSVID(ctx, token, "me", workloadapi.WithAddr(e.addr))
	if err != nil || svid.ID.String() != "spiffe://partner.test/svc/api" {
		t.Fatalf("validating partner.test's JWT-SVID: %v, %v", svid, err)
	}
	jb, err := workloadapi.FetchJWTBundles(ctx, workloadapi.WithAddr(e.addr))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := jb.GetJWTBundleForTrustDomain(partnerTD); err != nil || !b.HasJWTAuthority("partner-key") {
		t.Errorf("FetchJWTBundles has no partner.test key: %v", err)
	}
	resp, err := sdsClient(t, e).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{Node: envoyNode, TypeUrl: secretType,
		ResourceNames: []string{"spiffe://partner.test", "ALL", "spiffe://example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	got := secretsOf(t, resp)
	if !bundleOf(t, got["spiffe://partner.test"], partnerTD).HasX509Authority(partnerCA) {
		t.Error("SDS spiffe://partner.test lacks partner.test's CA")
	}
	// ALL is Envoy's SPIFFE validator, one entry per trust domain, even
	// without sds.spiffe_validator: in one trusted_ca list partner.test's
	// CA could sign spiffe://example.org/... and be taken.
	allVC := got["ALL"].GetValidationContext()
	if allVC.GetTrustedCa() != nil || allVC.GetCustomValidatorConfig() == nil {
		t.Fatal("SDS ALL merges every trust domain's CAs into one trusted_ca")
	}
	all := bundleOf(t, got["ALL"], partnerTD)
	if !all.HasX509Authority(partnerCA) || len(all.X509Authorities()) != 1 {
		t.Errorf("SDS ALL's partner.test entry has %d authorities, want partner.test's CA alone", len(all.X509Authorities()))
	}
	own := bundleOf(t, got["ALL"], exampleTD)
	if own.HasX509Authority(partnerCA) {
		t.Error("SDS ALL's example.org entry trusts partner.test's CA")
	}
	// Envoy, given a CRL for some trusted CAs, refuses peers of the others:
	// partner.test publishes none here, so a context trusting it has none in
	// crl; ALL carries example.org's in example.org's entry, where Envoy's
	// SPIFFE validator checks it for example.org's peers only.
	if len(got["spiffe://example.org"].GetValidationContext().GetCrl().GetInlineBytes()) == 0 {
		t.Error("SDS spiffe://example.org carries no CRL")
	}
	for _, name := range []string{"spiffe://partner.test", "ALL"} {
		if crl := got[name].GetValidationContext().GetCrl(); crl != nil {
			t.Errorf("SDS %s carries a CRL, which would make Envoy refuse partner.test's peers", name)
		}
	}
	if n := entryCRLs(t, got["ALL"], exampleTD); n == 0 {
		t.Error("SDS ALL's example.org entry carries no CRL")
	}
	if n := entryCRLs(t, got["ALL"], partnerTD); n != 0 {
		t.Errorf("SDS ALL's partner.test entry carries %d CRLs, want none", n)
	}
}

// entryCRLs counts the CRLs in the SPIFFE validator entry of td.
func entryCRLs(t *testing.T, s *tlsv3.Secret, td spiffeid.TrustDomain) int {
	t.Helper()
	var cfg tlsv3.SPIFFECertValidatorConfig
	if err := s.GetValidationContext().GetCustomValidatorConfig().GetTypedConfig().UnmarshalTo(&cfg); err != nil {
		t.Fatal(err)
	}
	for _, d := range cfg.TrustDomains {
		if d.Name != td.Name() {
			continue
		}
		n := 0
		for rest := d.GetTrustBundle().GetInlineBytes(); ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				return n
			}
			if b.Type == "X509 CRL" {
				if _, err := x509.ParseRevocationList(b.Bytes); err != nil {
					t.Fatalf("a CRL of %s's entry does not parse: %v", td, err)
				}
				n++
			}
		}
	}
	t.Fatalf("secret %s has no entry for %s", s.Name, td)
	return 0
}
