package auth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"github.com/wid-project/wid/internal/core/store/postgres"
	"github.com/wid-project/wid/internal/core/store/postgres/pgtest"
	"github.com/wid-project/wid/internal/testkit"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// startReplicas starts n auth services on one new PostgreSQL database, the
// first making the trust domain, the others its replicas.
func startReplicas(t *testing.T, n int) (dbName, dbURL string, rs []*authtest.Server) {
	t.Helper()
	dbName, dbURL = pgtest.NamedDatabase(t)
	first := authtest.Start(t, authtest.WithPostgres(dbURL))
	rs = append(rs, first)
	for range n - 1 {
		rs = append(rs, authtest.StartReplica(t, first, dbURL))
	}
	return dbName, dbURL, rs
}

// waitState waits for a pushed state that satisfies ok and returns how
// long that took from start.
func (s *stateStream) waitState(t *testing.T, start time.Time, what string, ok func(*authv1.AgentState) bool) time.Duration {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case st := <-s.states:
			if ok(st) {
				return time.Since(start)
			}
		case err := <-s.errc:
			t.Fatalf("waiting for %s: the stream ended: %v", what, err)
		case <-deadline:
			t.Fatalf("no state with %s within 10s", what)
		}
	}
}

func hasNames(t *testing.T, want ...string) func(*authv1.AgentState) bool {
	return func(st *authv1.AgentState) bool {
		got := identityNames(t, st)
		slices.Sort(got)
		w := slices.Clone(want)
		slices.Sort(w)
		return slices.Equal(got, w)
	}
}

func botDoc(t *testing.T, name string, roles ...string) []byte {
	t.Helper()
	b, err := json.Marshal(&resource.Bot{Header: resource.Header{Kind: resource.KindBot, Version: resource.V1, Metadata: resource.Metadata{Name: name}}, Spec: resource.BotSpec{Roles: roles}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func update(t *testing.T, srv *authtest.Server, doc []byte) {
	t.Helper()
	if _, err := srv.AdminClient(t).UpdateResource(context.Background(), &authv1.UpdateResourceRequest{Resource: doc}); err != nil {
		t.Fatalf("updating: %v", err)
	}
}

func remove(t *testing.T, srv *authtest.Server, kind, name string) {
	t.Helper()
	if _, err := srv.AdminClient(t).DeleteResource(context.Background(), &authv1.DeleteResourceRequest{Kind: kind, Name: name}); err != nil {
		t.Fatalf("deleting %s/%s: %v", kind, name, err)
	}
}

// getDoc reads kind/name through srv, decoded.
func getDoc(t *testing.T, srv *authtest.Server, kind, name string) resource.Resource {
	t.Helper()
	resp, err := srv.AdminClient(t).GetResource(context.Background(), &authv1.GetResourceRequest{Kind: kind, Name: name})
	if err != nil {
		t.Fatalf("reading %s/%s: %v", kind, name, err)
	}
	v, err := resource.Unmarshal(resp.Resource)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// TestReplicaChangesReachOtherReplicasAgents: roles, workload identities
// and bots created, updated and deleted through replica B reach the reads
// of replica A and the agent stream connected to A, within a second.
func TestReplicaChangesReachOtherReplicasAgents(t *testing.T) {
	_, _, rs := startReplicas(t, 2)
	a, b := rs[0], rs[1]

	create(t, a,
		agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**"),
		agentRole(t, "stage-agent", []string{"stage"}, nil, 0, "/svc/**"),
		wiDoc(t, "sandbox", "dev", "/svc/sandbox", nil, 0, uidIs("1000")),
		wiDoc(t, "stage1", "stage", "/svc/stage1", nil, 0, uidIs("1000")),
	)
	stream := watch(t, joinedBot(t, a, "agent", "prod-agent"), "node-a")
	stream.waitState(t, time.Now(), "no identities", hasNames(t))
	// A has the role and the bot in its cache now.
	getDoc(t, a, resource.KindRole, "prod-agent")
	getDoc(t, a, resource.KindBot, "agent")

	var (
		lat      []time.Duration
		selected []string // what the stream on A must list
		devToo   bool     // prod-agent also selects env=dev
		stageToo bool     // the bot also holds stage-agent
		live     []string // prod identities created and not yet deleted
	)
	expect := func() []string {
		out := slices.Clone(live)
		if devToo {
			out = append(out, "sandbox")
		}
		if stageToo {
			out = append(out, "stage1")
		}
		return out
	}
	const changes = 50
	for i := range changes {
		start := time.Now()
		var what string
		switch i % 5 {
		case 0, 1: // create
			name := fmt.Sprintf("w%02d", i)
			create(t, b, wiDoc(t, name, "prod", "/svc/"+name, nil, 0, uidIs("1000")))
			live = append(live, name)
			what = "workload identity " + name + " created"
		case 2: // update: the identity's SPIFFE ID changes
			name := live[len(live)-1]
			update(t, b, wiDoc(t, name, "prod", "/svc/"+name+"/v2", nil, 0, uidIs("1000")))
			what = "workload identity " + name + " updated"
			selected = expect()
			lat = append(lat, stream.waitState(t, start, what, func(st *authv1.AgentState) bool {
				if !hasNames(t, selected...)(st) {
					return false
				}
				for _, d := range st.WorkloadIdentities {
					if strings.Contains(string(d), `"/svc/`+name+`/v2"`) {
						return true
					}
				}
				return false
			}))
			continue
		case 3: // the role changes what it selects, or the bot its roles
			if i%2 == 1 {
				devToo = !devToo
				envs := []string{"prod"}
				if devToo {
					envs = append(envs, "dev")
				}
				update(t, b, agentRole(t, "prod-agent", envs, nil, 0, "/svc/**"))
				what = fmt.Sprintf("role updated (dev selected: %v)", devToo)
			} else {
				stageToo = !stageToo
				roles := []string{"prod-agent"}
				if stageToo {
					roles = append(roles, "stage-agent")
				}
				update(t, b, botDoc(t, "agent", roles...))
				what = fmt.Sprintf("bot updated (stage-agent held: %v)", stageToo)
			}
		case 4: // delete
			name := live[0]
			remove(t, b, resource.KindWorkloadIdentity, name)
			live = live[1:]
			what = "workload identity " + name + " deleted"
		}
		selected = expect()
		lat = append(lat, stream.waitState(t, start, what, hasNames(t, selected...)))

		// Reads through A agree with what B wrote.
		switch i % 5 {
		case 3:
			role := getDoc(t, a, resource.KindRole, "prod-agent").(*resource.Role)
			if got := slices.Contains(role.Spec.Allow.WorkloadIdentityLabels["env"], "dev"); got != devToo {
				t.Fatalf("after %s, replica A reads a role that selects dev: %v", what, got)
			}
			bot := getDoc(t, a, resource.KindBot, "agent").(*resource.Bot)
			if got := slices.Contains(bot.Spec.Roles, "stage-agent"); got != stageToo {
				t.Fatalf("after %s, replica A reads a bot holding stage-agent: %v", what, got)
			}
		}
	}
	// Creating and deleting a role through B is seen by A's reads.
	create(t, b, agentRole(t, "extra", []string{"x"}, nil, 0, "/x/**"))
	getDoc(t, a, resource.KindRole, "extra")
	start := time.Now()
	remove(t, b, resource.KindRole, "extra")
	testkit.Eventually(t, 5*time.Second, func() bool {
		_, err := a.AdminClient(t).GetResource(context.Background(), &authv1.GetResourceRequest{Kind: "role", Name: "extra"})
		return status.Code(err) == codes.NotFound
	}, "replica A still reads a role deleted through B")
	t.Logf("a role deleted through B was gone from A's reads after %v", time.Since(start))

	p50, p99 := percentile(lat, 0.5), percentile(lat, 0.99)
	t.Logf("%d changes through replica B reached the agent stream on replica A: p50 %v, p99 %v, max %v", len(lat), p50, p99, percentile(lat, 1))
	if p99 >= time.Second {
		t.Errorf("p99 latency %v from a change on B to A's agent stream, want under 1s", p99)
	}

	// Deleting the bot through B ends its stream on A.
	remove(t, b, resource.KindBot, "agent")
	select {
	case err := <-stream.errc:
		if !strings.Contains(err.Error(), "no longer exists") {
			t.Fatalf("the stream of a bot deleted through B ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream of a bot deleted through B did not end")
	}
}

// TestReplicaCARotationReachesOtherReplicas: a rotation step through B
// changes the bundle A serves, to its agents and to GetBundle.
func TestReplicaCARotationReachesOtherReplicas(t *testing.T) {
	_, _, rs := startReplicas(t, 3)
	a, b, c := rs[0], rs[1], rs[2]
	ctx := context.Background()
	create(t, a, agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**"))
	streamA := watch(t, joinedBot(t, a, "agent-a", "prod-agent"), "node-a")
	streamC := watch(t, joinedBot(t, c, "agent-c", "prod-agent"), "node-c")
	first := streamA.next(t, 5*time.Second)
	streamC.next(t, 5*time.Second)
	before, err := a.AdminClient(t).GetBundle(ctx, &authv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	if _, err := b.AdminClient(t).RotateCA(ctx, &authv1.RotateCARequest{Type: "spiffe", Phase: "init", Mode: "manual"}); err != nil {
		t.Fatalf("rotating through B: %v", err)
	}
	twoKeys := func(st *authv1.AgentState) bool {
		return len(st.Bundle.GetX509Authorities()) == 2 && st.Bundle.Sequence == first.Bundle.Sequence+1
	}
	took := streamA.waitState(t, start, "the new spiffe key", twoKeys)
	tookC := streamC.waitState(t, start, "the new spiffe key", twoKeys)
	t.Logf("a rotation step through B reached the agent streams on A in %v and on C in %v", took, tookC)
	if took >= time.Second || tookC >= time.Second {
		t.Errorf("the rotation step took %v and %v to reach the other replicas' agents, want under 1s", took, tookC)
	}
	after, err := a.AdminClient(t).GetBundle(ctx, &authv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if after.Sequence != before.Sequence+1 || strings.Count(string(after.X509Pem), "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("A's bundle after B's rotation step: sequence %d (was %d), %d certificates", after.Sequence, before.Sequence, strings.Count(string(after.X509Pem), "BEGIN CERTIFICATE"))
	}
	st, err := c.AdminClient(t).GetCAStatus(ctx, &authv1.GetCAStatusRequest{Type: "spiffe"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.String(), "init") {
		t.Fatalf("C's status of the spiffe CA after B's step: %v", st)
	}
}

// TestReplicaListenerLossLosesNoChange: when A's listening connection is
// killed, changes made through B meanwhile still reach A's agents.
func TestReplicaListenerLossLosesNoChange(t *testing.T) {
	dbName, _, rs := startReplicas(t, 2)
	a, b := rs[0], rs[1]
	create(t, a, agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**"))
	stream := watch(t, joinedBot(t, a, "agent", "prod-agent"), "node-a")
	stream.waitState(t, time.Now(), "no identities", hasNames(t))
	pg := pgtest.Shared(t)
	var names []string
	for i := range 5 {
		if err := pg.Exec(context.Background(), dbName, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = 'widagent changes'`); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		name := fmt.Sprintf("w%d", i)
		create(t, b, wiDoc(t, name, "prod", "/svc/"+name, nil, 0, uidIs("1000")))
		names = append(names, name)
		took := stream.waitState(t, start, name, hasNames(t, names...))
		t.Logf("round %d: a change made as A's listener was killed reached A's agent stream in %v", i, took)
		// Without the wake-up on reconnection only the feed's poll would
		// find it, up to changeFeedPoll later.
		if took >= time.Second {
			t.Errorf("round %d: the change took %v to reach A, want under 1s", i, took)
		}
	}
}

// TestReplicaPrunedPastReloadsEverything: a replica whose position in the
// change log was pruned away drops and reloads everything, and then serves
// what the store holds.
func TestReplicaPrunedPastReloadsEverything(t *testing.T) {
	_, dbURL, rs := startReplicas(t, 2)
	a, b := rs[0], rs[1]
	ctx := context.Background()
	create(t, a, agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**"),
		wiDoc(t, "sandbox", "dev", "/svc/sandbox", nil, 0, uidIs("1000")))
	stream := watch(t, joinedBot(t, a, "agent", "prod-agent"), "node-a")
	stream.waitState(t, time.Now(), "no identities", hasNames(t))
	getDoc(t, a, resource.KindRole, "prod-agent")

	resume := a.PauseChangeFeedForTest()
	update(t, b, agentRole(t, "prod-agent", []string{"prod", "dev"}, nil, 0, "/svc/**"))
	create(t, b, wiDoc(t, "web", "prod", "/svc/web", nil, 0, uidIs("1000")))
	if _, err := b.AdminClient(t).RotateCA(ctx, &authv1.RotateCARequest{Type: "spiffe", Phase: "init", Mode: "manual"}); err != nil {
		t.Fatal(err)
	}
	// A has not seen any of it.
	role := getDoc(t, a, resource.KindRole, "prod-agent").(*resource.Role)
	if slices.Contains(role.Spec.Allow.WorkloadIdentityLabels["env"], "dev") {
		t.Fatal("replica A saw the role change while its feed was paused: the test proves nothing")
	}
	db, err := postgres.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n, err := db.PruneChanges(ctx, 1, time.Now().Add(time.Hour), store.MaxChangesPage)
	if err != nil || n == 0 {
		t.Fatalf("pruning = %d, %v", n, err)
	}

	start := time.Now()
	resume()
	took := stream.waitState(t, start, "everything changed while A was behind", func(st *authv1.AgentState) bool {
		return hasNames(t, "sandbox", "web")(st) && len(st.Bundle.GetX509Authorities()) == 2
	})
	t.Logf("replica A reloaded everything in %v after its position was pruned", took)
	role = getDoc(t, a, resource.KindRole, "prod-agent").(*resource.Role)
	if !slices.Contains(role.Spec.Allow.WorkloadIdentityLabels["env"], "dev") {
		t.Fatal("after the reload replica A still reads the old role")
	}
	bundle, err := a.AdminClient(t).GetBundle(ctx, &authv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(bundle.X509Pem), "BEGIN CERTIFICATE") != 2 {
		t.Fatal("after the reload replica A serves the old bundle")
	}

	// And it follows changes one by one again.
	create(t, b, wiDoc(t, "api", "prod", "/svc/api", nil, 0, uidIs("1000")))
	stream.waitState(t, time.Now(), "api", hasNames(t, "api", "sandbox", "web"))
}

// TestReplicaSeesDeleteAndRecreate: an identity deleted and created again
// through B has the same revision as before; A, seeing both changes at
// once, serves the new one, not what it compiled from the old.
func TestReplicaSeesDeleteAndRecreate(t *testing.T) {
	_, _, rs := startReplicas(t, 2)
	a, b := rs[0], rs[1]
	create(t, a, agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**"),
		wiDoc(t, "web", "prod", "/svc/web", nil, 0, uidIs("1000")))
	stream := watch(t, joinedBot(t, a, "agent", "prod-agent"), "node-a")
	stream.waitState(t, time.Now(), "web", hasNames(t, "web"))

	resume := a.PauseChangeFeedForTest()
	remove(t, b, resource.KindWorkloadIdentity, "web")
	create(t, b, wiDoc(t, "web", "prod", "/svc/web/v2", nil, 0, uidIs("1000")))
	resume()
	stream.waitState(t, time.Now(), "web's new SPIFFE ID", func(st *authv1.AgentState) bool {
		return len(st.WorkloadIdentities) == 1 && strings.Contains(string(st.WorkloadIdentities[0]), `"/svc/web/v2"`)
	})
}

// TestReplicaFeedSurvivesABadCADocument: a CA document that does not load
// keeps its previous state in memory but does not stop the feed: later
// changes still arrive, and the CA reloads once the document is fixed.
func TestReplicaFeedSurvivesABadCADocument(t *testing.T) {
	_, dbURL, rs := startReplicas(t, 2)
	a, b := rs[0], rs[1]
	ctx := context.Background()
	create(t, a, agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**"))
	stream := watch(t, joinedBot(t, a, "agent", "prod-agent"), "node-a")
	stream.waitState(t, time.Now(), "no identities", hasNames(t))

	db, err := postgres.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	good, err := db.Get(ctx, "cert_authority", "jwt")
	if err != nil {
		t.Fatal(err)
	}
	bad := store.Item{Kind: good.Kind, Name: good.Name, Data: []byte(`{"type":"jwt"`)}
	if _, err := db.Apply(ctx, store.Op{Type: store.OpUpdate, Item: bad, ExpectRevision: good.Revision}); err != nil {
		t.Fatal(err)
	}
	create(t, b, wiDoc(t, "web", "prod", "/svc/web", nil, 0, uidIs("1000")))
	stream.waitState(t, time.Now(), "web, created after the bad CA document", hasNames(t, "web"))

	good.Revision = 0
	if _, err := db.Apply(ctx, store.Op{Type: store.OpUpdate, Item: good}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AdminClient(t).RotateCA(ctx, &authv1.RotateCARequest{Type: "spiffe", Phase: "init", Mode: "manual"}); err != nil {
		t.Fatalf("rotating through B once the CA document is fixed: %v", err)
	}
	stream.waitState(t, time.Now(), "the new spiffe key", func(st *authv1.AgentState) bool {
		return len(st.Bundle.GetX509Authorities()) == 2
	})
}
