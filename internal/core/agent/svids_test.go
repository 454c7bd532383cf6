package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// A renewal the auth service refuses because the identity is gone (the
// state saying so not yet arrived) takes the SVID out of the cache at
// once: it is no longer served nor counted as signed by the old key.
func TestRefusedRenewalOfRemovedIdentityDropsSVID(t *testing.T) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), SubjectKeyId: []byte{1, 2, 3, 4},
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	id := spiffeid.RequireFromString("spiffe://example.org/uid/0")
	var calls atomic.Int32
	// The auth service's answers: an SVID, then the refusal it gives once
	// the identity is removed.
	issue := func(_ context.Context, req *authv1.IssueWorkloadSVIDsRequest) (*authv1.IssueWorkloadSVIDsResponse, error) {
		if calls.Add(1) > 1 {
			return &authv1.IssueWorkloadSVIDsResponse{Results: []*authv1.WorkloadSVIDResult{{
				Error: `workload identity "dev-uid" does not exist`, Check: checkNotSelected}}}, nil
		}
		pub, err := x509.ParsePKIXPublicKey(req.Svids[0].PublicKey)
		if err != nil {
			return nil, err
		}
		u, _ := url.Parse(id.String())
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), URIs: []*url.URL{u},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
		if err != nil {
			return nil, err
		}
		return &authv1.IssueWorkloadSVIDsResponse{Results: []*authv1.WorkloadSVIDResult{{
			SpiffeId: id.String(), CertChain: [][]byte{der}, ExpiresAt: timestamppb.New(tmpl.NotAfter)}}}, nil
	}
	c := newCache(issue, slog.New(slog.DiscardHandler), newMetrics())
	en := entitlement{identity: "dev-uid", id: id, key: "dev-uid\x00" + id.String()}
	ctx := context.Background()
	got, errs := c.get(ctx, authv1.SVIDTypeX509, []entitlement{en}, nil, map[string]string{"workload.unix.uid": "0"})
	if got[0] == nil {
		t.Fatalf("first issuance: %v", errs[0])
	}
	if signers := c.signedBy(); signers[authv1.SVIDTypeX509] != "01020304" {
		t.Fatalf("signedBy = %v, want the CA's key 01020304", signers)
	}
	// A rotation moves signing to another key: the cache renews early,
	// and the auth service refuses.
	changed := c.changed.wait()
	c.setSigners(map[string]string{authv1.SVIDTypeX509: "another-key"})
	c.renewDue(ctx)
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("the refused renewal did not change what is served")
	}
	if signers := c.signedBy(); len(signers) != 0 {
		t.Errorf("signedBy = %v after the refusal, want nothing: the SVID would hold the rotation back", signers)
	}
	if got, _ := c.get(ctx, authv1.SVIDTypeX509, []entitlement{en}, nil, map[string]string{"workload.unix.uid": "0"}); got[0] != nil {
		t.Error("the SVID of the removed identity is still served")
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("the auth service was asked %d times, want 2 (no retry of a refusal)", n)
	}
}
