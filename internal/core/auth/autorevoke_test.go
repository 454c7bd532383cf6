package auth_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// crlSerials are the serials the auth service's CRLs list, as hex.
func crlSerials(t *testing.T, srv *authtest.Server) map[string]bool {
	t.Helper()
	resp, err := srv.AdminClient(t).GetCRLs(context.Background(), &authv1.GetCRLsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, c := range resp.Crls {
		crl, err := x509.ParseRevocationList(c.Der)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range crl.RevokedCertificateEntries {
			out[fmt.Sprintf("%032x", e.SerialNumber)] = true
		}
	}
	return out
}

// revokedCauses are the serials of svid.x509.revoked events, with the
// cause each names.
func revokedCauses(t *testing.T, srv *authtest.Server) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, ev := range auditTypes(t, srv, "svid.x509.revoked") {
		if ev.Serial != "" {
			out[ev.Serial] = ev.Details["cause"]
		}
	}
	return out
}

func signX509(t *testing.T, c *client.Client, id string) string {
	t.Helper()
	key, _ := client.NewKey()
	csr, _ := client.NewCSR(key)
	resp, err := c.SignX509SVID(context.Background(), &authv1.SignX509SVIDRequest{SpiffeId: id, Csr: csr})
	if err != nil {
		t.Fatalf("issuing %s: %v", id, err)
	}
	return resp.Serial
}

// A lock revokes the X509-SVIDs it covers, each revocation audited with
// the lock as its cause: a SPIFFE ID lock those of its IDs (not a
// sibling's), a user lock those the user asked for, a bot lock the bot's.
// The locked user's own login is left alone: removing the lock restores it.
func TestLockRevokesTheSVIDsItCovers(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	admin := srv.AdminClient(t)
	dev := loggedInUser(t, srv, "dev", grant("/svc/**"))
	ops := loggedInUser(t, srv, "ops", grant("/ops/**"))
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{roleDoc(t, "web", grant("/svc/web/**"))}}); err != nil {
		t.Fatal(err)
	}
	bot := joinedBot(t, srv, "web", "web")

	pay, payroll := signX509(t, dev, "/svc/pay/api"), signX509(t, dev, "/svc/payroll")
	opsSerial := signX509(t, ops, "/ops/db")
	botSerial := signX509(t, bot, "/svc/web/1")
	if got := crlSerials(t, srv); len(got) != 0 {
		t.Fatalf("the CRL lists %v before any lock", got)
	}

	createLock(t, admin, "pay", resource.LockTarget{SPIFFEID: "/svc/pay"}, "key leaked")
	createLock(t, admin, "ops-out", resource.LockTarget{User: "ops"}, "laptop stolen")
	createLock(t, admin, "web-out", resource.LockTarget{Bot: "web"}, "host compromised")

	crl, causes := crlSerials(t, srv), revokedCauses(t, srv)
	for serial, cause := range map[string]string{pay: "lock pay", opsSerial: "lock ops-out", botSerial: "lock web-out"} {
		if !crl[serial] {
			t.Errorf("the CRL does not list %s, revoked by %s", serial, cause)
		}
		if causes[serial] != cause {
			t.Errorf("the revocation of %s is audited with cause %q, want %q", serial, causes[serial], cause)
		}
	}
	if crl[payroll] {
		t.Errorf("the CRL lists %s, of /svc/payroll, which lock pay does not cover", payroll)
	}

	if _, err := admin.DeleteResource(ctx, &authv1.DeleteResourceRequest{Kind: resource.KindLock, Name: "ops-out"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.ListResources(ctx, &authv1.ListResourcesRequest{Kind: resource.KindRole}); err != nil && strings.Contains(err.Error(), "revoked") {
		t.Fatalf("the user's login was revoked by the lock: %v", err)
	}
}

// A SPIFFE ID lock sends agents the ID's revocation time with the locks,
// so that its JWT-SVIDs issued before it fail validation after the lock
// is removed, until they expire.
func TestLockSendsAgentsTheRevokedSPIFFEID(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	admin := srv.AdminClient(t)
	dev := loggedInUser(t, srv, "dev", grant("/svc/**"))
	jwt, err := dev.SignJWTSVID(ctx, &authv1.SignJWTSVIDRequest{SpiffeId: "/svc/pay/api", Audience: []string{"db"}})
	if err != nil {
		t.Fatal(err)
	}
	createLock(t, admin, "pay", resource.LockTarget{SPIFFEID: "/svc/pay"}, "key leaked")

	stream, err := srv.LocalAgentClient(t).WatchAgent(ctx, &authv1.WatchAgentRequest{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	ids := st.GetRevokedIds()
	if len(ids) != 1 || ids[0].SpiffeId != "/svc/pay" || !ids[0].Prefix || ids[0].Reason != "key leaked" {
		t.Fatalf("the agent state carries revoked IDs %v, want /svc/pay under lock pay", ids)
	}
	if until := ids[0].Until.AsTime(); until.Before(jwt.ExpiresAt.AsTime()) {
		t.Fatalf("the revocation ends at %s, before the token it covers expires (%s)", until, jwt.ExpiresAt.AsTime())
	}
	if ids[0].RevokedAt.AsTime().IsZero() {
		t.Fatal("the revocation has no time")
	}
}
