package auth_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/exp/bundle/witbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/agentsync"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/testkit"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// quiet is how long a test waits to be sure nothing is pushed: short, since
// a push that should come comes within agentPushInterval.
const quiet = 400 * time.Millisecond

func TestWatchAgentPushesExactlyWhatTheBotMayIssue(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	create(t, srv,
		agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**"),
		wiDoc(t, "web", "prod", "/svc/web", nil, 0, uidIs("1000")),
		wiDoc(t, "db", "prod", "/svc/db", nil, 0, uidIs("1000")),
		wiDoc(t, "sandbox", "dev", "/svc/sandbox", nil, 0, uidIs("1000")),
	)
	bot := joinedBot(t, srv, "agent", "prod-agent")
	stream := watch(t, bot, "node-1")

	first := stream.next(t, time.Second)
	wantNames(t, first, "db", "web")
	if first.TrustDomain != "example.org" {
		t.Errorf("trust domain %q", first.TrustDomain)
	}
	b := first.Bundle
	if b == nil || len(b.X509Authorities) != 1 || b.Sequence != 2 {
		t.Fatalf("bundle %+v, want one X.509 authority and sequence 2", b)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	if jb, err := jwtbundle.Parse(td, b.JwtJwks); err != nil || len(jb.JWTAuthorities()) != 1 {
		t.Errorf("jwt_jwks does not parse as a JWT bundle with one key: %v", err)
	}
	if wb, err := witbundle.Parse(td, b.WitJwks); err != nil || len(wb.WITAuthorities()) != 1 {
		t.Errorf("wit_jwks does not parse as a WIT bundle with one key: %v", err)
	}
	if !strings.Contains(string(b.JwtJwks), `"use":"jwt-svid"`) || !strings.Contains(string(b.WitJwks), `"use":"wit-svid"`) {
		t.Errorf("JWKS uses: jwt %s, wit %s", b.JwtJwks, b.WitJwks)
	}

	// A new identity the bot selects is pushed.
	create(t, srv, wiDoc(t, "api", "prod", "/svc/api", nil, 0, uidIs("1000")))
	second := stream.next(t, time.Second)
	wantNames(t, second, "api", "db", "web")
	if second.Generation <= first.Generation {
		t.Errorf("generation went from %d to %d", first.Generation, second.Generation)
	}

	// One it does not select changes nothing it serves: no push.
	create(t, srv, wiDoc(t, "sandbox2", "dev", "/svc/sandbox2", nil, 0, uidIs("1000")))
	stream.none(t, quiet)

	// Deleting one is pushed.
	if _, err := srv.AdminClient(t).DeleteResource(ctx, &authv1.DeleteResourceRequest{Kind: "workload_identity", Name: "db"}); err != nil {
		t.Fatal(err)
	}
	third := stream.next(t, time.Second)
	wantNames(t, third, "api", "web")

	// A role change changes the selection.
	if _, err := srv.AdminClient(t).UpdateResource(ctx, &authv1.UpdateResourceRequest{Resource: agentRole(t, "prod-agent", []string{"prod", "dev"}, nil, 0, "/svc/**")}); err != nil {
		t.Fatalf("updating the role: %v", err)
	}
	fourth := stream.next(t, time.Second)
	wantNames(t, fourth, "api", "sandbox", "sandbox2", "web")

	// An idle stream sends nothing.
	stream.none(t, quiet)

	// A burst of changes is coalesced: at most one push per 50ms, the last
	// one with the final state.
	var (
		want  []string
		burst [][]byte
	)
	for i := range 15 {
		name := "burst-" + string(rune('a'+i))
		want = append(want, name)
		burst = append(burst, wiDoc(t, name, "prod", "/svc/"+name, nil, 0, uidIs("1000")))
	}
	start := time.Now()
	if err := srv.CreateEachForTest(ctx, burst...); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	var last *authv1.AgentState
	pushes := 0
	deadline := time.After(2 * time.Second)
	for last == nil || len(identityNames(t, last)) != 4+len(want) {
		select {
		case last = <-stream.states:
			pushes++
		case <-deadline:
			t.Fatalf("after 15 creates the last state lists %v", identityNames(t, last))
		}
	}
	stream.none(t, quiet)
	// One push may start the burst, each push interval of it adds at most
	// one, and one more may follow its end.
	if limit := int(elapsed/auth.AgentPushIntervalForTest) + 2; pushes > limit {
		t.Errorf("15 creates in %s made %d pushes, over %d: bursts are not coalesced", elapsed, pushes, limit)
	}
	t.Logf("15 creates in %s, %d pushes", elapsed, pushes)

	evs := auditTypes(t, srv, "agent.connect")
	if len(evs) != 1 || evs[0].Actor != "bot:agent" || evs[0].Host != "node-1" || evs[0].Outcome != "success" {
		t.Fatalf("agent.connect events = %v, want one for bot:agent on node-1", evs)
	}
}

func TestWatchAgentPushesBundleChanges(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	create(t, srv, agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**"))
	bot := joinedBot(t, srv, "agent", "prod-agent")
	stream := watch(t, bot, "node-1")
	first := stream.next(t, time.Second)

	// Told that something changed when nothing did, it pushes nothing.
	srv.StateChanged()
	stream.none(t, quiet)

	// A new spiffe CA key joins the bundle: pushed, with the new sequence.
	if err := srv.AddCAKeyForTest(ctx, ca.TypeSPIFFE); err != nil {
		t.Fatal(err)
	}
	st := stream.next(t, time.Second)
	if len(st.Bundle.X509Authorities) != 2 || st.Bundle.Sequence != first.Bundle.Sequence+1 || st.Generation <= first.Generation {
		t.Fatalf("after a spiffe CA key was added: %d authorities, sequence %d, generation %d", len(st.Bundle.X509Authorities), st.Bundle.Sequence, st.Generation)
	}
	// A new wit key is pushed too, although the SPIFFE bundle's sequence does not count it.
	if err := srv.AddCAKeyForTest(ctx, ca.TypeWIT); err != nil {
		t.Fatal(err)
	}
	st = stream.next(t, time.Second)
	wb, err := witbundle.Parse(spiffeid.RequireTrustDomainFromString("example.org"), st.Bundle.WitJwks)
	if err != nil || len(wb.WITAuthorities()) != 2 {
		t.Fatalf("after a wit CA key was added, wit_jwks is %s (%v)", st.Bundle.WitJwks, err)
	}
	stream.none(t, quiet)
}

func TestWatchAgentIsForBotsThatMayReadWorkloadIdentities(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	stream, err := srv.AdminClient(t).WatchAgent(ctx, &authv1.WatchAgentRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "only an agent's bot") {
		t.Fatalf("admin WatchAgent: %v, want PermissionDenied saying only bots may", err)
	}

	create(t, srv, roleDoc(t, "paths-only", grant("/svc/**")))
	bot := joinedBot(t, srv, "paths", "paths-only")
	stream, err = bot.WatchAgent(ctx, &authv1.WatchAgentRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "workload_identity") {
		t.Fatalf("WatchAgent by a bot that may not read workload identities: %v", err)
	}
}

func TestWatchAgentEndsWhenTheServerStops(t *testing.T) {
	dir, err := os.MkdirTemp("", "wid-auth-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := auth.Open(ctx, auth.Config{DataDir: dir, ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	id, err := srv.LocalAgentIdentity(ctx, "node-local")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(client.Config{Auth: srv.Info().Addr, Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stream := watch(t, c, "node-local")
	stream.next(t, time.Second)
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("Run did not return with an agent stream open")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("stopping took %s with an agent stream open", d)
	}
	select {
	case err := <-stream.errc:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("stream ended with %v, want Unavailable", err)
		}
	case <-time.After(time.Second):
		t.Error("the stream did not end")
	}
}

func TestLocalAgentIdentity(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	create(t, srv, wiDoc(t, "web", "prod", "/svc/web", nil, 0, uidIs("1000")))
	id, err := srv.LocalAgentIdentity(ctx, "node-local")
	if err != nil {
		t.Fatalf("LocalAgentIdentity: %v", err)
	}
	if len(id.HostCAs) == 0 || id.Leaf == nil || id.Key == nil {
		t.Fatalf("identity %+v lacks its host CAs, certificate or key", id)
	}
	if d := id.Leaf.NotAfter.Sub(id.Leaf.NotBefore); d < auth.BotCertTTL || d > auth.BotCertTTL+2*time.Minute {
		t.Errorf("certificate lives %s, want the bot certificate TTL %s", d, auth.BotCertTTL)
	}
	c, err := client.Dial(client.Config{Auth: srv.Addr, Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ping, err := c.Ping(ctx, &authv1.PingRequest{})
	if err != nil || ping.IdentityKind != "bot" || ping.IdentityName != auth.LocalAgentBot || len(ping.Roles) != 1 || ping.Roles[0] != rbac.RoleLocalAgent {
		t.Fatalf("ping with the local identity: %v %v", ping, err)
	}
	// The built-in role selects every workload identity.
	stream := watch(t, c, "node-local")
	wantNames(t, stream.next(t, time.Second), "web")

	// Renewal works as for a joined bot.
	key, _ := client.NewKey()
	csr, _ := client.NewCSR(key)
	renewed, err := c.RenewBotCert(ctx, &authv1.RenewBotCertRequest{Csr: csr})
	if err != nil {
		t.Fatalf("RenewBotCert with the local identity: %v", err)
	}
	rid, err := client.NewIdentity(key, renewed.CertChain, nil)
	if err != nil || rid.Leaf.Subject.CommonName != id.Leaf.Subject.CommonName {
		t.Fatalf("renewed certificate %v: %v", rid, err)
	}

	joins := auditTypes(t, srv, "bot.join")
	if len(joins) != 1 || joins[0].Actor != "bot:local-agent" || joins[0].Host != "node-local" || joins[0].Details["method"] != "local" {
		t.Fatalf("bot.join events = %v, want one with method local from node-local", joins)
	}

	// An admin removes the bot: the next start makes it again.
	if _, err := srv.AdminClient(t).DeleteResource(ctx, &authv1.DeleteResourceRequest{Kind: "bot", Name: auth.LocalAgentBot}); err != nil {
		t.Fatal(err)
	}
	id2, err := srv.LocalAgentIdentity(ctx, "node-local")
	if err != nil {
		t.Fatalf("LocalAgentIdentity after the bot was removed: %v", err)
	}
	c2, err := client.Dial(client.Config{Auth: srv.Addr, Identity: id2})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if ping, err := c2.Ping(ctx, &authv1.PingRequest{}); err != nil || ping.IdentityName != auth.LocalAgentBot {
		t.Fatalf("ping after the bot was made again: %v %v", ping, err)
	}
	created := 0
	for _, ev := range auditTypes(t, srv, "resource.created") {
		if ev.Resource == "bot/local-agent" {
			created++
			if !strings.HasPrefix(ev.Actor, "admin@") {
				t.Errorf("bot/local-agent created by %q, want the admin", ev.Actor)
			}
		}
	}
	if created != 2 {
		t.Errorf("bot/local-agent was created %d times in the audit log, want 2", created)
	}
}

func TestEnsureDevIdentity(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	created, err := srv.EnsureDevIdentity(ctx, 1234)
	if err != nil || !created {
		t.Fatalf("EnsureDevIdentity = %v, %v; want created", created, err)
	}
	if created, err := srv.EnsureDevIdentity(ctx, 99); err != nil || created {
		t.Fatalf("second EnsureDevIdentity = %v, %v; want nothing done", created, err)
	}
	admin := srv.AdminClient(t)
	// What the identity gives, through the same checks agents get.
	resp, err := admin.Explain(ctx, &authv1.ExplainRequest{PrincipalKind: "role", PrincipalName: rbac.RoleLocalAgent, WorkloadAttributes: map[string]string{"workload.unix.uid": "1234"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Workloads) != 1 || !resp.Workloads[0].Allowed || resp.Workloads[0].SpiffeId != "spiffe://example.org/uid/1234" {
		t.Fatalf("dev-uid for uid 1234: %v", resp.Workloads)
	}
	resp, _ = admin.Explain(ctx, &authv1.ExplainRequest{PrincipalKind: "role", PrincipalName: rbac.RoleLocalAgent, WorkloadAttributes: map[string]string{"workload.unix.uid": "99"}})
	if len(resp.Workloads) != 1 || resp.Workloads[0].Allowed || resp.Workloads[0].Check != "rules" {
		t.Fatalf("dev-uid for uid 99: %v", resp.Workloads)
	}
	got, err := admin.GetResource(ctx, &authv1.GetResourceRequest{Kind: "workload_identity", Name: auth.DevIdentity})
	if err != nil || !strings.Contains(string(got.Resource), `"hint":"dev-uid"`) || !strings.Contains(string(got.Resource), `/uid/{{ workload.unix.uid }}`) {
		t.Fatalf("dev-uid: %s %v", got.GetResource(), err)
	}
	evs := auditTypes(t, srv, "resource.created")
	if len(evs) != 1 || evs[0].Resource != "workload_identity/dev-uid" || !strings.HasPrefix(evs[0].Actor, "admin@") {
		t.Fatalf("resource.created events = %v, want one for workload_identity/dev-uid by the admin", evs)
	}
}

func TestInfoCreated(t *testing.T) {
	dir, err := os.MkdirTemp("", "wid-auth-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for i, want := range []bool{true, false} {
		srv, err := auth.Open(context.Background(), auth.Config{DataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if got := srv.Info().Created; got != want {
			t.Errorf("open %d: Info().Created = %v, want %v", i+1, got, want)
		}
		srv.Close()
	}
}

// TestStuckAgentIsDroppedAndCatchesUp: an agent that stops reading its
// stream holds at most gRPC's flow-control windows of the auth service's
// memory; after the send timeout its stream is ended and counted, and when
// it comes back with the revision it held it gets what it missed as one
// delta, not a snapshot.
func TestStuckAgentIsDroppedAndCatchesUp(t *testing.T) {
	srv := authtest.Start(t, func(c *auth.Config) { c.AgentSendTimeout = time.Second })
	ctx := context.Background()
	create(t, srv, agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**"), wiDoc(t, "web", "prod", "/svc/web", nil, 0, uidIs("1000")))
	admin := srv.AdminClient(t)
	bot, err := admin.CreateBot(ctx, &authv1.CreateBotRequest{Name: "agent", Roles: []string{"prod-agent"}})
	if err != nil {
		t.Fatal(err)
	}
	id, err := join(srv, bot.Token)
	if err != nil {
		t.Fatal(err)
	}
	// Fixed, small windows: the stream stalls after 64 KiB unread.
	c, err := client.Dial(client.Config{Auth: srv.Addr, Identity: id, DialOptions: []grpc.DialOption{
		grpc.WithInitialWindowSize(64 << 10), grpc.WithInitialConnWindowSize(64 << 10)}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stuck, err := c.WatchAgent(sctx, agentsync.Request("node-1", agentsync.Position{}))
	if err != nil {
		t.Fatal(err)
	}
	first, err := stuck.Recv()
	if err != nil {
		t.Fatal(err)
	}
	held := agentsync.Of(first)

	// Half a megabyte of identities the stuck agent does not read.
	var (
		docs  [][]byte
		names []string
	)
	sans := make([]string, 30)
	for i := range sans {
		sans[i] = fmt.Sprintf("name-%02d.a-rather-long-service-domain.example.internal", i)
	}
	for i := range 200 {
		name := fmt.Sprintf("big-%03d", i)
		names = append(names, name)
		docs = append(docs, wiDoc(t, name, "prod", "/svc/"+name, sans, 0, uidIs("1000")))
	}
	create(t, srv, docs...)
	dropped := func() float64 {
		var m dto.Metric
		if err := srv.Collectors()[0].(prometheus.Metric).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return dropped() == 1 },
		"the stuck agent's stream was not dropped: wid_auth_agent_streams_dropped_total is not 1")
	for {
		if _, err := stuck.Recv(); err != nil {
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "read nothing") {
				t.Fatalf("the stuck stream ended with %v, want ResourceExhausted saying it read nothing", err)
			}
			break
		}
	}

	// Back with the revision it held: one delta with what it missed.
	back := watchFrom(t, c, "node-1", held)
	var g agentsync.Gatherer
	var st *authv1.AgentState
	for st == nil {
		m := back.next(t, 5*time.Second)
		if st, err = g.Add(m); err != nil {
			t.Fatal(err)
		}
	}
	if !st.Delta || st.BaseRevision != held.Revision || len(st.WorkloadIdentities) != len(names) {
		t.Fatalf("back at revision %d the agent got delta=%v from %d with %d identities, want a delta with the %d it missed",
			held.Revision, st.Delta, st.BaseRevision, len(st.WorkloadIdentities), len(names))
	}
}

// nextMessage is s's next message but heartbeats (a slow run sends some).
func nextMessage(t *testing.T, s *stateStream) *authv1.AgentState {
	t.Helper()
	for {
		if m := s.next(t, 10*time.Second); !m.Heartbeat {
			return m
		}
	}
}

// gather reads s's messages until a whole state, and says in how many it came.
func gather(t *testing.T, s *stateStream) (*authv1.AgentState, int) {
	t.Helper()
	var g agentsync.Gatherer
	for n := 1; ; n++ {
		st, err := g.Add(nextMessage(t, s))
		if err != nil {
			t.Fatal(err)
		}
		if st != nil {
			return st, n
		}
	}
}

// The agents of one bot are sent one encoding of each state: the same
// generation in every message, where encoding per stream gave each its own.
// A change, and an agent that takes no revisions, get encodings of their own.
func TestAgentsOfABotShareOneEncodedState(t *testing.T) {
	srv := authtest.Start(t)
	sans := make([]string, 30)
	for i := range sans {
		sans[i] = fmt.Sprintf("name-%02d.a-rather-long-service-domain.example.internal", i)
	}
	// Over a megabyte of identities: a snapshot in several messages.
	docs := [][]byte{agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**")}
	for i := range 700 {
		name := fmt.Sprintf("big-%03d", i)
		docs = append(docs, wiDoc(t, name, "prod", "/svc/"+name, sans, 0, uidIs("1000")))
	}
	create(t, srv, docs...)
	bot := joinedBot(t, srv, "agent", "prod-agent")

	a := watchFrom(t, bot, "node-1", agentsync.Position{})
	b := watchFrom(t, bot, "node-2", agentsync.Position{})
	snapA, n := gather(t, a)
	snapB, _ := gather(t, b)
	if n < 2 {
		t.Fatalf("the snapshot came in %d message, want several", n)
	}
	if snapA.Generation != snapB.Generation || snapA.Revision != snapB.Revision || len(snapA.WorkloadIdentities) != 700 ||
		!slices.Equal(identityNames(t, snapA), identityNames(t, snapB)) {
		t.Fatalf("two agents of one bot got snapshots of generation %d and %d at revisions %d and %d with %d and %d identities, want one state of 700",
			snapA.Generation, snapB.Generation, snapA.Revision, snapB.Revision, len(snapA.WorkloadIdentities), len(snapB.WorkloadIdentities))
	}

	create(t, srv, wiDoc(t, "web", "prod", "/svc/web", nil, 0, uidIs("1000")))
	deltaA, deltaB := nextMessage(t, a), nextMessage(t, b)
	if !deltaA.Delta || deltaA.Generation != deltaB.Generation || deltaA.Generation <= snapA.Generation {
		t.Fatalf("after a change the agents got delta=%v generations %d and %d (snapshot %d), want one delta of a newer generation",
			deltaA.Delta, deltaA.Generation, deltaB.Generation, snapA.Generation)
	}
	wantNames(t, deltaA, "web")
	wantNames(t, deltaB, "web")

	// A third agent, after the change, gets the state at the new revision.
	snapC, _ := gather(t, watchFrom(t, bot, "node-3", agentsync.Position{}))
	if snapC.Revision != deltaA.Revision || snapC.Generation == snapA.Generation || len(snapC.WorkloadIdentities) != 701 {
		t.Fatalf("a later agent got revision %d, generation %d, %d identities; want revision %d, a new generation, 701 identities",
			snapC.Revision, snapC.Generation, len(snapC.WorkloadIdentities), deltaA.Revision)
	}
	// An agent that takes no revisions gets none, whatever was encoded for
	// the others at the same revision.
	legacy, _ := gather(t, watch(t, bot, "node-4"))
	if legacy.Epoch != "" || legacy.Revision != 0 || len(legacy.WorkloadIdentities) != 701 {
		t.Fatalf("an agent without revisions got epoch %q revision %d with %d identities, want none and 701", legacy.Epoch, legacy.Revision, len(legacy.WorkloadIdentities))
	}
}
