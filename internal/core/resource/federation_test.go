package resource

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// A bundle a wid trust domain exports, as `widctl bundle export --format spiffe` prints it.
const partnerBundle = `{"keys":[{"use":"x509-svid","kty":"EC","crv":"P-256","x":"kkEn5E2Hd_rvCRDCVMNj3deN0ADij9uJVmN-El0CJz0","y":"qNrnjhtzrtTR0bRgI2jPIC1nEgcWNX63YcZOEzyo1iA","x5c":["MIIBKjCB0aADAgECAgEBMAoGCCqGSM49BAMCMAAwIhgPMDAwMTAxMDEwMDAwMDBaGA8wMDAxMDEwMTAwMDAwMFowADBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABJJBJ+RNh3f67wkQwlTDY93XjdAA4o/biVZjfhJdAic9qNrnjhtzrtTR0bRgI2jPIC1nEgcWNX63YcZOEzyo1iCjODA2MA8GA1UdEwEB/wQFMAMBAf8wIwYDVR0RAQH/BBkwF4YVc3BpZmZlOi8vcGFydG5lci50ZXN0MAoGCCqGSM49BAMCA0gAMEUCIQDaCZMvIo5vHFaqSnWWw3Q8OE+wUVzcHt1UPx6L9PZ0hQIgBDoN+jjwUbL8cYgj6fX2xS+IwnJ56zOeUpmEtCqH8ng="]}],"spiffe_sequence":3,"spiffe_refresh_hint":60}`

func TestFederationValidate(t *testing.T) {
	if _, err := ParseBundle(spiffeid.RequireTrustDomainFromString("partner.test"), []byte(partnerBundle)); err != nil {
		t.Fatalf("the test bundle does not parse: %v", err)
	}
	good := func() *Federation {
		return &Federation{Header: Header{Kind: KindFederation, Version: V1, Metadata: Metadata{Name: "partner.test"}},
			Spec: FederationSpec{BundleEndpointURL: "https://partner.test:8443/", Profile: ProfileHTTPSSPIFFE, Bundle: partnerBundle}}
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("a good federation: %v", err)
	}
	for name, c := range map[string]struct {
		edit func(*Federation)
		want string
	}{
		"http URL":        {func(f *Federation) { f.Spec.BundleEndpointURL = "http://partner.test/" }, "is not an https URL"},
		"no URL":          {func(f *Federation) { f.Spec.BundleEndpointURL = "" }, "spec.bundle_endpoint_url"},
		"credentials":     {func(f *Federation) { f.Spec.BundleEndpointURL = "https://u:p@partner.test/" }, "carries credentials"},
		"unknown profile": {func(f *Federation) { f.Spec.Profile = "https" }, "is not a bundle endpoint profile"},
		"no bundle":       {func(f *Federation) { f.Spec.Bundle = "" }, "an https_spiffe endpoint is authenticated with the foreign trust domain's bundle"},
		"bad bundle":      {func(f *Federation) { f.Spec.Bundle = "{" }, "not a SPIFFE bundle"},
		"symmetric JWT key": {func(f *Federation) {
			f.Spec.Bundle = strings.Replace(partnerBundle, `"keys":[`, `"keys":[{"use":"jwt-svid","kty":"oct","kid":"k1","k":"c2VjcmV0"},`, 1)
		}, `JWT authority "k1" is a symmetric ("kty":"oct") key`},
		"other td's bundle": {func(f *Federation) { f.Metadata.Name = "other.test" }, "is of trust domain partner.test, not other.test"},
		"foreign endpoint":  {func(f *Federation) { f.Spec.EndpointSPIFFEID = "spiffe://other.test/x" }, "is not in trust domain partner.test"},
		"web with ID": {func(f *Federation) {
			f.Spec.Profile, f.Spec.EndpointSPIFFEID = ProfileHTTPSWeb, "spiffe://partner.test/x"
		}, "remove it, or use profile https_spiffe"},
		"huge bundle": {func(f *Federation) { f.Spec.Bundle = strings.Repeat(" ", MaxBundleSize+1) }, "over the limit"},
	} {
		f := good()
		c.edit(f)
		if err := f.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, c.want)
		}
	}
	id, err := good().EndpointID()
	if err != nil || id.String() != "spiffe://partner.test/_wid/bundle-endpoint" {
		t.Errorf("default endpoint ID %s, %v", id, err)
	}
	web := good()
	web.Spec.Profile, web.Spec.Bundle = ProfileHTTPSWeb, ""
	if err := web.Validate(); err != nil {
		t.Errorf("https_web without a bundle: %v", err)
	}
}

func TestFederatesWithValidate(t *testing.T) {
	for _, c := range []struct {
		tds  []string
		want string
	}{
		{[]string{"partner.test", "spire.test"}, ""},
		{[]string{"spiffe://partner.test"}, "without spiffe://"},
		{[]string{"Partner.test"}, "is not a trust domain name"},
		{[]string{"a.test", "a.test"}, "is listed twice"},
	} {
		err := validateFederatesWith("workload identity \"w\"", c.tds)
		if (c.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.tds, err, c.want)
		}
	}
}

// FuzzParseBundle feeds arbitrary bytes to the decoder of bundles that
// bundle endpoints and operators send: it must never panic, and what it
// accepts holds authorities of the trust domain only.
func FuzzParseBundle(f *testing.F) {
	f.Add([]byte(partnerBundle))
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"use":"jwt-svid","kty":"EC","kid":"k","crv":"P-256","x":"kkEn5E2Hd_rvCRDCVMNj3deN0ADij9uJVmN-El0CJz0","y":"qNrnjhtzrtTR0bRgI2jPIC1nEgcWNX63YcZOEzyo1iA"}],"spiffe_sequence":1}`))
	f.Add([]byte(`{"keys":[{"use":"x509-svid","kty":"EC","x5c":["AAAA"]}],"spiffe_refresh_hint":-1}`))
	td := spiffeid.RequireTrustDomainFromString("partner.test")
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBundle(td, data)
		if err != nil {
			return
		}
		if len(b.X509Authorities()) == 0 && len(b.JWTAuthorities()) == 0 {
			t.Fatal("accepted a bundle with no authorities")
		}
		for _, c := range b.X509Authorities() {
			for _, u := range c.URIs {
				if id, err := spiffeid.FromURI(u); err == nil && id.TrustDomain() != td {
					t.Fatalf("accepted an authority of %s", id.TrustDomain())
				}
			}
		}
	})
}
