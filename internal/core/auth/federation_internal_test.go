package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"github.com/wid-project/wid/internal/testkit"
)

// foreignCA is a foreign trust domain's CA, able to sign its bundle
// endpoint's SVID.
type foreignCA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newForeignCA(t *testing.T, td string) *foreignCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://" + td)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: td}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &foreignCA{td: spiffeid.RequireTrustDomainFromString(td), cert: cert, key: key}
}

// svid signs a server SVID for id, valid from notBefore to notAfter.
func (c *foreignCA) svid(t *testing.T, id string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), URIs: []*url.URL{u}, NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// bundle is the CA's SPIFFE bundle with seq and hint (0: none).
func (c *foreignCA) bundle(t *testing.T, seq uint64, hint time.Duration) *spiffebundle.Bundle {
	t.Helper()
	b := spiffebundle.FromX509Authorities(c.td, []*x509.Certificate{c.cert})
	b.SetSequenceNumber(seq)
	if hint != 0 {
		b.SetRefreshHint(hint)
	}
	return b
}

func (c *foreignCA) bundleJSON(t *testing.T, seq uint64, hint time.Duration) []byte {
	t.Helper()
	data, err := c.bundle(t, seq, hint).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// endpoint serves h over TLS with cert on loopback.
func endpoint(t *testing.T, cert tls.Certificate, h http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

func serveBytes(data []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(data) })
}

func spiffeFederation(td, u string, held *spiffebundle.Bundle) *resource.Federation {
	return &resource.Federation{Header: resource.Header{Kind: resource.KindFederation, Version: resource.V1, Metadata: resource.Metadata{Name: td}},
		Spec: resource.FederationSpec{BundleEndpointURL: u, Profile: resource.ProfileHTTPSSPIFFE}}
}

// Every bad answer of a bundle endpoint is refused with its reason; a good
// one is taken.
func TestFetchFederatedBundleRefusals(t *testing.T) {
	partner := newForeignCA(t, "partner.test")
	other := newForeignCA(t, "other.test")
	now := time.Now()
	goodSVID := partner.svid(t, "spiffe://partner.test/_wid/bundle-endpoint", now.Add(-time.Minute), now.Add(time.Hour))
	held := partner.bundle(t, 5, time.Minute)

	webSrv := httptest.NewTLSServer(serveBytes(partner.bundleJSON(t, 6, time.Minute)))
	t.Cleanup(webSrv.Close)
	webRoots := x509.NewCertPool()
	webRoots.AddCert(webSrv.Certificate())
	// A redirect to another host (localhost is another host than 127.0.0.1).
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(webSrv.URL, "https://"))
	redirect := endpoint(t, goodSVID, http.RedirectHandler("https://localhost:"+port+"/", http.StatusFound))

	big := make([]byte, resource.MaxBundleSize+10)
	for i := range big {
		big[i] = ' '
	}
	copy(big, partner.bundleJSON(t, 6, time.Minute))

	cases := []struct {
		name string
		url  string
		fed  func(u string) *resource.Federation
		want string
	}{
		{"good", endpoint(t, goodSVID, serveBytes(partner.bundleJSON(t, 6, time.Minute))), nil, ""},
		{"another trust domain's bundle", endpoint(t, goodSVID, serveBytes(other.bundleJSON(t, 6, time.Minute))), nil, "is of trust domain other.test, not partner.test"},
		{"expired certificate", endpoint(t, partner.svid(t, "spiffe://partner.test/_wid/bundle-endpoint", now.Add(-2*time.Hour), now.Add(-time.Hour)), serveBytes(partner.bundleJSON(t, 6, time.Minute))), nil, "expired"},
		{"certificate of another trust domain", endpoint(t, other.svid(t, "spiffe://partner.test/_wid/bundle-endpoint", now.Add(-time.Minute), now.Add(time.Hour)), serveBytes(partner.bundleJSON(t, 6, time.Minute))), nil, "certificate"},
		{"endpoint SPIFFE ID mismatch", endpoint(t, partner.svid(t, "spiffe://partner.test/svc/web", now.Add(-time.Minute), now.Add(time.Hour)), serveBytes(partner.bundleJSON(t, 6, time.Minute))), nil, "unexpected ID"},
		{"body over the size limit", endpoint(t, goodSVID, serveBytes(big)), nil, "over the limit of 1048576 bytes"},
		{"invalid JWKS", endpoint(t, goodSVID, serveBytes([]byte(`{"keys":[{"use":"x509-svid","kty":"EC","x5c":["bm90IGEgY2VydA=="]}]}`))), nil, "not a SPIFFE bundle"},
		{"JWT key of kty oct", endpoint(t, goodSVID, serveBytes(withOctKey(partner.bundleJSON(t, 6, time.Minute)))), nil, `JWT authority "k1" is a symmetric ("kty":"oct") key`},
		{"not JSON", endpoint(t, goodSVID, serveBytes([]byte(`<html>`))), nil, "not a SPIFFE bundle"},
		{"sequence going backwards", endpoint(t, goodSVID, serveBytes(partner.bundleJSON(t, 4, time.Minute))), nil, "spiffe_sequence 4 is below 5"},
		{"no sequence after one is held", endpoint(t, goodSVID, serveBytes([]byte(strings.Replace(string(partner.bundleJSON(t, 6, time.Minute)), `"spiffe_sequence":6,`, ``, 1)))), nil, "it has no spiffe_sequence, but sequence 5 is held"},
		{"refresh hint of 0", endpoint(t, goodSVID, serveBytes([]byte(strings.Replace(string(partner.bundleJSON(t, 6, time.Minute)), `"spiffe_refresh_hint":60`, `"spiffe_refresh_hint":0`, 1)))), nil, "spiffe_refresh_hint 0s is outside"},
		{"refresh hint of 10 years", endpoint(t, goodSVID, serveBytes(partner.bundleJSON(t, 6, 10*365*24*time.Hour))), nil, "is outside 1s to 168h0m0s"},
		{"HTTP error", endpoint(t, goodSVID, http.NotFoundHandler()), nil, "answered HTTP 404"},
		{"redirect to another host", redirect, nil, "redirected to https://localhost:" + port + ", another host"},
		{"https_web good", webSrv.URL + "/", func(u string) *resource.Federation {
			f := spiffeFederation("partner.test", u, nil)
			f.Spec.Profile = resource.ProfileHTTPSWeb
			return f
		}, ""},
		{"https_web untrusted certificate", endpoint(t, goodSVID, serveBytes(partner.bundleJSON(t, 6, time.Minute))), func(u string) *resource.Federation {
			f := spiffeFederation("partner.test", u, nil)
			f.Spec.Profile = resource.ProfileHTTPSWeb
			return f
		}, "certificate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := spiffeFederation("partner.test", c.url, held)
			if c.fed != nil {
				f = c.fed(c.url)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			b, _, err := fetchFederatedBundle(ctx, f, held, 5, webRoots)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if seq, _ := b.SequenceNumber(); seq != 6 {
					t.Errorf("sequence %d, want 6", seq)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q", err, c.want)
			}
		})
	}
}

func TestFederatedRefreshSchedule(t *testing.T) {
	now := time.Now()
	f := spiffeFederation("partner.test", "https://127.0.0.1:1/", nil)
	pin := specBundleHash(f)
	for _, c := range []struct {
		name string
		rec  *federatedRecord
		want time.Duration
	}{
		{"never fetched", nil, 0},
		{"hint", &federatedRecord{URL: f.Spec.BundleEndpointURL, SpecBundle: pin, LastAttempt: now, RefreshHint: 7 * time.Second}, 7 * time.Second},
		{"no hint", &federatedRecord{URL: f.Spec.BundleEndpointURL, SpecBundle: pin, LastAttempt: now}, defaultRefreshHint},
		{"failed once", &federatedRecord{URL: f.Spec.BundleEndpointURL, SpecBundle: pin, LastAttempt: now, RefreshHint: time.Hour, Error: "x", Failures: 1}, time.Second},
		{"failed often", &federatedRecord{URL: f.Spec.BundleEndpointURL, SpecBundle: pin, LastAttempt: now, RefreshHint: time.Hour, Error: "x", Failures: 40}, maxRetryInterval},
		{"failures but a short hint", &federatedRecord{URL: f.Spec.BundleEndpointURL, SpecBundle: pin, LastAttempt: now, RefreshHint: 2 * time.Second, Error: "x", Failures: 5}, 2 * time.Second},
		{"another pin", &federatedRecord{URL: f.Spec.BundleEndpointURL, LastAttempt: now, RefreshHint: time.Hour, SpecBundle: "0123"}, 0},
		{"another URL", &federatedRecord{URL: "https://elsewhere/", SpecBundle: pin, LastAttempt: now, RefreshHint: time.Hour}, 0},
	} {
		if got := dueIn(c.rec, f, now); got != c.want {
			t.Errorf("%s: due in %s, want %s", c.name, got, c.want)
		}
	}
}

// openFedServer opens an auth service without running it, so that a test
// drives the federation refreshes itself.
func openFedServer(t *testing.T) (*Server, context.Context) {
	t.Helper()
	// Unix socket paths are limited to ~100 bytes; t.TempDir() can be longer.
	dir, err := os.MkdirTemp("", "wid-fed-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx := context.Background()
	s, err := Open(ctx, Config{TrustDomain: "example.org", DataDir: dir, ListenAddr: "127.0.0.1:0", Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// The audit log runs (every write is audited); the refresher does not.
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.audit.Run(actx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	editor, err := s.res.role(ctx, rbac.RoleEditor)
	if err != nil {
		t.Fatal(err)
	}
	return s, context.WithValue(ctx, callerKey{}, &caller{Kind: KindAdmin, Name: "admin", Roles: []*resource.Role{editor}, RemoteAddr: "local"})
}

func fedDoc(t *testing.T, f *resource.Federation) []byte {
	t.Helper()
	doc, err := encode(f)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// storedRecord is the federated bundle record of td, nil when there is none.
func storedRecord(t *testing.T, s *Server, td string) *federatedRecord {
	t.Helper()
	_, recs, err := s.listFederations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return recs[td]
}

// onlyAuthority says whether agents get want, and nothing else, as td's
// X.509 authorities.
func onlyAuthority(t *testing.T, s *Server, td string, want *x509.Certificate) bool {
	t.Helper()
	if err := s.reloadFederations(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, fb := range s.fed.agentBundles() {
		if fb.TrustDomain == td {
			return len(fb.X509Authorities) == 1 && bytes.Equal(fb.X509Authorities[0], want.Raw)
		}
	}
	return false
}

// Re-pinning a federation's bundle (the partner's CA leaked) voids what
// was fetched under the old pin: agents get the new pin at once, the next
// fetch is authenticated by it, and removing the federation removes the
// fetched bundle too.
func TestFederationRepinVoidsFetchedBundle(t *testing.T) {
	s, ctx := openFedServer(t)
	leaked := newForeignCA(t, "partner.test")
	fresh := newForeignCA(t, "partner.test")
	now := time.Now()
	// The attacker, holding the leaked CA, serves the endpoint.
	u := endpoint(t, leaked.svid(t, "spiffe://partner.test/_wid/bundle-endpoint", now.Add(-time.Minute), now.Add(time.Hour)),
		serveBytes(leaked.bundleJSON(t, 50, time.Minute)))

	f := spiffeFederation("partner.test", u, nil)
	f.Spec.Bundle = string(leaked.bundleJSON(t, 1, 0))
	if _, err := s.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{fedDoc(t, f)}}); err != nil {
		t.Fatal(err)
	}
	rec := s.refreshFederation(ctx, f, nil)
	if rec.Error != "" || rec.Sequence != 50 {
		t.Fatalf("first fetch: error %q, sequence %d", rec.Error, rec.Sequence)
	}

	// The operator pins the partner's new CA.
	f.Spec.Bundle = string(fresh.bundleJSON(t, 2, 0))
	if _, err := s.UpdateResource(ctx, &authv1.UpdateResourceRequest{Resource: fedDoc(t, f)}); err != nil {
		t.Fatal(err)
	}
	if !onlyAuthority(t, s, "partner.test", fresh.cert) {
		t.Fatal("after the re-pin agents do not get only the new pin")
	}
	if d := dueIn(storedRecord(t, s, "partner.test"), f, time.Now()); d > 0 {
		t.Errorf("after the re-pin the next fetch is due in %s, want at once", d)
	}
	rec = s.refreshFederation(ctx, f, storedRecord(t, s, "partner.test"))
	if rec.Error == "" {
		t.Fatal("the endpoint serving with the leaked CA was trusted after the re-pin")
	}
	if !onlyAuthority(t, s, "partner.test", fresh.cert) {
		t.Fatal("after a failed fetch agents do not get only the new pin")
	}

	if _, err := s.DeleteResource(ctx, &authv1.DeleteResourceRequest{Kind: resource.KindFederation, Name: "partner.test"}); err != nil {
		t.Fatal(err)
	}
	if rec := storedRecord(t, s, "partner.test"); rec != nil {
		t.Errorf("the fetched bundle outlived its federation: %+v", rec)
	}
}

// withOctKey adds a symmetric JWT key, which go-spiffe takes, to a bundle.
func withOctKey(bundle []byte) []byte {
	return []byte(strings.Replace(string(bundle), `"keys":[`, `"keys":[{"use":"jwt-svid","kty":"oct","kid":"k1","k":"c2VjcmV0LWtleS1ieXRlcw"},`, 1))
}

// One federation whose held bundle cannot be handed to agents (stored by a
// version that took a symmetric JWT key) does not keep the others from them.
func TestFederationBadBundleSkipped(t *testing.T) {
	s, ctx := openFedServer(t)
	bad, good := newForeignCA(t, "bad.test"), newForeignCA(t, "good.test")
	var docs [][]byte
	for _, c := range []*foreignCA{bad, good} {
		f := spiffeFederation(c.td.Name(), "https://127.0.0.1:1/", nil)
		f.Spec.Bundle = string(c.bundleJSON(t, 1, 0))
		docs = append(docs, fedDoc(t, f))
		if c == bad {
			rec, err := json.Marshal(federatedRecord{Bundle: string(withOctKey(c.bundleJSON(t, 2, 0))), Sequence: 2, SpecBundle: specBundleHash(f)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.db.Apply(ctx, store.Op{Type: store.OpUpsert, Item: store.Item{Kind: federatedBundleKind, Name: "bad.test", Data: rec}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: docs}); err != nil {
		t.Fatal(err)
	}
	if err := s.reloadFederations(ctx); err != nil {
		t.Fatalf("one bad bundle failed every federation: %v", err)
	}
	if !onlyAuthority(t, s, "good.test", good.cert) {
		t.Fatal("agents do not get good.test's bundle")
	}
}

// A bundle with the same keys is the same bundle, whatever their type, so
// that an unchanged bundle is not audited as changed on every refresh.
func TestSameBundle(t *testing.T) {
	c := newForeignCA(t, "partner.test")
	data := withOctKey(c.bundleJSON(t, 3, time.Minute))
	a, err := spiffebundle.Parse(c.td, data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := spiffebundle.Parse(c.td, data)
	if err != nil {
		t.Fatal(err)
	}
	if !sameBundle(a, b) {
		t.Error("two parses of one bundle with a symmetric key differ")
	}
	ec, err := spiffebundle.Parse(c.td, c.bundleJSON(t, 3, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := ec.AddJWTAuthority("k2", &c.key.PublicKey); err != nil {
		t.Fatal(err)
	}
	ec2 := ec.Clone()
	if !sameBundle(ec, ec2) {
		t.Error("a bundle and its clone differ")
	}
	if sameBundle(a, ec) {
		t.Error("bundles with other JWT keys are the same")
	}
	ec2.SetSequenceNumber(4)
	if sameBundle(ec, ec2) {
		t.Error("bundles with other sequences are the same")
	}
}

// The federated bundles agents get are bounded in total, so that the first
// state an agent gets fits in one message: a fetched bundle or a created
// federation that would pass the bound is refused with the reason.
func TestFederatedBundlesTotalBounded(t *testing.T) {
	s, ctx := openFedServer(t)
	// Other federations' bundles, as agents get them, fill the bound.
	full := []*authv1.FederatedBundle{{TrustDomain: "big.test", X509Authorities: [][]byte{make([]byte, MaxFederatedBundlesBytes-100)}}}
	s.fed.agent.Store(&full)

	partner := newForeignCA(t, "partner.test")
	now := time.Now()
	u := endpoint(t, partner.svid(t, "spiffe://partner.test/_wid/bundle-endpoint", now.Add(-time.Minute), now.Add(time.Hour)),
		serveBytes(partner.bundleJSON(t, 2, time.Minute)))
	f := spiffeFederation("partner.test", u, nil)
	f.Spec.Bundle = string(partner.bundleJSON(t, 1, 0))
	_, err := s.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{fedDoc(t, f)}})
	if err == nil || !strings.Contains(err.Error(), "over the limit of 2097152 that fits in one message to an agent") {
		t.Fatalf("creating a federation past the bound: %v", err)
	}
	rec := s.refreshFederation(ctx, f, nil)
	if !strings.Contains(rec.Error, "over the limit of 2097152 that fits in one message to an agent") || rec.Bundle != "" {
		t.Fatalf("a fetched bundle past the bound: error %q, bundle kept %v", rec.Error, rec.Bundle != "")
	}

	// With room again, both are taken.
	s.fed.agent.Store(&[]*authv1.FederatedBundle{})
	if _, err := s.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{fedDoc(t, f)}}); err != nil {
		t.Fatal(err)
	}
	if rec := s.refreshFederation(ctx, f, nil); rec.Error != "" || rec.Sequence != 2 {
		t.Fatalf("with room: error %q, sequence %d", rec.Error, rec.Sequence)
	}
}

// A refresh that finds the bundle unchanged is not written to the store
// again within federationRecordEvery (a 1s hint would write every second),
// yet the refresh schedule and federation ls follow it.
func TestFederationUnchangedRefreshNotWritten(t *testing.T) {
	s, ctx := openFedServer(t)
	partner := newForeignCA(t, "partner.test")
	now := time.Now()
	u := endpoint(t, partner.svid(t, "spiffe://partner.test/_wid/bundle-endpoint", now.Add(-time.Minute), now.Add(time.Hour)),
		serveBytes(partner.bundleJSON(t, 2, time.Second)))
	f := spiffeFederation("partner.test", u, nil)
	f.Spec.Bundle = string(partner.bundleJSON(t, 1, 0))
	if _, err := s.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{fedDoc(t, f)}}); err != nil {
		t.Fatal(err)
	}
	if rec := s.refreshFederation(ctx, f, nil); rec.Error != "" {
		t.Fatal(rec.Error)
	}
	first := storedRecord(t, s, "partner.test")
	testkit.Eventually(t, 5*time.Second, func() bool { return s.clock().After(first.LastAttempt.Add(10 * time.Millisecond)) }, "the clock stands still")
	next := s.refreshFederation(ctx, f, first)
	if next.Error != "" || !next.LastAttempt.After(first.LastAttempt) {
		t.Fatalf("second refresh: error %q, attempt %s after %s", next.Error, next.LastAttempt, first.LastAttempt)
	}
	if got := storedRecord(t, s, "partner.test"); !got.LastAttempt.Equal(first.LastAttempt) {
		t.Errorf("an unchanged refresh was written again within %s", federationRecordEvery)
	}
	if d := dueIn(s.fed.withTimes("partner.test", first), f, next.LastAttempt); d != time.Second {
		t.Errorf("after the unwritten refresh the next is due in %s, want the 1s hint", d)
	}
	v, err := s.res.get(ctx, resource.KindFederation, "partner.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.addFederationStatus(ctx, v); err != nil {
		t.Fatal(err)
	}
	if st := v.(*resource.Federation).Status; !st.LastAttempt.Equal(next.LastAttempt) || !st.LastRefresh.Equal(next.LastRefresh) {
		t.Errorf("federation ls shows attempt %s refresh %s, want the unwritten %s", st.LastAttempt, st.LastRefresh, next.LastAttempt)
	}
}
