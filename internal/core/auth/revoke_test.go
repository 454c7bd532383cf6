package auth_test

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Refusals of a revocation say what is wrong and
// name the next step, which widctl words; the messages name no command.
func TestRevokeAndCRLRefusalsNameNextStep(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	admin := srv.AdminClient(t)
	for _, tc := range []struct {
		serial, msg, next string
		code              codes.Code
	}{
		{"zz", `"zz" is not a certificate serial`, authv1.NextSerialHex, codes.InvalidArgument},
		{"0x0A", "no unexpired X509-SVID with serial 0000000000000000000000000000000a was issued", authv1.NextCheckSerial, codes.NotFound},
	} {
		_, err := admin.RevokeX509SVID(ctx, &authv1.RevokeX509SVIDRequest{Serial: tc.serial, Reason: "test"})
		if status.Code(err) != tc.code || status.Convert(err).Message() != tc.msg {
			t.Fatalf("revoking %q = %v, want %v saying %q", tc.serial, err, tc.code, tc.msg)
		}
		wantNext(t, err, tc.next, "")
	}

}

// crlsByKey fetches the CRLs and checks each against the CA certificate
// of its key in the bundle: it parses, that key signed it, and its next
// update is bounded.
func crlsByKey(t *testing.T, c *client.Client) map[string]*x509.RevocationList {
	t.Helper()
	ctx := context.Background()
	b, err := c.GetBundle(ctx, &authv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cas := map[string]*x509.Certificate{}
	for rest := b.X509Pem; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		cas[hex.EncodeToString(cert.SubjectKeyId)] = cert
	}
	resp, err := c.GetCRLs(ctx, &authv1.GetCRLsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*x509.RevocationList{}
	for _, crl := range resp.Crls {
		ca := cas[crl.CaKeyId]
		if ca == nil {
			t.Fatalf("a CRL names CA key %s, which is not in the bundle", crl.CaKeyId)
		}
		parsed, err := x509.ParseRevocationList(crl.Der)
		if err != nil {
			t.Fatalf("the CRL of %s does not parse: %v", crl.CaKeyId, err)
		}
		if err := parsed.CheckSignatureFrom(ca); err != nil {
			t.Fatalf("the CRL of %s is not signed by that CA key: %v", crl.CaKeyId, err)
		}
		if parsed.NextUpdate.Sub(parsed.ThisUpdate) > 2*time.Hour {
			t.Fatalf("the CRL of %s runs from %s to %s: its next update is not bounded", crl.CaKeyId, parsed.ThisUpdate, parsed.NextUpdate)
		}
		out[crl.CaKeyId] = parsed
	}
	if len(out) != len(cas) {
		t.Fatalf("%d CRLs for the %d X.509 CA keys of the bundle", len(out), len(cas))
	}
	return out
}

func listsSerial(crl *x509.RevocationList, serial string) bool {
	for _, e := range crl.RevokedCertificateEntries {
		if fmt.Sprintf("%032x", e.SerialNumber) == serial {
			return true
		}
	}
	return false
}

// During a rotation both X.509 CA keys are in the bundle and both have
// signed certificates still valid: each key has its own CRL, signed by
// it, and a revoked serial is listed in the CRL of the key that signed it
// only, with every CRL's number growing.
func TestCRLPerCAKeyAcrossRotation(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	admin := srv.AdminClient(t)
	web := loggedInUser(t, srv, "web", grant("/svc/**"))
	sign := func(id string) (serial, keyID string) {
		t.Helper()
		x, err := web.SignX509SVID(ctx, &authv1.SignX509SVIDRequest{SpiffeId: id, Csr: mustCSR(t)})
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(x.CertChain[0])
		if err != nil {
			t.Fatal(err)
		}
		return x.Serial, hex.EncodeToString(leaf.AuthorityKeyId)
	}
	oldSerial, oldKey := sign("/svc/old")
	if got := crlsByKey(t, admin); len(got) != 1 || got[oldKey] == nil {
		t.Fatalf("before the rotation: CRLs of %v, want one of %s", keysOf(got), oldKey)
	}
	for _, phase := range []string{"init", "update_clients"} {
		if _, err := admin.RotateCA(ctx, &authv1.RotateCARequest{Type: "spiffe", Phase: phase, Force: true}); err != nil {
			t.Fatalf("rotating to %s: %v", phase, err)
		}
	}
	newSerial, newKey := sign("/svc/new")
	if newKey == oldKey {
		t.Fatal("update_clients did not move signing to the new key")
	}
	before := crlsByKey(t, admin)
	if before[oldKey] == nil || before[newKey] == nil {
		t.Fatalf("mid-rotation: CRLs of %v, want both %s and %s", keysOf(before), oldKey, newKey)
	}

	// The old key's certificate, revoked mid-rotation.
	if _, err := admin.RevokeX509SVID(ctx, &authv1.RevokeX509SVIDRequest{Serial: oldSerial, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	after := crlsByKey(t, admin)
	if !listsSerial(after[oldKey], oldSerial) {
		t.Fatalf("the old key's CRL does not list %s, which it signed", oldSerial)
	}
	if listsSerial(after[newKey], oldSerial) {
		t.Fatalf("the new key's CRL lists %s, which the old key signed", oldSerial)
	}
	if _, err := admin.RevokeX509SVID(ctx, &authv1.RevokeX509SVIDRequest{SpiffeId: "/svc/new", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	last := crlsByKey(t, admin)
	if !listsSerial(last[newKey], newSerial) || listsSerial(last[oldKey], newSerial) {
		t.Fatalf("%s, signed by the new key, is listed by the new key's CRL %v and the old key's %v; want only the new key's",
			newSerial, listsSerial(last[newKey], newSerial), listsSerial(last[oldKey], newSerial))
	}
	for _, k := range []string{oldKey, newKey} {
		if !(before[k].Number.Cmp(after[k].Number) < 0 && after[k].Number.Cmp(last[k].Number) < 0) {
			t.Fatalf("the crlNumber of %s went %s, %s, %s: not up each time", k, before[k].Number, after[k].Number, last[k].Number)
		}
	}
}

func keysOf(m map[string]*x509.RevocationList) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// crlNumber never goes back, even when the auth service restarts with a
// clock behind the one it had.
func TestCRLNumberSurvivesRestartWithClockBehind(t *testing.T) {
	dir, err := os.MkdirTemp("", "wid-crl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx := context.Background()
	number := func(clock func() time.Time) *big.Int {
		t.Helper()
		srv, err := auth.Open(ctx, auth.Config{DataDir: dir, TrustDomain: "example.org", Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		crls, err := srv.CRLs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(crls) != 1 {
			t.Fatalf("%d CRLs, want 1", len(crls))
		}
		crl, err := x509.ParseRevocationList(crls[0].Der)
		if err != nil {
			t.Fatal(err)
		}
		return crl.Number
	}
	now := time.Now()
	first := number(func() time.Time { return now })
	second := number(func() time.Time { return now.Add(-10 * time.Minute) })
	if second.Cmp(first) <= 0 {
		t.Fatalf("after a restart with the clock 10 minutes behind, crlNumber went from %s to %s", first, second)
	}
}

// The bundle endpoint serves each CA key's CRL to relying parties in other
// trust domains, over the endpoint's own TLS: GET only, and a name that is
// no key ID of ours is refused without building anything.
func TestBundleEndpointServesCRLs(t *testing.T) {
	srv := authtest.Start(t, func(c *auth.Config) { c.BundleEndpointListen = "127.0.0.1:0" })
	ctx := context.Background()
	admin := srv.AdminClient(t)
	web := loggedInUser(t, srv, "web", grant("/svc/**"))
	x, err := web.SignX509SVID(ctx, &authv1.SignX509SVIDRequest{SpiffeId: "/svc/web", Csr: mustCSR(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RevokeX509SVID(ctx, &authv1.RevokeX509SVIDRequest{Serial: x.Serial, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	b, err := admin.GetBundle(ctx, &authv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString(srv.TrustDomain)
	bundle, err := x509bundle.Parse(td, b.X509Pem)
	if err != nil {
		t.Fatal(err)
	}
	tlsConf := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromPath(td, "/_wid/bundle-endpoint")))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}
	t.Cleanup(hc.CloseIdleConnections)
	base := strings.TrimSuffix(srv.Info().BundleEndpoint, "/")

	keyID := hex.EncodeToString(bundle.X509Authorities()[0].SubjectKeyId)
	resp, err := hc.Get(base + "/crl/" + keyID + ".crl")
	if err != nil {
		t.Fatal(err)
	}
	der, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("GET /crl/%s.crl on the bundle endpoint: %s (%s): %s", keyID, resp.Status, resp.Header.Get("Content-Type"), der)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(bundle.X509Authorities()[0]); err != nil {
		t.Fatalf("the CRL served is not signed by its CA key: %v", err)
	}
	if !listsSerial(crl, x.Serial) {
		t.Fatalf("the CRL served does not list the revoked serial %s", x.Serial)
	}

	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{http.MethodPost, "/crl/" + keyID + ".crl", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/crl/" + keyID + ".crl", http.StatusMethodNotAllowed},
		{http.MethodGet, "/crl/" + strings.Repeat("ab", 40) + ".crl", http.StatusNotFound},
		{http.MethodGet, "/crl/" + strings.ToUpper(keyID) + ".crl", http.StatusNotFound},
		{http.MethodGet, "/crl/" + keyID, http.StatusNotFound},
		{http.MethodGet, "/crl/" + strings.Repeat("0", 40) + ".crl", http.StatusNotFound},
	} {
		req, err := http.NewRequest(tc.method, base+tc.path, strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s: %s (%s), want %d", tc.method, tc.path, resp.Status, strings.TrimSpace(string(body)), tc.code)
		}
	}
}
