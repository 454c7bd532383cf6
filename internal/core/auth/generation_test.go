package auth_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// readOwnRole is a call every user and bot may make: reading a role it holds.
func readOwnRole(c *client.Client, role string) error {
	_, err := c.GetResource(context.Background(), &authv1.GetResourceRequest{Kind: resource.KindRole, Name: role})
	return err
}

func dialAs(t *testing.T, srv *authtest.Server, id *client.Identity) *client.Client {
	t.Helper()
	c, err := client.Dial(client.Config{Auth: srv.Addr, Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wantGenerationRefusal(t *testing.T, err error, want, next, name string) {
	t.Helper()
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), want) {
		t.Fatalf("call with an old certificate: got %v, want Unauthenticated saying %q", err, want)
	}
	wantNext(t, err, next, name)
}

// wantNext checks that err's ErrorInfo names the next step next, about
// name; widctl words it (internal/advice tests the words).
func wantNext(t *testing.T, err error, next, name string) {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == authv1.ErrorDomain {
			if md := info.GetMetadata(); md[authv1.ErrorMetaNext] != next || md[authv1.ErrorMetaName] != name {
				t.Fatalf("%v: next step %v, want %s about %q", err, md, next, name)
			}
			return
		}
	}
	t.Fatalf("%v: no ErrorInfo of the auth service, want next step %s", err, next)
}

// A user's certificate stops working when an admin resets the user: the
// reset revokes it, audited with its cause, and a call with it is refused
// saying when and why, and audited; a new login works.
func TestResetUserEndsOldCertificates(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	invite := addUser(t, srv, 0)
	id, err := login(t, srv, &authv1.LoginRequest{User: "alice", Invite: invite, Password: alicePassword})
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	old := dialAs(t, srv, id)
	if err := readOwnRole(old, "dev"); err != nil {
		t.Fatalf("before the reset: %v", err)
	}
	reset, err := srv.AdminClient(t).ResetUser(ctx, &authv1.ResetUserRequest{Name: "alice"})
	if err != nil {
		t.Fatalf("reset: %v", err)
	}
	wantGenerationRefusal(t, readOwnRole(old, "dev"), `your certificate was revoked at `, authv1.NextLoginAgain, "alice")
	wantGenerationRefusal(t, readOwnRole(old, "dev"), `(user reset)`, authv1.NextLoginAgain, "alice")
	var revoked bool
	for _, ev := range auditTypes(t, srv, "svid.x509.revoked") {
		if ev.Serial == fmt.Sprintf("%032x", id.Leaf.SerialNumber) && ev.Details["cause"] == "user reset" && ev.Details["ca"] == "user" {
			revoked = true
		}
	}
	if !revoked {
		t.Fatalf("the reset did not revoke the login %032x with cause user reset", id.Leaf.SerialNumber)
	}
	if _, err := old.RenewUserCert(ctx, &authv1.RenewUserCertRequest{Csr: mustCSR(t)}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("renewing an old certificate after the reset: got %v, want Unauthenticated", err)
	}
	denials := auditTypes(t, srv, "access.denied")
	if len(denials) == 0 || !strings.Contains(denials[len(denials)-1].Reason, "revoked") || denials[len(denials)-1].Details["check"] != "revoked" {
		t.Fatalf("the refusal was not audited: %v", denials)
	}

	id2, err := login(t, srv, &authv1.LoginRequest{User: "alice", Invite: reset.Invite, Password: alicePassword + " 2"})
	if err != nil {
		t.Fatalf("login after reset: %v", err)
	}
	if err := readOwnRole(dialAs(t, srv, id2), "dev"); err != nil {
		t.Fatalf("a certificate from after the reset: %v", err)
	}
}

// After bot rm and bot add of the same name, the old bot's certificate does
// not authenticate as the new bot, nor renew.
func TestRecreatedBotEndsOldCertificates(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	admin := srv.AdminClient(t)
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{roleDoc(t, "web", grant("/svc/web"))}}); err != nil {
		t.Fatal(err)
	}
	old := joinedBot(t, srv, "web", "web")
	if err := readOwnRole(old, "web"); err != nil {
		t.Fatalf("before removal: %v", err)
	}
	if _, err := admin.DeleteResource(ctx, &authv1.DeleteResourceRequest{Kind: resource.KindBot, Name: "web"}); err != nil {
		t.Fatal(err)
	}
	fresh := joinedBot(t, srv, "web", "web")
	wantGenerationRefusal(t, readOwnRole(old, "web"), `the certificate of bot "web" was revoked at `, authv1.NextRejoin, "web")
	wantGenerationRefusal(t, readOwnRole(old, "web"), `(bot removed)`, authv1.NextRejoin, "web")
	if _, err := old.RenewBotCert(ctx, &authv1.RenewBotCertRequest{Csr: mustCSR(t)}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("renewing the old bot's certificate: got %v, want Unauthenticated", err)
	}
	if err := readOwnRole(fresh, "web"); err != nil {
		t.Fatalf("the new bot: %v", err)
	}
	renewed, err := fresh.RenewBotCert(ctx, &authv1.RenewBotCertRequest{Csr: mustCSR(t)})
	if err != nil {
		t.Fatalf("renewing the new bot: %v", err)
	}
	if len(renewed.CertChain) == 0 {
		t.Fatal("no renewed certificate")
	}
}

func mustCSR(t *testing.T) []byte {
	t.Helper()
	key, err := client.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := client.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}
