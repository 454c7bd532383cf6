package auth_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/issuer"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/x509pop"
	"github.com/wid-project/wid/internal/testkit"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func lockDoc(t testing.TB, name string, target resource.LockTarget, reason string) []byte {
	t.Helper()
	b, err := json.Marshal(&resource.Lock{
		Header: resource.Header{Kind: resource.KindLock, Version: resource.V1, Metadata: resource.Metadata{Name: name}},
		Spec:   resource.LockSpec{Target: target, Reason: reason},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func createLock(t *testing.T, admin *client.Client, name string, target resource.LockTarget, reason string) {
	t.Helper()
	if _, err := admin.CreateResource(context.Background(), &authv1.CreateResourceRequest{Resources: [][]byte{lockDoc(t, name, target, reason)}}); err != nil {
		t.Fatalf("creating lock %s: %v", name, err)
	}
}

// wantLocked waits until call is refused by the lock named, with its reason.
func wantLocked(t *testing.T, what string, lock, reason string, call func() error) {
	t.Helper()
	var err error
	if !testkit.WithinEvery(5*time.Second, 20*time.Millisecond, func() bool {
		err = call()
		msg := status.Convert(err).Message()
		return status.Code(err) == codes.PermissionDenied && strings.Contains(msg, lock) && strings.Contains(msg, reason)
	}) {
		t.Fatalf("%s: got %v, want a refusal naming lock %s and its reason", what, err, lock)
	}
	// Removing the lock is the next step, which widctl words.
	wantNext(t, err, authv1.NextLiftLock, lock)
}

// A lock made on one replica holds on another: a user's calls there are
// refused, a bot's open stream there ends within a second, and removing
// the lock restores both.
func TestLockOnOneReplicaHoldsOnAnother(t *testing.T) {
	rs := replicas(t, 2)
	ctx := context.Background()
	admin0 := rs[0].AdminClient(t)
	alice := loggedInUser(t, rs[1], "alice", rules(resource.KindRole, "read", "list"))
	if _, err := alice.ListResources(ctx, &authv1.ListResourcesRequest{Kind: "role"}); err != nil {
		t.Fatal(err)
	}
	bot := rs[1].LocalAgentClient(t)
	stream, err := bot.WatchAgent(ctx, &authv1.WatchAgentRequest{Host: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	createLock(t, admin0, "alice-out", resource.LockTarget{User: "alice"}, "left the team")
	wantLocked(t, "alice on the other replica", "alice-out", "left the team", func() error {
		_, err := alice.ListResources(ctx, &authv1.ListResourcesRequest{Kind: "role"})
		return err
	})

	locked := time.Now()
	createLock(t, admin0, "node-1-out", resource.LockTarget{Host: "node-1"}, "disk stolen")
	for {
		_, err := stream.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "disk stolen") {
			t.Fatalf("the stream of a bot on a locked host ended with %v, want the lock's refusal", err)
		}
		wantNext(t, err, authv1.NextLiftLock, "node-1-out")
		break
	}
	// The other replica follows the change log, polled at worst every 2s;
	// PostgreSQL's NOTIFY wakes it at once.
	if d := time.Since(locked); d > time.Second {
		t.Fatalf("the stream of a bot on a locked host ended %s after the lock, over a second", d)
	}

	for _, name := range []string{"alice-out", "node-1-out"} {
		if _, err := admin0.DeleteResource(ctx, &authv1.DeleteResourceRequest{Kind: resource.KindLock, Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Succeeds(t, 5*time.Second, func() error {
		_, err := alice.ListResources(ctx, &authv1.ListResourcesRequest{Kind: "role"})
		return err
	}, "alice is still refused after the lock was removed")
}

// A SPIFFE ID lock refuses issuance of that ID and of every ID under its
// path, never of a sibling that merely shares its prefix, and the refusal
// is audited.
func TestLockedSPIFFEIDIsNotIssued(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	user := loggedInUser(t, srv, "dev", grant("/svc/**"))
	key, _ := client.NewKey()
	csr, _ := client.NewCSR(key)
	issue := func(id string) error {
		_, err := user.SignX509SVID(ctx, &authv1.SignX509SVIDRequest{SpiffeId: id, Csr: csr})
		return err
	}
	if err := issue("/svc/pay/api"); err != nil {
		t.Fatal(err)
	}
	createLock(t, srv.AdminClient(t), "pay", resource.LockTarget{SPIFFEID: "spiffe://example.org/svc/pay"}, "key leaked")
	for _, id := range []string{"/svc/pay", "/svc/pay/api"} {
		wantLocked(t, id, "pay", "key leaked", func() error { return issue(id) })
	}
	if err := issue("/svc/payroll"); err != nil {
		t.Fatalf("a sibling sharing the prefix was refused: %v", err)
	}
	var audited bool
	for _, ev := range auditTypes(t, srv, "svid.denied") {
		if ev.SpiffeId == "spiffe://example.org/svc/pay/api" && strings.Contains(ev.Reason, "key leaked") && ev.Details["check"] == "locked" {
			audited = true
		}
	}
	if !audited {
		t.Fatal("the refused issuance is not audited with the lock's reason")
	}

	// Workload SVIDs from an agent: the same.
	bot := srv.LocalAgentClient(t)
	resp, err := bot.IssueWorkloadSVIDs(ctx, &authv1.IssueWorkloadSVIDsRequest{Svids: []*authv1.WorkloadSVIDRequest{{Type: "x509", SpiffeId: "/svc/pay/worker", Csr: csr}}})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.Results[0]; r.Check != "locked" || !strings.Contains(r.Error, "key leaked") {
		t.Fatalf("a workload SVID of a locked ID got %+v, want refused by the lock", r)
	}
}

// The last user who may remove locks cannot lock themselves; another
// admin can, and nothing is stored by the refusal.
func TestLockingYourselfAsLastAdminIsRefused(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	root := loggedInUser(t, srv, "root", rules("*", "*"))
	_, err := root.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{lockDoc(t, "me", resource.LockTarget{User: "root"}, "testing")}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "last user who may remove locks") {
		t.Fatalf("locking yourself as the last admin: %v", err)
	}
	list, err := srv.AdminClient(t).ListResources(ctx, &authv1.ListResourcesRequest{Kind: resource.KindLock})
	if err != nil || len(list.Resources) != 0 {
		t.Fatalf("the refused lock was stored: %v %d", err, len(list.GetResources()))
	}
	// With a second admin it is allowed.
	loggedInUser(t, srv, "root2", rules("*", "*"))
	if _, err := root.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{lockDoc(t, "me", resource.LockTarget{User: "root"}, "testing")}}); err != nil {
		t.Fatalf("locking yourself with another admin left: %v", err)
	}
}

// joinOn joins with token, naming host, and dials as the bot it joined.
func joinOn(t *testing.T, srv *authtest.Server, token, host string) (*client.Client, *authv1.JoinResponse) {
	t.Helper()
	c, err := client.Dial(client.Config{Auth: srv.Addr, CAPin: srv.CAPin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key, _ := client.NewKey()
	resp, err := c.Join(context.Background(), &authv1.JoinRequest{Token: token, Csr: mustCSRFor(t, key), Host: host})
	if err != nil {
		t.Fatalf("joining on %s: %v", host, err)
	}
	return dialJoined(t, srv, key, resp), resp
}

func mustCSRFor(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	csr, err := client.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func dialJoined(t *testing.T, srv *authtest.Server, key crypto.Signer, resp *authv1.JoinResponse) *client.Client {
	t.Helper()
	id, err := client.NewIdentity(key, resp.CertChain, resp.HostCa)
	if err != nil {
		t.Fatal(err)
	}
	bot, err := client.Dial(client.Config{Auth: srv.Addr, Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bot.Close() })
	return bot
}

// streamEnded waits for s to end and returns its error.
func streamEnded(t *testing.T, s *stateStream, what string) error {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case <-s.states:
		case err := <-s.errc:
			return err
		case <-deadline:
			t.Fatalf("%s did not end within 5s", what)
		}
	}
}

// Two agents of one bot on two hosts: a lock on one host ends that
// agent's stream and refuses its calls, whichever agent spoke last, and
// leaves the other agent alone; the locked agent does not get out by
// naming another host.
func TestHostLockHoldsEachAgentToItsOwnHost(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	admin := srv.AdminClient(t)
	create(t, srv, agentRole(t, "fleet", []string{"prod"}, nil, time.Hour))
	if _, err := admin.CreateBot(ctx, &authv1.CreateBotRequest{Name: "fleet", Roles: []string{"fleet"}}); err != nil {
		t.Fatal(err)
	}
	tok, err := admin.CreateJoinToken(ctx, &authv1.CreateJoinTokenRequest{Bot: "fleet", Uses: 2})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := joinOn(t, srv, tok.Token, "node-a")
	b, _ := joinOn(t, srv, tok.Token, "node-b")
	sa := watch(t, a, "node-a")
	sa.next(t, 5*time.Second)
	// node-b speaks last.
	sb := watch(t, b, "node-b")
	sb.next(t, 5*time.Second)

	createLock(t, admin, "node-a-out", resource.LockTarget{Host: "node-a"}, "disk stolen")
	err = streamEnded(t, sa, "the stream of the agent on the locked host")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "disk stolen") {
		t.Fatalf("the stream of the agent on the locked host ended with %v, want the lock's refusal", err)
	}
	renew := func(c *client.Client) (*authv1.RenewBotCertResponse, error) {
		key, _ := client.NewKey()
		return c.RenewBotCert(ctx, &authv1.RenewBotCertRequest{Csr: mustCSRFor(t, key)})
	}
	wantLocked(t, "a call of the agent on the locked host", "node-a-out", "disk stolen", func() error {
		_, err := renew(a)
		return err
	})
	wantLocked(t, "the locked agent naming another host", "node-a-out", "disk stolen", func() error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		s, err := a.WatchAgent(ctx, &authv1.WatchAgentRequest{Host: "node-a-renamed"})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	})

	// The other agent of the bot goes on, and its renewal keeps its host.
	select {
	case err := <-sb.errc:
		t.Fatalf("the stream of the agent on the other host ended: %v", err)
	default:
	}
	resp, err := renew(b)
	if err != nil {
		t.Fatalf("the agent on the other host is refused: %v", err)
	}
	cert, err := x509.ParseCertificate(resp.CertChain[0])
	if err != nil {
		t.Fatal(err)
	}
	if h := issuer.HostFromCert(cert); h != "node-b" {
		t.Fatalf("the renewed certificate is for host %q, want node-b", h)
	}
}

// An x509pop agent's host is its certificate's, x509pop/<fingerprint>: a
// lock on that host is valid and refuses the agent, whatever host it
// names.
func TestHostLockHoldsX509PopAgent(t *testing.T) {
	srv, ca := x509PopSetup(t, "cn=node-1")
	now := time.Now()
	m := ca.Issue(t, "node-1", nil, now.Add(-time.Minute), now.Add(time.Hour))
	c, err := client.Dial(client.Config{Auth: srv.Addr, CAPin: srv.CAPin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	key, _ := client.NewKey()
	csr := mustCSRFor(t, key)
	ch, err := c.JoinChallenge(ctx, &authv1.JoinChallengeRequest{Token: "nodes"})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := x509pop.Sign(m.Key, x509pop.Message(ch.Challenge, csr))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Join(ctx, &authv1.JoinRequest{Token: "nodes", Csr: csr, Host: "claimed-host", JoinMethod: "x509pop",
		X509Chain: [][]byte{m.Cert.Raw}, Challenge: ch.Challenge, ChallengeSignature: sig})
	if err != nil {
		t.Fatal(err)
	}
	bot := dialJoined(t, srv, key, resp)
	host := x509pop.HostName(m.Cert)
	createLock(t, srv.AdminClient(t), "node-1-out", resource.LockTarget{Host: host}, "decommissioned")
	wantLocked(t, "the x509pop agent on a locked host", "node-1-out", "decommissioned", func() error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		s, err := bot.WatchAgent(ctx, &authv1.WatchAgentRequest{Host: "claimed-host"})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	})
}

// A locked user cannot log in: the refusal names the lock once the
// password is right, and a wrong password says nothing of the lock.
func TestLockedUserCannotLogIn(t *testing.T) {
	srv := authtest.Start(t)
	invite := addUser(t, srv, time.Hour)
	if _, err := login(t, srv, &authv1.LoginRequest{User: "alice", Invite: invite, Password: alicePassword}); err != nil {
		t.Fatal(err)
	}
	createLock(t, srv.AdminClient(t), "alice-out", resource.LockTarget{User: "alice"}, "left the team")
	_, err := login(t, srv, &authv1.LoginRequest{User: "alice", Password: alicePassword})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "left the team") {
		t.Fatalf("a locked user's login: got %v, want the lock's refusal", err)
	}
	wantNext(t, err, authv1.NextLiftLock, "alice-out")
	_, err = login(t, srv, &authv1.LoginRequest{User: "alice", Password: "wrong horse battery"})
	if err == nil || strings.Contains(status.Convert(err).Message(), "alice-out") {
		t.Fatalf("a wrong password of a locked user: got %v, want the usual refusal", err)
	}
	logins := auditTypes(t, srv, "user.login")
	if len(logins) != 1 {
		t.Fatalf("user.login events = %d, want only the first login", len(logins))
	}
}

// teamRole grants paths and lets its holder revoke SVIDs and make and read
// locks.
func teamRole(paths ...string) resource.RoleSpec {
	spec := grant(paths...)
	spec.Allow.Rules = []resource.Rule{
		{Resources: []string{resource.ResourceSVID}, Verbs: []string{"delete"}},
		{Resources: []string{resource.KindLock}, Verbs: []string{"create", "read", "list"}},
	}
	return spec
}

// Revoking SVIDs and locking a SPIFFE ID take a SPIFFE grant that covers
// it: a team's role reaches its own workloads only, and the refusal is
// audited naming the path no grant covers.
func TestRevokeAndLockStayWithinSPIFFEGrants(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	web := loggedInUser(t, srv, "web", teamRole("/svc/web/**"))
	other := loggedInUser(t, srv, "other", teamRole("/team/b/**"))
	svid, err := web.SignX509SVID(ctx, &authv1.SignX509SVIDRequest{SpiffeId: "/svc/web/api", Csr: mustCSR(t)})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(svid.CertChain[0])
	if err != nil {
		t.Fatal(err)
	}
	serial := cert.SerialNumber.Text(16)
	id := "spiffe://" + srv.TrustDomain + "/svc/web/api"
	lock := lockDoc(t, "web-out", resource.LockTarget{SPIFFEID: "/svc/web/api"}, "key leaked")

	before := len(auditTypes(t, srv, "access.denied"))
	for what, call := range map[string]func() error{
		"revoking by SPIFFE ID": func() error {
			_, err := other.RevokeX509SVID(ctx, &authv1.RevokeX509SVIDRequest{SpiffeId: id, Reason: "test"})
			return err
		},
		"revoking by serial": func() error {
			_, err := other.RevokeX509SVID(ctx, &authv1.RevokeX509SVIDRequest{Serial: serial, Reason: "test"})
			return err
		},
		"locking the SPIFFE ID": func() error {
			_, err := other.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{lock}})
			return err
		},
	} {
		err := call()
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "/svc/web") ||
			!strings.Contains(status.Convert(err).Message(), "none of your grants covers") {
			t.Fatalf("%s outside the caller's grants: %v, want a refusal naming the path no grant covers", what, err)
		}
	}
	if n := len(auditTypes(t, srv, "access.denied")) - before; n != 3 {
		t.Fatalf("%d refusals audited, want 3", n)
	}

	// Within its grants, the team does both.
	if _, err := web.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{lock}}); err != nil {
		t.Fatalf("locking within the caller's grants: %v", err)
	}
	if _, err := web.RevokeX509SVID(ctx, &authv1.RevokeX509SVIDRequest{Serial: serial, Reason: "test"}); err != nil {
		t.Fatalf("revoking within the caller's grants: %v", err)
	}
}

// A lock's creator is who made it, whatever the request says.
func TestLockCreatorCannotBeForged(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	web := loggedInUser(t, srv, "web", teamRole("/svc/web/**"))
	b, err := json.Marshal(&resource.Lock{
		Header: resource.Header{Kind: resource.KindLock, Version: resource.V1, Metadata: resource.Metadata{Name: "forged"}},
		Spec:   resource.LockSpec{Target: resource.LockTarget{SPIFFEID: "/svc/web/api"}, Reason: "why", CreatedBy: "alice"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := web.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{b}}); err != nil {
		t.Fatal(err)
	}
	got, err := web.GetResource(ctx, &authv1.GetResourceRequest{Kind: resource.KindLock, Name: "forged"})
	if err != nil {
		t.Fatal(err)
	}
	var l resource.Lock
	if err := json.Unmarshal(got.Resource, &l); err != nil {
		t.Fatal(err)
	}
	if l.Spec.CreatedBy != "web" {
		t.Fatalf("the lock's created_by is %q, want web, who made it", l.Spec.CreatedBy)
	}
}
