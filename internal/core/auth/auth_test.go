package auth_test

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func roleDoc(t testing.TB, name string, spec resource.RoleSpec) []byte {
	t.Helper()
	b, err := json.Marshal(&resource.Role{Header: resource.Header{Kind: resource.KindRole, Version: resource.V1, Metadata: resource.Metadata{Name: name}}, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func grant(paths ...string) resource.RoleSpec {
	var s resource.RoleSpec
	for _, p := range paths {
		s.Allow.SPIFFE = append(s.Allow.SPIFFE, resource.SPIFFEGrant{Path: p})
	}
	return s
}

// joinedBot creates a bot holding roles and joins it over TLS.
func joinedBot(t *testing.T, srv *authtest.Server, name string, roles ...string) *client.Client {
	t.Helper()
	ctx := context.Background()
	bot, err := srv.AdminClient(t).CreateBot(ctx, &authv1.CreateBotRequest{Name: name, Roles: roles})
	if err != nil {
		t.Fatalf("creating bot: %v", err)
	}
	id, err := join(srv, bot.Token)
	if err != nil {
		t.Fatalf("joining: %v", err)
	}
	c, err := client.Dial(client.Config{Auth: srv.Addr, Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func join(srv *authtest.Server, token string) (*client.Identity, error) {
	c, err := client.Dial(client.Config{Auth: srv.Addr, CAPin: srv.CAPin})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	key, _ := client.NewKey()
	csr, _ := client.NewCSR(key)
	resp, err := c.Join(context.Background(), &authv1.JoinRequest{Token: token, Csr: csr, Host: "test"})
	if err != nil {
		return nil, err
	}
	return client.NewIdentity(key, resp.CertChain, resp.HostCa)
}

func auditTypes(t *testing.T, srv *authtest.Server, typ string) []*authv1.AuditEvent {
	t.Helper()
	resp, err := srv.AdminClient(t).ListAuditEvents(context.Background(), &authv1.ListAuditEventsRequest{Query: &authv1.AuditQuery{Types: []string{typ}}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Events
}

func TestBotWithoutRulesIsDeniedAndAudited(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	if _, err := srv.AdminClient(t).CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{roleDoc(t, "svc", grant("/svc/*"))}}); err != nil {
		t.Fatal(err)
	}
	bot := joinedBot(t, srv, "web", "svc")
	_, err := bot.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{roleDoc(t, "sneaky", grant("/**"))}})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("bot creating a role: %v, want PermissionDenied", err)
	}
	msg := status.Convert(err).Message()
	if !strings.Contains(msg, "create") || !strings.Contains(msg, "role") {
		t.Fatalf("denial does not name the missing rule: %q", msg)
	}
	evs := auditTypes(t, srv, "access.denied")
	if len(evs) != 1 || evs[0].Actor != "bot:web" || evs[0].Outcome != "denied" {
		t.Fatalf("access.denied events = %v", evs)
	}
	if _, err := srv.AdminClient(t).GetResource(ctx, &authv1.GetResourceRequest{Kind: "role", Name: "sneaky"}); status.Code(err) != codes.NotFound {
		t.Fatalf("denied role exists anyway: %v", err)
	}
}

func TestCreateResourcesIsAllOrNothing(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	admin := srv.AdminClient(t)
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{roleDoc(t, "b", grant("/b"))}}); err != nil {
		t.Fatal(err)
	}
	_, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{roleDoc(t, "a", grant("/a")), roleDoc(t, "b", grant("/b2"))}})
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("batch with an existing role: %v, want AlreadyExists", err)
	}
	if !strings.Contains(status.Convert(err).Message(), "role/b") {
		t.Fatalf("error does not name role/b: %v", err)
	}
	// The failing document's number, from the store's OpError, crosses
	// the wire in the ErrorInfo, beside the resource it names.
	var md map[string]string
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == authv1.ErrorDomain {
			md = info.GetMetadata()
		}
	}
	if md[authv1.ErrorMetaDocument] != "2" || md[authv1.ErrorMetaKind] != "role" || md[authv1.ErrorMetaName] != "b" || md[authv1.ErrorMetaNext] != authv1.NextReplace {
		t.Fatalf("error details %v, want document 2, role b, next step %s", md, authv1.NextReplace)
	}
	if _, err := admin.GetResource(ctx, &authv1.GetResourceRequest{Kind: "role", Name: "a"}); status.Code(err) != codes.NotFound {
		t.Fatalf("role a was created although the batch failed: %v", err)
	}
}

func TestUserWithUnknownRoleIsRefused(t *testing.T) {
	srv := authtest.Start(t)
	doc, _ := json.Marshal(&resource.User{Header: resource.Header{Kind: resource.KindUser, Version: resource.V1, Metadata: resource.Metadata{Name: "alice"}}, Spec: resource.UserSpec{Roles: []string{"nope"}}})
	_, err := srv.AdminClient(t).CreateResource(context.Background(), &authv1.CreateResourceRequest{Resources: [][]byte{doc}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "nope") {
		t.Fatalf("user with unknown role: %v", err)
	}
}

func TestRoleHeldByBotCannotBeDeleted(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	admin := srv.AdminClient(t)
	admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{roleDoc(t, "svc", grant("/svc/*"))}})
	if _, err := admin.CreateBot(ctx, &authv1.CreateBotRequest{Name: "web", Roles: []string{"svc"}}); err != nil {
		t.Fatal(err)
	}
	_, err := admin.DeleteResource(ctx, &authv1.DeleteResourceRequest{Kind: "role", Name: "svc"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "bot web") {
		t.Fatalf("deleting a held role: %v", err)
	}
	// Removing the bot removes its token in the same step.
	if _, err := admin.DeleteResource(ctx, &authv1.DeleteResourceRequest{Kind: "bot", Name: "web"}); err != nil {
		t.Fatal(err)
	}
	toks, _ := admin.ListResources(ctx, &authv1.ListResourcesRequest{Kind: "token"})
	if len(toks.Resources) != 0 {
		t.Fatalf("bot removed but %d tokens remain", len(toks.Resources))
	}
}

func TestSingleUseTokenRaceHasOneWinner(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	srv.AdminClient(t).CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{roleDoc(t, "svc", grant("/svc/*"))}})
	bot, err := srv.AdminClient(t).CreateBot(ctx, &authv1.CreateBotRequest{Name: "web", Roles: []string{"svc"}})
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
	)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := join(srv, bot.Token); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if status.Code(err) != codes.PermissionDenied {
				t.Errorf("losing join: %v, want PermissionDenied", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d joins succeeded with a single-use token", wins)
	}
	if n := len(auditTypes(t, srv, "bot.join")); n != 1 {
		t.Fatalf("%d bot.join events, want 1", n)
	}
	if n := len(auditTypes(t, srv, "bot.join.denied")); n != 7 {
		t.Fatalf("%d bot.join.denied events, want 7", n)
	}
}

func TestTLSWithoutCertificateIsUnauthenticated(t *testing.T) {
	srv := authtest.Start(t)
	c, err := client.Dial(client.Config{Auth: srv.Addr, CAPin: srv.CAPin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.ListResources(context.Background(), &authv1.ListResourcesRequest{Kind: "role"})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "login") {
		t.Fatalf("anonymous ListResources: %v", err)
	}
	ping, err := c.Ping(context.Background(), &authv1.PingRequest{})
	if err != nil || ping.TrustDomain != "example.org" || ping.IdentityKind != "" {
		t.Fatalf("anonymous ping: %v %v", ping, err)
	}
}

func TestWrongPinIsRefusedBeforeAnythingIsSent(t *testing.T) {
	srv := authtest.Start(t)
	wrong := "sha256:" + strings.Repeat("ab", 32)
	c, err := client.Dial(client.Config{Auth: srv.Addr, CAPin: wrong})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Join(context.Background(), &authv1.JoinRequest{Token: "x"})
	if err == nil || !strings.Contains(err.Error(), "does not match the pin") {
		t.Fatalf("join with a wrong pin: %v", err)
	}
	if n := len(auditTypes(t, srv, "bot.join.denied")); n != 0 {
		t.Fatalf("a join reached the server through a wrong pin (%d denials audited)", n)
	}
}

func TestTrustDomainMismatchOnRestart(t *testing.T) {
	srv := authtest.Start(t)
	_, err := auth.Open(context.Background(), auth.Config{DataDir: srv.DataDir + "-other", TrustDomain: "Bad.Example"})
	if err == nil || !strings.Contains(err.Error(), "lower-case") {
		t.Fatalf("upper-case trust domain: %v", err)
	}
	os.RemoveAll(srv.DataDir + "-other")
	// The running one holds its data dir's lock: restart a stopped one.
	dir := srv.DataDir + "-restart"
	t.Cleanup(func() { os.RemoveAll(dir) })
	first, err := auth.Open(context.Background(), auth.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	_, err = auth.Open(context.Background(), auth.Config{DataDir: dir, TrustDomain: "other.org"})
	if err == nil || !strings.Contains(err.Error(), `holds trust domain "example.org"`) {
		t.Fatalf("reopening with another trust domain: %v", err)
	}
}
