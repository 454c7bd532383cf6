package auth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	corelogin "github.com/wid-project/wid/internal/core/login"
	"github.com/wid-project/wid/internal/core/resource"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// offsetClock is the real time moved forward by a settable offset: the
// auth service's own TLS certificate stays valid for real clients while
// lockouts and invites see the future.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *offsetClock) advance(d time.Duration) { c.off.Add(int64(d)) }

const alicePassword = "correct horse battery"

// addUser creates role dev (max_session_ttl 4h) and user alice via the admin
// socket and returns the invite.
func addUser(t *testing.T, srv *authtest.Server, inviteTTL time.Duration) string {
	t.Helper()
	ctx := context.Background()
	admin := srv.AdminClient(t)
	spec := grant("/team/alice/**")
	spec.Options.MaxSessionTTL = resource.Duration(4 * time.Hour)
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{roleDoc(t, "dev", spec)}}); err != nil {
		t.Fatalf("creating role: %v", err)
	}
	resp, err := admin.CreateUser(ctx, &authv1.CreateUserRequest{Name: "alice", Roles: []string{"dev"}, InviteTtlSeconds: int64(inviteTTL / time.Second)})
	if err != nil {
		t.Fatalf("creating user: %v", err)
	}
	if len(resp.Invite) < 32 || strings.Contains(string(resp.User), resp.Invite) {
		t.Fatalf("invite %q is short or leaks into the user document %s", resp.Invite, resp.User)
	}
	return resp.Invite
}

func login(t *testing.T, srv *authtest.Server, req *authv1.LoginRequest) (*client.Identity, error) {
	t.Helper()
	c, err := client.Dial(client.Config{Auth: srv.Addr, CAPin: srv.CAPin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key, _ := client.NewKey()
	req.Csr, _ = client.NewCSR(key)
	resp, err := c.Login(context.Background(), req)
	if err != nil {
		return nil, err
	}
	return client.NewIdentity(key, resp.CertChain, resp.HostCa)
}

// warmTLS makes the auth service issue its TLS certificate now, before a
// test moves its clock forward.
func warmTLS(t *testing.T, srv *authtest.Server) {
	t.Helper()
	c, err := client.Dial(client.Config{Auth: srv.Addr, CAPin: srv.CAPin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Ping(context.Background(), &authv1.PingRequest{}); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

func wantDenied(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Fatalf("got %v, want %s containing %q", err, code, msg)
	}
}

func TestLoginInviteThenPassword(t *testing.T) {
	srv := authtest.Start(t)
	invite := addUser(t, srv, 0)

	// The invite refuses weak passwords without being used up.
	_, err := login(t, srv, &authv1.LoginRequest{User: "alice", Invite: invite, Password: "short"})
	wantDenied(t, err, codes.InvalidArgument, "at least 12 characters")
	_, err = login(t, srv, &authv1.LoginRequest{User: "alice", Invite: invite, Password: "my name is Alice!!"})
	wantDenied(t, err, codes.InvalidArgument, "contains the user name")

	id, err := login(t, srv, &authv1.LoginRequest{User: "alice", Invite: invite, Password: alicePassword, TtlSeconds: int64(6 * time.Hour / time.Second)})
	if err != nil {
		t.Fatalf("login with invite: %v", err)
	}
	// Capped by dev's max_session_ttl (4h), not the 6h asked for.
	if life := time.Until(id.Expires()); life > 4*time.Hour+time.Minute || life < 4*time.Hour-2*time.Minute {
		t.Fatalf("certificate lives %s, want 4h (the role's max_session_ttl)", life)
	}

	// The certificate authenticates as alice with her roles.
	c, err := client.Dial(client.Config{Auth: srv.Addr, Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ping, err := c.Ping(context.Background(), &authv1.PingRequest{})
	if err != nil {
		t.Fatalf("ping as alice: %v", err)
	}
	if ping.IdentityKind != auth.KindUser || ping.IdentityName != "alice" || strings.Join(ping.Roles, ",") != "dev" {
		t.Fatalf("ping says %s %s %v, want user alice [dev]", ping.IdentityKind, ping.IdentityName, ping.Roles)
	}

	// The invite works once.
	_, err = login(t, srv, &authv1.LoginRequest{User: "alice", Invite: invite, Password: alicePassword})
	wantDenied(t, err, codes.PermissionDenied, "invite was already used")

	// The password works from now on, with the default TTL under the cap.
	if _, err := login(t, srv, &authv1.LoginRequest{User: "alice", Password: alicePassword}); err != nil {
		t.Fatalf("login with password: %v", err)
	}

	// A wrong password and an unknown user get the same answer.
	_, errWrong := login(t, srv, &authv1.LoginRequest{User: "alice", Password: "not the password at all"})
	_, errUnknown := login(t, srv, &authv1.LoginRequest{User: "mallory", Password: "not the password at all"})
	wantDenied(t, errWrong, codes.Unauthenticated, "login failed")
	if errWrong.Error() != errUnknown.Error() {
		t.Fatalf("wrong password says %q but unknown user says %q", errWrong, errUnknown)
	}

	// Every attempt is audited, the reason only in the audit log.
	denied := auditTypes(t, srv, "user.login.denied")
	reasons := map[string]bool{}
	for _, ev := range denied {
		reasons[strings.SplitN(ev.Reason, " (", 2)[0]] = true
	}
	for _, want := range []string{"invite already used", "wrong password", "unknown user"} {
		if !reasons[want] {
			t.Errorf("no login denial audited with reason %q; got %v", want, reasons)
		}
	}
	if ok := auditTypes(t, srv, "user.login"); len(ok) != 2 || ok[0].Actor != "alice" || ok[0].Serial == "" {
		t.Errorf("successful logins audited: %v, want 2 by alice with serials", ok)
	}
}

func TestLoginExpiredInvite(t *testing.T) {
	clock := &offsetClock{}
	srv := authtest.Start(t, authtest.WithClock(clock.now))
	invite := addUser(t, srv, 10*time.Minute)
	warmTLS(t, srv)
	clock.advance(11 * time.Minute)
	_, err := login(t, srv, &authv1.LoginRequest{User: "alice", Invite: invite, Password: alicePassword})
	wantDenied(t, err, codes.PermissionDenied, "invite expired")
	// A wrong invite is just a failed login.
	_, err = login(t, srv, &authv1.LoginRequest{User: "alice", Invite: strings.Repeat("0", 64), Password: alicePassword})
	wantDenied(t, err, codes.Unauthenticated, "login failed")
}

func TestLoginLockout(t *testing.T) {
	clock := &offsetClock{}
	srv := authtest.Start(t, authtest.WithClock(clock.now))
	invite := addUser(t, srv, 0)
	if _, err := login(t, srv, &authv1.LoginRequest{User: "alice", Invite: invite, Password: alicePassword}); err != nil {
		t.Fatal(err)
	}
	for i := range corelogin.MaxLoginFailures {
		_, err := login(t, srv, &authv1.LoginRequest{User: "alice", Password: "wrong password " + string(rune('a'+i))})
		wantDenied(t, err, codes.Unauthenticated, "login failed")
	}
	// Locked: even the right password is refused.
	_, err := login(t, srv, &authv1.LoginRequest{User: "alice", Password: alicePassword})
	wantDenied(t, err, codes.PermissionDenied, "too many failed attempts")

	// An unknown name locks the same way, so a lockout reveals nothing.
	for range corelogin.MaxLoginFailures {
		_, err := login(t, srv, &authv1.LoginRequest{User: "mallory", Password: "guess guess guess"})
		wantDenied(t, err, codes.Unauthenticated, "login failed")
	}
	_, err = login(t, srv, &authv1.LoginRequest{User: "mallory", Password: "guess guess guess"})
	wantDenied(t, err, codes.PermissionDenied, "too many failed attempts")

	clock.advance(corelogin.LockoutWindow + time.Second)
	if _, err := login(t, srv, &authv1.LoginRequest{User: "alice", Password: alicePassword}); err != nil {
		t.Fatalf("login after the lockout window: %v", err)
	}
	locked := 0
	for _, ev := range auditTypes(t, srv, "user.login.denied") {
		if ev.Actor == "alice" && strings.Contains(ev.Reason, "locked for") {
			locked++
		}
	}
	if locked < 2 {
		t.Errorf("audit shows %d lock events for alice, want the locking failure and the refused attempt", locked)
	}
}

func TestLoginLockoutSurvivesRestart(t *testing.T) {
	// Unix socket paths are short: no t.TempDir().
	dir, err := os.MkdirTemp("", "wid-auth-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Each subtest's server stops when the subtest ends.
	t.Run("lock", func(t *testing.T) {
		srv := authtest.Start(t, authtest.WithDataDir(dir))
		invite := addUser(t, srv, 0)
		if _, err := login(t, srv, &authv1.LoginRequest{User: "alice", Invite: invite, Password: alicePassword}); err != nil {
			t.Fatal(err)
		}
		for range corelogin.MaxLoginFailures {
			login(t, srv, &authv1.LoginRequest{User: "alice", Password: "wrong wrong wrong"})
		}
	})
	t.Run("after restart", func(t *testing.T) {
		srv := authtest.Start(t, authtest.WithDataDir(dir))
		_, err := login(t, srv, &authv1.LoginRequest{User: "alice", Password: alicePassword})
		wantDenied(t, err, codes.PermissionDenied, "too many failed attempts")
	})
}

func TestRemovedUserLosesPassword(t *testing.T) {
	srv := authtest.Start(t)
	invite := addUser(t, srv, 0)
	if _, err := login(t, srv, &authv1.LoginRequest{User: "alice", Invite: invite, Password: alicePassword}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	admin := srv.AdminClient(t)
	if _, err := admin.DeleteResource(ctx, &authv1.DeleteResourceRequest{Kind: "user", Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	doc := []byte(`{"kind":"user","version":"v1","metadata":{"name":"alice"},"spec":{"roles":["dev"]}}`)
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{doc}}); err != nil {
		t.Fatal(err)
	}
	_, err := login(t, srv, &authv1.LoginRequest{User: "alice", Password: alicePassword})
	wantDenied(t, err, codes.Unauthenticated, "login failed")
}

func TestLoginTOTP(t *testing.T) {
	clock := &offsetClock{}
	srv := authtest.Start(t, authtest.WithClock(clock.now))
	ctx := context.Background()
	admin := srv.AdminClient(t)
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{roleDoc(t, "dev", grant("/team/bob/**"))}}); err != nil {
		t.Fatal(err)
	}
	resp, err := admin.CreateUser(ctx, &authv1.CreateUserRequest{Name: "bob", Roles: []string{"dev"}, Totp: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(client.Config{Auth: srv.Addr, CAPin: srv.CAPin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	loginAt := func(code string) (*authv1.LoginResponse, error) {
		key, _ := client.NewKey()
		csr, _ := client.NewCSR(key)
		return c.Login(ctx, &authv1.LoginRequest{User: "bob", Password: alicePassword, TotpCode: code, Csr: csr})
	}
	key, _ := client.NewKey()
	csr, _ := client.NewCSR(key)
	first, err := c.Login(ctx, &authv1.LoginRequest{User: "bob", Invite: resp.Invite, Password: alicePassword, Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	otpKey, err := otp.NewKeyFromURL(first.TotpUri)
	if err != nil || otpKey.Type() != "totp" || otpKey.AccountName() != "bob" {
		t.Fatalf("TOTP URI %q: %v", first.TotpUri, err)
	}

	// Without a code, or with a wrong one, the answer is the generic one.
	_, err = loginAt("")
	wantDenied(t, err, codes.Unauthenticated, "login failed")
	_, err = loginAt("000000")
	wantDenied(t, err, codes.Unauthenticated, "login failed")

	code, err := totp.GenerateCode(otpKey.Secret(), clock.now())
	if err != nil {
		t.Fatal(err)
	}
	second, err := loginAt(code)
	if err != nil {
		t.Fatalf("login with a fresh TOTP code: %v", err)
	}
	if second.TotpUri != "" {
		t.Error("a password login returned the TOTP secret again")
	}
	// A code is good once.
	_, err = loginAt(code)
	wantDenied(t, err, codes.Unauthenticated, "login failed")
	// A stale code fails.
	stale, _ := totp.GenerateCode(otpKey.Secret(), clock.now().Add(-5*time.Minute))
	_, err = loginAt(stale)
	wantDenied(t, err, codes.Unauthenticated, "login failed")

	// The secret is sealed at rest: the stored credential does not hold it.
	data, err := srv.CredentialDataForTest(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), otpKey.Secret()) || !strings.Contains(string(data), `"totp_sealed"`) || strings.Contains(string(data), `"totp_secret"`) {
		t.Errorf("stored credential holds the TOTP secret in the clear or not sealed: %s", data)
	}
	// A credential an earlier version wrote with the secret in the clear
	// still logs in, and the start-up sealing seals it.
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	delete(doc, "totp_sealed")
	doc["totp_secret"] = otpKey.Secret()
	legacy, _ := json.Marshal(doc)
	if err := srv.PutCredentialDataForTest(ctx, "bob", legacy); err != nil {
		t.Fatal(err)
	}
	clock.advance(time.Minute)
	code, _ = totp.GenerateCode(otpKey.Secret(), clock.now())
	if _, err := loginAt(code); err != nil {
		t.Fatalf("login with a secret stored in the clear: %v", err)
	}
	if data, _ := srv.CredentialDataForTest(ctx, "bob"); strings.Contains(string(data), otpKey.Secret()) {
		t.Errorf("the next write left the TOTP secret in the clear: %s", data)
	}
	if err := srv.PutCredentialDataForTest(ctx, "bob", legacy); err != nil {
		t.Fatal(err)
	}
	if err := srv.SealTOTPSecretsForTest(ctx); err != nil {
		t.Fatal(err)
	}
	if data, _ := srv.CredentialDataForTest(ctx, "bob"); strings.Contains(string(data), otpKey.Secret()) || !strings.Contains(string(data), `"totp_sealed"`) {
		t.Errorf("start-up sealing left the TOTP secret in the clear: %s", data)
	}
	clock.advance(time.Minute)
	code, _ = totp.GenerateCode(otpKey.Secret(), clock.now())
	if _, err := loginAt(code); err != nil {
		t.Fatalf("login after sealing: %v", err)
	}

	reasons := map[string]bool{}
	for _, ev := range auditTypes(t, srv, "user.login.denied") {
		reasons[strings.SplitN(ev.Reason, " (", 2)[0]] = true
	}
	for _, want := range []string{"no TOTP code given", "wrong TOTP code", "TOTP code already used"} {
		if !reasons[want] {
			t.Errorf("no denial audited as %q: %v", want, reasons)
		}
	}
}

func TestResetUserUnlocksWithANewInvite(t *testing.T) {
	srv := authtest.Start(t)
	invite := addUser(t, srv, 0)
	if _, err := login(t, srv, &authv1.LoginRequest{User: "alice", Invite: invite, Password: alicePassword}); err != nil {
		t.Fatal(err)
	}
	for range corelogin.MaxLoginFailures {
		login(t, srv, &authv1.LoginRequest{User: "alice", Password: "wrong wrong wrong"})
	}
	_, err := login(t, srv, &authv1.LoginRequest{User: "alice", Password: alicePassword})
	wantDenied(t, err, codes.PermissionDenied, "login refused: too many failed attempts; try again after ")
	wantNext(t, err, authv1.NextResetUser, "alice")

	ctx := context.Background()
	if _, err := srv.AdminClient(t).ResetUser(ctx, &authv1.ResetUserRequest{Name: "nobody"}); status.Code(err) != codes.NotFound {
		t.Fatalf("reset of an unknown user: %v", err)
	}
	reset, err := srv.AdminClient(t).ResetUser(ctx, &authv1.ResetUserRequest{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	// The old password is gone with the lock; the new invite sets a new one.
	_, err = login(t, srv, &authv1.LoginRequest{User: "alice", Password: alicePassword})
	wantDenied(t, err, codes.Unauthenticated, "login failed")
	_, err = login(t, srv, &authv1.LoginRequest{User: "alice", Invite: invite, Password: alicePassword})
	wantDenied(t, err, codes.Unauthenticated, "login failed")
	if _, err := login(t, srv, &authv1.LoginRequest{User: "alice", Invite: reset.Invite, Password: "another good password"}); err != nil {
		t.Fatalf("login with the new invite: %v", err)
	}
	if _, err := login(t, srv, &authv1.LoginRequest{User: "alice", Password: "another good password"}); err != nil {
		t.Fatalf("login with the new password: %v", err)
	}

	// A user may not reset anyone, not even itself.
	id, _ := login(t, srv, &authv1.LoginRequest{User: "alice", Password: "another good password"})
	c, err := client.Dial(client.Config{Auth: srv.Addr, Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ResetUser(ctx, &authv1.ResetUserRequest{Name: "alice"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("alice resetting herself: %v", err)
	}
}

// A user's document says when it is locked, for everyone or from some
// addresses, and nothing more; a reset or the end of the window clears it,
// and a status sent back with the document is never stored.
func TestUserStatusShowsLock(t *testing.T) {
	clock := &offsetClock{}
	srv := authtest.Start(t, authtest.WithClock(clock.now))
	addUser(t, srv, 0)
	ctx := context.Background()
	admin := srv.AdminClient(t)
	if _, err := admin.CreateUser(ctx, &authv1.CreateUserRequest{Name: "bob", Roles: []string{"dev"}}); err != nil {
		t.Fatal(err)
	}
	type doc struct {
		Metadata struct{ Name string }
		Status   *struct {
			LockedUntil   time.Time `json:"locked_until"`
			LockedSources int       `json:"locked_sources"`
		}
	}
	get := func(name string) (doc, []byte) {
		t.Helper()
		resp, err := admin.GetResource(ctx, &authv1.GetResourceRequest{Kind: "user", Name: name})
		if err != nil {
			t.Fatal(err)
		}
		var d doc
		if err := json.Unmarshal(resp.Resource, &d); err != nil {
			t.Fatal(err)
		}
		return d, resp.Resource
	}

	// One address locks alice for itself only.
	for range corelogin.MaxLoginFailures {
		srv.FailLoginForTest(ctx, "alice", "192.0.2.1")
	}
	if d, raw := get("alice"); d.Status == nil || d.Status.LockedSources != 1 || !d.Status.LockedUntil.IsZero() {
		t.Fatalf("alice locked from one address: %s", raw)
	}
	// Failures from many addresses lock alice for everyone.
	for i := 0; i < corelogin.MaxUserLoginFailures-corelogin.MaxLoginFailures; i++ {
		srv.FailLoginForTest(ctx, "alice", fmt.Sprintf("198.51.100.%d", i/corelogin.MaxLoginFailures))
	}
	before := clock.now()
	d, raw := get("alice")
	if d.Status == nil || d.Status.LockedUntil.Before(before.Add(corelogin.LockoutWindow-time.Minute)) || d.Status.LockedUntil.After(before.Add(corelogin.LockoutWindow)) {
		t.Fatalf("alice locked for everyone: %s", raw)
	}
	for _, secret := range []string{"argon2", "invite", "totp", "192.0.2.1", "198.51.100", "failures"} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("alice's document gives away %q: %s", secret, raw)
		}
	}
	if d, raw := get("bob"); d.Status != nil || strings.Contains(string(raw), "status") {
		t.Errorf("bob is not locked, yet his document says %s", raw)
	}
	list, err := admin.ListResources(ctx, &authv1.ListResourcesRequest{Kind: "user"})
	if err != nil {
		t.Fatal(err)
	}
	locked := map[string]bool{}
	for _, b := range list.Resources {
		var d doc
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		locked[d.Metadata.Name] = d.Status != nil && !d.Status.LockedUntil.IsZero()
	}
	if !locked["alice"] || locked["bob"] || len(locked) != 2 {
		t.Errorf("list says locked = %v, want alice only", locked)
	}

	// The document read back with its status, and the status is not stored:
	// once the reset clears the lock, nothing says locked.
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{raw}, Force: true}); err != nil {
		t.Fatalf("creating alice from her document with a status: %v", err)
	}
	if stored, err := srv.StoredDataForTest(ctx, "user", "alice"); err != nil || strings.Contains(string(stored), "status") {
		t.Errorf("stored alice = %s, %v; want no status", stored, err)
	}
	if _, err := admin.ResetUser(ctx, &authv1.ResetUserRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	if d, raw := get("alice"); d.Status != nil {
		t.Errorf("after the reset alice's document says %s", raw)
	}

	// The end of the window lifts a lock as well.
	for range corelogin.MaxLoginFailures {
		srv.FailLoginForTest(ctx, "bob", "192.0.2.1")
	}
	if d, raw := get("bob"); d.Status == nil {
		t.Fatalf("bob locked from one address: %s", raw)
	}
	clock.advance(corelogin.LockoutWindow + time.Second)
	if d, raw := get("bob"); d.Status != nil {
		t.Errorf("after the window bob's document says %s", raw)
	}
}
