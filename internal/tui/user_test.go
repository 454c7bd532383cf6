package tui

import (
	"context"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/golden"
	"github.com/charmbracelet/x/exp/teatest"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// loginUser makes a user holding one role that grants a SPIFFE path and no
// admin rules, logs it in, and returns its client.
func loginUser(t *testing.T, srv *authtest.Server) *client.Client {
	t.Helper()
	ctx := t.Context()
	admin := srv.AdminClient(t)
	role := `{"kind":"role","version":"v1","metadata":{"name":"dev"},"spec":{"allow":{"spiffe":[{"path":"/team/alice/**"}]}}}`
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{[]byte(role)}}); err != nil {
		t.Fatal(err)
	}
	u, err := admin.CreateUser(ctx, &authv1.CreateUserRequest{Name: "alice", Roles: []string{"dev"}})
	if err != nil {
		t.Fatal(err)
	}
	anon, err := client.Dial(client.Config{Auth: srv.Addr, CAPin: srv.CAPin})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	key, err := client.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := client.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := anon.Login(ctx, &authv1.LoginRequest{User: "alice", Invite: u.Invite, Password: "correct horse battery staple", Csr: csr})
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	id, err := client.NewIdentity(key, resp.CertChain, resp.HostCa)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(client.Config{Auth: srv.Addr, Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestUserFeed: a user whose roles do not allow reading the audit log is
// connected, not reconnecting: the feed says what is refused, once each
// (every refusal is an audit event, so asking again would fill the log),
// and keeps the bundle fresh by polling.
func TestUserFeed(t *testing.T) {
	srv := authtest.Start(t)
	c := loginUser(t, srv)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	feed := NewFeed(c)
	feed.PollInterval = 10 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- feed.Run(ctx) }()

	var connected, auditDenied bool
	deniedKinds := map[string]bool{}
	bundles := 0
	deadline := time.After(10 * time.Second)
	for bundles < 5 {
		select {
		case msg := <-feed.Messages():
			switch msg := msg.(type) {
			case ConnectedMsg:
				connected = msg.Ping.GetIdentityKind() == "user"
			case ReconnectingMsg:
				t.Fatalf("the feed reconnects: %v", msg.Err)
			case AuditDeniedMsg:
				if status.Code(msg.Err) != codes.PermissionDenied {
					t.Errorf("audit denied with %v", msg.Err)
				}
				auditDenied = true
			case ResourcesMsg:
				if msg.Err != nil {
					deniedKinds[msg.Kind] = true
				}
			case BundleMsg:
				bundles++
			}
		case <-deadline:
			t.Fatalf("after 10s: connected %v, audit denied %v, %d bundles", connected, auditDenied, bundles)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("feed stopped with %v", err)
	}
	if !connected || !auditDenied || !deniedKinds["role"] || !deniedKinds["workload_identity"] || !deniedKinds["lock"] {
		t.Fatalf("connected %v, audit denied %v, resources denied %v", connected, auditDenied, deniedKinds)
	}
	// Five refreshes later, each refusal is in the audit log once.
	events, err := srv.AdminClient(t).ListAuditEvents(t.Context(), &authv1.ListAuditEventsRequest{Query: &authv1.AuditQuery{Types: []string{"access.denied"}}})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range events.GetEvents() {
		count[e.GetResource()+" "+e.GetDetails()["verb"]]++
	}
	for what, n := range count {
		if n != 1 {
			t.Errorf("%s was refused %d times, want once: %v", what, n, count)
		}
	}
	if count["audit list"] != 1 {
		t.Errorf("refusals %v, want audit list among them", count)
	}
}

// userFeed is what the feed tells a user whose roles grant a SPIFFE path
// and no admin rules, in the auth service's words.
func userFeed(t *testing.T) []tea.Msg {
	msgs := fakeFeed(t)
	var bundle tea.Msg
	for _, m := range msgs {
		if b, ok := m.(BundleMsg); ok {
			bundle = b
		}
	}
	denied := func(verb, kind string) error {
		return status.Errorf(codes.PermissionDenied, `role "dev" allows no %q on %q: add a rule {resources: [%s], verbs: [%s]}`, verb, kind, kind, verb)
	}
	return []tea.Msg{
		ConnectedMsg{Ping: &authv1.PingResponse{TrustDomain: "example.org", IdentityKind: "user", IdentityName: "alice"}},
		bundle,
		CAsMsg{Err: denied("list", "cert_authority")},
		ResourcesMsg{Kind: "role", Err: denied("list", "role")},
		ResourcesMsg{Kind: "workload_identity", Err: denied("list", "workload_identity")},
		ResourcesMsg{Kind: "lock", Err: denied("list", "lock")},
		AuditDeniedMsg{Err: denied("list", "audit")},
	}
}

// TestUserScreens: as a user with limited rights the dashboard opens on a
// tab it can show, marks the others, and each of them says in one sentence
// which rule is missing; never "reconnecting", never a raw gRPC status.
func TestUserScreens(t *testing.T) {
	for _, c := range []struct {
		name string
		keys []string
	}{
		{"first", nil},
		{"svids", []string{"1"}},
		{"roles", []string{"4"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tm := teatest.NewTestModel(t, newTestModel(asciiRenderer()), teatest.WithInitialTermSize(80, 24))
			for _, msg := range userFeed(t) {
				tm.Send(msg)
			}
			for _, k := range c.keys {
				tm.Send(keyMsg(k))
			}
			if err := tm.Quit(); err != nil {
				t.Fatal(err)
			}
			out := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).View()
			checkSize(t, out, 80, 24)
			for _, bad := range []string{"reconnecting", "rpc error", "PermissionDenied"} {
				if strings.Contains(out, bad) {
					t.Errorf("screen shows %q:\n%s", bad, out)
				}
			}
			if !strings.Contains(out, "connected") || !strings.Contains(out, "you are user alice") {
				t.Errorf("header:\n%s", out)
			}
			golden.RequireEqual(t, []byte(out))
		})
	}
}
