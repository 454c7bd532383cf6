package tui

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/charmbracelet/x/exp/teatest"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestLiveAuthService runs the dashboard against a real in-process auth
// service: an SVID issued while it runs shows on the SVIDs tab within a
// second, and a denial shows marked with its reason.
func TestLiveAuthService(t *testing.T) {
	srv := authtest.Start(t)
	admin := srv.AdminClient(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	feed := NewFeed(admin)
	go feed.Run(ctx)

	m := New(Options{Target: srv.AdminSocket, Messages: feed.Messages(), Explain: feed.Explain, Renderer: asciiRenderer(), NoTick: true})
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(120, 40))
	fast := []teatest.WaitForOption{teatest.WithDuration(time.Second), teatest.WithCheckInterval(10 * time.Millisecond)}
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
		return bytes.Contains(b, []byte("connected")) && bytes.Contains(b, []byte("spiffe://example.org"))
	}, teatest.WithDuration(5*time.Second))

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.SignX509SVID(ctx, &authv1.SignX509SVIDRequest{SpiffeId: "/svc/tui-live", PublicKey: pub, TtlSeconds: 600}); err != nil {
		t.Fatalf("issuing an SVID: %v", err)
	}
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte("/svc/tui-live")) }, fast...)
	// enter opens it: the detail pane decodes the certificate the audit
	// event recorded, the one the auth service just issued.
	tm.Send(keyMsg("enter"))
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte("Certificate")) }, fast...)
	tm.Send(keyMsg("esc"))

	_, err = admin.SignX509SVID(ctx, &authv1.SignX509SVIDRequest{SpiffeId: "spiffe://elsewhere.org/svc/tui-denied", PublicKey: pub, TtlSeconds: 600})
	if err == nil {
		t.Fatal("an SVID in another trust domain was issued")
	}
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte("DENIED")) }, fast...)

	// The Roles tab lists the built-in roles, and explains through the
	// real auth service.
	tm.Send(keyMsg("4"))
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte("editor")) }, fast...)
	for _, k := range []string{"e", "/", "s", "v", "c", "/", "x", "enter"} {
		tm.Send(keyMsg(k))
	}
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
		return bytes.Contains(b, []byte("ALLOWED spiffe://example.org/svc/x")) || bytes.Contains(b, []byte("failed check"))
	}, fast...)
	// The same form asks about a workload: the real Explain RPC answers
	// for each workload identity.
	wi := `{"kind":"workload_identity","version":"v1","metadata":{"name":"tui-web"},"spec":{"spiffe":{"id":"/svc/web/{{ workload.unix.uid }}"},"rules":{"allow":[{"conditions":[{"attribute":"workload.unix.uid","eq":"1000"}]}]}}}`
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{[]byte(wi)}}); err != nil {
		t.Fatalf("creating a workload identity: %v", err)
	}
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte("tui-web")) }, fast...)
	for _, k := range []string{"esc", "e", "tab", "tab", "tab"} {
		tm.Send(keyMsg(k))
	}
	for _, r := range "workload.unix.uid=1000" {
		tm.Send(keyMsg(string(r)))
	}
	tm.Send(keyMsg("enter"))
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte("identities issued")) }, fast...)

	// The Bundles tab shows each CA, and a rotation step as it happens.
	tm.Send(keyMsg("esc"))
	tm.Send(keyMsg("3"))
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return regexp.MustCompile(`spiffe +standby`).Match(b) }, fast...)
	if _, err := admin.RotateCA(ctx, &authv1.RotateCARequest{Type: "spiffe", Phase: "init"}); err != nil {
		t.Fatalf("starting a rotation: %v", err)
	}
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
		return bytes.Contains(b, []byte("init (manual) -> update_clients")) && bytes.Contains(b, []byte("additional"))
	}, fast...)

	if err := tm.Quit(); err != nil {
		t.Fatal(err)
	}
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*Model)
	var issued, denials int
	for _, e := range fm.svids.events {
		switch {
		case e.Type == "svid.x509.issued" && e.SpiffeId == "spiffe://example.org/svc/tui-live":
			issued++
			fm.svids.width = 120
			detail := strings.Join(fm.svids.detailLines(e), "\n")
			for _, want := range []string{`(?m)^ +uri sans +spiffe://example\.org/svc/tui-live$`, `(?m)^ +serial +` + e.Serial + `$`, `ECDSA P-256`, `(?m)^-----BEGIN CERTIFICATE-----$`} {
				if !regexp.MustCompile(want).MatchString(detail) {
					t.Errorf("the detail pane of the issued SVID lacks %s:\n%s", want, detail)
				}
			}
		case e.Type == "svid.denied" && e.Reason != "":
			denials++
		}
	}
	if r := fm.roles.result; r == nil || r.Err != nil || r.Request.PrincipalName != "editor" || r.Request.WorkloadAttributes["workload.unix.uid"] != "1000" {
		t.Errorf("explain result %+v, want the auth service's answer about role editor and a workload of uid 1000", r)
	} else if ws := r.Response.Workloads; len(ws) != 1 || ws[0].Identity != "tui-web" || ws[0].Allowed != (ws[0].Check == "") {
		t.Errorf("the workload's answer %v, want one for tui-web, refused with a check or issued without", ws)
	}
	if issued != 1 || denials != 1 {
		t.Errorf("the SVIDs tab holds %d issuances of /svc/tui-live and %d denials with a reason, want 1 and 1", issued, denials)
	}
}

// flakyClient is an auth service whose audit stream breaks after a few
// events each time, and which sends some events again after a reconnect.
type flakyClient struct {
	authv1.AuthServiceClient // nil: only the methods below are called
	mu                       sync.Mutex
	events                   []*authv1.AuditEvent
	requests                 []*authv1.StreamAuditEventsRequest
}

func (c *flakyClient) Ping(context.Context, *authv1.PingRequest, ...grpc.CallOption) (*authv1.PingResponse, error) {
	return &authv1.PingResponse{TrustDomain: "example.org", IdentityKind: "admin"}, nil
}

func (c *flakyClient) GetBundle(context.Context, *authv1.GetBundleRequest, ...grpc.CallOption) (*authv1.GetBundleResponse, error) {
	return &authv1.GetBundleResponse{TrustDomain: "example.org"}, nil
}

func (c *flakyClient) ListCAs(context.Context, *authv1.ListCAsRequest, ...grpc.CallOption) (*authv1.ListCAsResponse, error) {
	return nil, status.Error(codes.PermissionDenied, "no role allows listing CAs")
}

func (c *flakyClient) ListResources(context.Context, *authv1.ListResourcesRequest, ...grpc.CallOption) (*authv1.ListResourcesResponse, error) {
	return &authv1.ListResourcesResponse{}, nil
}

func (c *flakyClient) StreamAuditEvents(_ context.Context, req *authv1.StreamAuditEventsRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[authv1.AuditEvent], error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests = append(c.requests, req)
	// Serve from after_seq, but repeat the last event already sent (a
	// server that overlaps), and break after three.
	var out []*authv1.AuditEvent
	for _, e := range c.events {
		if e.Seq >= req.Query.GetAfterSeq() {
			out = append(out, e)
		}
	}
	if len(out) > 3 {
		out = out[:3]
	}
	return &brokenStream{events: out}, nil
}

type brokenStream struct {
	grpc.ClientStream
	events []*authv1.AuditEvent
}

func (s *brokenStream) Recv() (*authv1.AuditEvent, error) {
	if len(s.events) == 0 {
		return nil, status.Error(codes.Unavailable, "connection reset")
	}
	e := s.events[0]
	s.events = s.events[1:]
	return e, nil
}

// TestFeedResumes: when the stream breaks the feed says "reconnecting",
// asks for the events after the last it saw, and delivers every event once,
// in order.
func TestFeedResumes(t *testing.T) {
	c := &flakyClient{}
	for i := int64(1); i <= 10; i++ {
		c.events = append(c.events, &authv1.AuditEvent{Seq: i, Type: "svid.x509.issued", SpiffeId: "spiffe://example.org/svc/x"})
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	feed := NewFeed(c)
	feed.MinBackoff, feed.MaxBackoff = time.Millisecond, time.Millisecond
	done := make(chan error, 1)
	go func() { done <- feed.Run(ctx) }()

	var seqs []int64
	reconnects := 0
	for len(seqs) < 10 {
		select {
		case msg := <-feed.Messages():
			switch msg := msg.(type) {
			case EventMsg:
				seqs = append(seqs, msg.Event.Seq)
			case ReconnectingMsg:
				reconnects++
				if status.Code(msg.Err) != codes.Unavailable && !errors.Is(msg.Err, context.Canceled) {
					t.Errorf("reconnecting after %v, want the stream's error", msg.Err)
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("got events %v only", seqs)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("feed stopped with %v", err)
	}
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("events came as %v, want 1..10 once each", seqs)
		}
	}
	if reconnects < 3 {
		t.Errorf("%d reconnects, want at least 3 (the stream breaks every three events)", reconnects)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if first := c.requests[0]; first.Backlog != Backlog || first.Query.GetAfterSeq() != 0 {
		t.Errorf("first request: backlog %d after %d, want %d after 0", first.Backlog, first.Query.GetAfterSeq(), Backlog)
	}
	for _, r := range c.requests[1:] {
		if r.Backlog != -1 || r.Query.GetAfterSeq() == 0 {
			t.Errorf("a reconnect asked for backlog %d after %d, want everything after the last seq seen", r.Backlog, r.Query.GetAfterSeq())
		}
	}
}

// bundleClient counts GetBundle calls and bumps the sequence each time.
type bundleClient struct {
	flakyClient
	calls int
}

func (c *bundleClient) GetBundle(context.Context, *authv1.GetBundleRequest, ...grpc.CallOption) (*authv1.GetBundleResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	return &authv1.GetBundleResponse{TrustDomain: "example.org", Sequence: int64(c.calls)}, nil
}

// TestFeedRefetchesBundle: there is no bundle stream yet, so a CA event in
// the audit log makes the feed read the bundle again, and the Bundles tab
// gets the new sequence; other events do not.
func TestFeedRefetchesBundle(t *testing.T) {
	c := &bundleClient{}
	c.events = []*authv1.AuditEvent{
		{Seq: 1, Type: "svid.x509.issued"},
		{Seq: 2, Type: "ca.rotation", Details: map[string]string{"phase": "init"}},
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	feed := NewFeed(c)
	go feed.Run(ctx)
	var seqs []int64
	for len(seqs) < 2 {
		select {
		case msg := <-feed.Messages():
			if b, ok := msg.(BundleMsg); ok {
				seqs = append(seqs, b.Bundle.Sequence)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("bundles %v only", seqs)
		}
	}
	if seqs[0] != 1 || seqs[1] != 2 {
		t.Errorf("bundle sequences %v, want 1 on connect then 2 after the CA event", seqs)
	}
}

// TestFeedFirstFailureKeepsBacklog: a stream that breaks before any event
// asks for the backlog again, not for the whole log after seq 0.
func TestFeedFirstFailureKeepsBacklog(t *testing.T) {
	c := &flakyClient{} // no events: every stream breaks at once
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	feed := NewFeed(c)
	feed.MinBackoff, feed.MaxBackoff = time.Millisecond, time.Millisecond
	go feed.Run(ctx)
	for n := 0; n < 3; {
		if _, ok := (<-feed.Messages()).(ReconnectingMsg); ok {
			n++
		}
	}
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.requests {
		if r.Backlog != Backlog {
			t.Fatalf("a retry before any event asked for backlog %d, want %d", r.Backlog, Backlog)
		}
	}
}

// runningAuth is an in-process auth service that a test can stop and start
// again on the same data dir and address, as a restart of widagent does.
type runningAuth struct {
	cancel context.CancelFunc
	done   chan error
	srv    *auth.Server
}

func startAuth(t *testing.T, dir, addr string) *runningAuth {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := auth.Open(ctx, auth.Config{DataDir: dir, TrustDomain: "example.org", ListenAddr: addr, Version: "test"})
	if err != nil {
		cancel()
		t.Fatalf("starting the auth service: %v", err)
	}
	r := &runningAuth{cancel: cancel, done: make(chan error, 1), srv: srv}
	go func() { r.done <- srv.Run(ctx) }()
	return r
}

func (r *runningAuth) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	if err := <-r.done; err != nil {
		t.Errorf("auth service stopped with: %v", err)
	}
	r.srv.Close()
	r.cancel = nil
}

// TestRestartedAuthService is done-when 5 with a real auth service: the
// dashboard follows it over the admin socket; the service is stopped (the
// header says reconnecting) and started again on the same data dir and
// address; the dashboard resumes after the last event it showed, so the
// SVID issued before shows once, the one issued after shows too, and no
// audit event reaches a tab twice or is skipped.
func TestRestartedAuthService(t *testing.T) {
	dir, err := os.MkdirTemp("", "wid-tui-") // a short path: unix sockets are limited to ~100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	first := startAuth(t, dir, "127.0.0.1:0")
	t.Cleanup(func() { first.stop(t) })
	info := first.srv.Info()

	admin, err := client.Dial(client.Config{AdminSocket: info.AdminSocket})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	feed := NewFeed(admin)
	feed.MinBackoff, feed.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	go feed.Run(ctx)

	m := New(Options{Target: info.AdminSocket, Messages: feed.Messages(), Renderer: asciiRenderer(), NoTick: true})
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(120, 40))
	wait := func(what string) {
		t.Helper()
		teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte(what)) },
			teatest.WithDuration(10*time.Second), teatest.WithCheckInterval(10*time.Millisecond))
	}
	pub := publicKey(t)
	issue := func(path string) {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		// WaitForReady: right after a restart the client may still be
		// reconnecting to the new admin socket.
		if _, err := admin.SignX509SVID(c, &authv1.SignX509SVIDRequest{SpiffeId: path, PublicKey: pub, TtlSeconds: 600}, grpc.WaitForReady(true)); err != nil {
			t.Fatalf("issuing %s: %v", path, err)
		}
	}
	wait("connected")
	issue("/svc/before-restart")
	wait("/svc/before-restart")

	first.stop(t)
	wait("reconnecting")
	second := startAuth(t, dir, info.Addr)
	t.Cleanup(func() { second.stop(t) })
	if got := second.srv.Info().Addr; got != info.Addr {
		t.Fatalf("restarted on %s, want the same address %s", got, info.Addr)
	}
	wait("connected")
	issue("/svc/after-restart")
	wait("/svc/after-restart")

	if err := tm.Quit(); err != nil {
		t.Fatal(err)
	}
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*Model)
	count := map[string]int{}
	var seqs []int64
	for _, e := range fm.svids.events {
		count[shortID(e.SpiffeId)]++
		seqs = append(seqs, e.Seq)
	}
	if count["/svc/before-restart"] != 1 || count["/svc/after-restart"] != 1 {
		t.Errorf("the SVIDs tab holds %v, want each SVID once", count)
	}
	// No duplicates or gaps: the tab holds exactly the log's SVID events.
	log, err := admin.ListAuditEvents(t.Context(), &authv1.ListAuditEventsRequest{Query: &authv1.AuditQuery{}})
	if err != nil {
		t.Fatal(err)
	}
	var want []int64
	for _, e := range log.Events {
		if svidEvent(e) {
			want = append(want, e.Seq)
		}
	}
	slices.Sort(want)
	if !slices.Equal(seqs, want) {
		t.Errorf("the SVIDs tab shows events %v, the audit log has %v", seqs, want)
	}
}

func publicKey(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
