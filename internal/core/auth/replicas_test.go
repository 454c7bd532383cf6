package auth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	corelogin "github.com/wid-project/wid/internal/core/login"
	"github.com/wid-project/wid/internal/core/store/postgres/pgtest"
	"github.com/wid-project/wid/internal/testkit"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// replicas starts n auth services on one new PostgreSQL database: the
// first makes the trust domain, the others are its replicas.
func replicas(t *testing.T, n int, opts ...authtest.Option) []*authtest.Server {
	t.Helper()
	dbURL := pgtest.Database(t)
	first := authtest.Start(t, append([]authtest.Option{authtest.WithPostgres(dbURL)}, opts...)...)
	out := []*authtest.Server{first}
	for range n - 1 {
		out = append(out, authtest.StartReplica(t, first, dbURL, opts...))
	}
	return out
}

// TestParallelGuessesOverReplicasLockAsOnOne: 20 parallel wrong logins for
// one user, spread over three replicas, get exactly the answers they get
// from one replica: MaxLoginFailures failures, then locked; for a known
// user and an unknown name alike.
func TestParallelGuessesOverReplicasLockAsOnOne(t *testing.T) {
	auth.SetArgon2MemoryForTest(t, 64)
	rs := replicas(t, 3)
	for _, r := range rs {
		r.SetLoginLimitsForTest(32, 1000, 1000)
	}
	invite := addUser(t, rs[0], 0)
	if _, err := login(t, rs[1], &authv1.LoginRequest{User: "alice", Invite: invite, Password: alicePassword}); err != nil {
		t.Fatal(err)
	}
	parallelGuesses(t, rs, " over 3 replicas")
	// Locked on every replica, even with the right password.
	for i, r := range rs {
		_, err := login(t, r, &authv1.LoginRequest{User: "alice", Password: alicePassword})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("replica %d let a locked user in: %v", i, err)
		}
	}
}

// raceJoins joins with token on every replica of rs at once, n times over
// the replicas in turn, and returns how many joins were admitted.
func raceJoins(t *testing.T, rs []*authtest.Server, token string, n int) int {
	t.Helper()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		admitted int
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := join(rs[i%len(rs)], token)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				admitted++
			case status.Code(err) != codes.PermissionDenied:
				t.Errorf("a join that lost the race: %v, want PermissionDenied", err)
			}
		})
	}
	close(start)
	wg.Wait()
	return admitted
}

// TestJoinTokenRacedOnReplicas: a single-use token raced on two replicas
// admits exactly one agent, every time; a token of three uses raced by
// four joins on three replicas admits exactly three.
func TestJoinTokenRacedOnReplicas(t *testing.T) {
	rs := replicas(t, 3)
	ctx := context.Background()
	admin := rs[0].AdminClient(t)
	if _, err := admin.CreateBot(ctx, &authv1.CreateBotRequest{Name: "agent"}); err != nil {
		t.Fatal(err)
	}
	for round := range 10 {
		tok, err := admin.CreateJoinToken(ctx, &authv1.CreateJoinTokenRequest{Bot: "agent"})
		if err != nil {
			t.Fatal(err)
		}
		if n := raceJoins(t, rs[1:], tok.Token, 2); n != 1 {
			t.Fatalf("round %d: a single-use token raced on two replicas admitted %d agents", round, n)
		}
	}
	for round := range 5 {
		tok, err := admin.CreateJoinToken(ctx, &authv1.CreateJoinTokenRequest{Bot: "agent", Uses: 3})
		if err != nil {
			t.Fatal(err)
		}
		if n := raceJoins(t, rs, tok.Token, 4); n != 3 {
			t.Fatalf("round %d: a token of 3 uses raced by 4 joins on 3 replicas admitted %d agents", round, n)
		}
	}
	joins := 0
	for _, ev := range auditTypes(t, rs[2], "bot.join") {
		if ev.Actor == "bot:agent" {
			joins++
		}
	}
	if joins != 10+5*3 {
		t.Errorf("the audit log holds %d joins, want %d", joins, 10+5*3)
	}
}

// TestRotationGateSeesAgentsOfEveryReplica: a step asked of replica A
// waits for an agent that follows replica B, and goes through once that
// agent has reported to B what it holds.
func TestRotationGateSeesAgentsOfEveryReplica(t *testing.T) {
	rs := replicas(t, 2)
	a, b := rs[0], rs[1]
	ctx := context.Background()
	adminA, adminB := a.AdminClient(t), b.AdminClient(t)
	create(t, a, agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**"))
	bot := joinedBot(t, b, "agent", "prod-agent")
	stream := watch(t, bot, "node-1")
	stream.next(t, time.Second)

	rotate := func(phase string) error {
		_, err := adminA.RotateCA(ctx, &authv1.RotateCARequest{Type: "spiffe", Phase: phase})
		return err
	}
	if err := rotate("init"); err != nil {
		t.Fatal(err)
	}
	err := rotate("update_clients")
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `bot "agent" on node-1`) {
		t.Fatalf("update_clients on A before B's agent reported: %v, want a refusal naming the agent", err)
	}
	st, err := adminA.GetCAStatus(ctx, &authv1.GetCAStatusRequest{Type: "spiffe"})
	if err != nil {
		t.Fatal(err)
	}
	if ags := st.Cas[0].Agents; len(ags) != 1 || !ags[0].Connected || !ags[0].Lagging {
		t.Fatalf("A's status of B's agent: %v, want one connected agent that lags", ags)
	}
	// B serves the step A took (it reads the CAs when asked about them) and
	// its agent reports the new bundle.
	if _, err := adminB.GetCAStatus(ctx, &authv1.GetCAStatusRequest{}); err != nil {
		t.Fatal(err)
	}
	var atInit *authv1.AgentState
	for atInit == nil || atInit.Cas["spiffe"].Generation < 1 {
		atInit = stream.next(t, 2*time.Second)
	}
	req := &authv1.ReportAgentStatusRequest{Host: "node-1", Sequences: map[string]int64{}, Generations: map[string]int64{}, SignedBy: map[string]string{"spiffe": atInit.Cas["spiffe"].ActiveSignerId}}
	for typ, c := range atInit.Cas {
		req.Sequences[typ], req.Generations[typ] = c.Sequence, c.Generation
	}
	if _, err := bot.ReportAgentStatus(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := rotate("update_clients"); err != nil {
		t.Fatalf("update_clients on A after B's agent reported: %v", err)
	}
}

// TestRotationStepsRacedOnReplicas: the same step asked of two replicas at
// once is taken exactly once; the other gets the conflict answer that one
// replica gives today.
func TestRotationStepsRacedOnReplicas(t *testing.T) {
	rs := replicas(t, 2)
	ctx := context.Background()
	admins := []*client.Client{rs[0].AdminClient(t), rs[1].AdminClient(t)}
	for _, phase := range []string{"init", "update_clients", "update_servers", "standby", "init", "rollback"} {
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			won   int
			other []error
		)
		start := make(chan struct{})
		for _, admin := range admins {
			wg.Go(func() {
				<-start
				_, err := admin.RotateCA(ctx, &authv1.RotateCARequest{Type: "jwt", Phase: phase, Force: true})
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					won++
				} else {
					other = append(other, err)
				}
			})
		}
		close(start)
		wg.Wait()
		if won != 1 {
			t.Fatalf("%s raced on two replicas was taken %d times (%v)", phase, won, other)
		}
		// The loser speaks of the CA as the winner left it.
		now := phase
		if phase == "rollback" {
			now = "standby" // a rollback from init has nothing to undo
		}
		for _, err := range other {
			msg := status.Convert(err).Message()
			if status.Code(err) != codes.FailedPrecondition ||
				!(strings.Contains(msg, "changed while this step was being made") || strings.Contains(msg, "moved meanwhile") ||
					strings.Contains(msg, "is in "+now+" and cannot move to "+phase)) {
				t.Fatalf("the loser of the %s race got %v, want the conflict answer", phase, err)
			}
		}
	}
	// A rollback from init has nothing to undo and ends in standby at once.
	testkit.Eventually(t, 10*time.Second, func() bool {
		resp, err := admins[1].GetCAStatus(ctx, &authv1.GetCAStatusRequest{Type: "jwt"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Cas[0].Ca.Phase == "standby"
	}, "the rollback did not reach standby")
	steps := 0
	testkit.Within(10*time.Second, func() bool {
		steps = 0
		for _, ev := range auditTypes(t, rs[1], "ca.rotation") {
			if ev.Outcome == "success" {
				steps++
			}
		}
		return steps >= 6
	})
	if steps != 6 {
		for _, ev := range auditTypes(t, rs[1], "ca.rotation") {
			t.Logf("%s %s %s %v", ev.Actor, ev.Outcome, ev.Reason, ev.Details)
		}
		t.Fatalf("the audit log holds %d rotation steps, want 6", steps)
	}
}

// lowerSVIDTTL makes the built-in roles' SVIDs live d at most, so that an
// automatic rotation may be short.
func lowerSVIDTTL(t *testing.T, srv *authtest.Server, d string) {
	t.Helper()
	admin := srv.AdminClient(t)
	for _, role := range []string{"editor", "local-agent"} {
		resp, err := admin.GetResource(context.Background(), &authv1.GetResourceRequest{Kind: "role", Name: role})
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(resp.Resource, &doc); err != nil {
			t.Fatal(err)
		}
		spec := doc["spec"].(map[string]any)
		opts, _ := spec["options"].(map[string]any)
		if opts == nil {
			opts = map[string]any{}
		}
		opts["max_svid_ttl"] = d
		spec["options"] = opts
		b, _ := json.Marshal(doc)
		if _, err := admin.CreateResource(context.Background(), &authv1.CreateResourceRequest{Resources: [][]byte{b}, Force: true}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAutomaticRotationMovesToAnotherReplicaWhenItsDriverDies: of three
// replicas one drives automatic rotations; cut off from the store in the
// middle of one, it is replaced within seconds, and the new driver
// finishes the rotation, each step taken once.
func TestAutomaticRotationMovesToAnotherReplicaWhenItsDriverDies(t *testing.T) {
	const ttl = 500 * time.Millisecond
	rs := replicas(t, 3, authtest.WithLeaseTTL(ttl))
	ctx := context.Background()
	lowerSVIDTTL(t, rs[0], "2s")

	holderOf := func(asked *authtest.Server) *authtest.Server {
		t.Helper()
		var holder *authtest.Server
		testkit.Eventually(t, 10*ttl, func() bool {
			h, err := asked.PeriodicLeaseHolderForTest(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				if r.ReplicaForTest() == h {
					holder = r
				}
			}
			return holder != nil
		}, "no replica holds the periodic lease")
		return holder
	}
	driver := holderOf(rs[0])
	var other *authtest.Server
	for _, r := range rs {
		if r != driver {
			other = r
			break
		}
	}
	admin := other.AdminClient(t)
	if _, err := admin.RotateCA(ctx, &authv1.RotateCARequest{Type: "spiffe", GracePeriodSeconds: 6}); err != nil {
		t.Fatal(err)
	}
	phase := func() string {
		t.Helper()
		resp, err := admin.GetCAStatus(ctx, &authv1.GetCAStatusRequest{Type: "spiffe"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Cas[0].Ca.Phase
	}
	testkit.Eventually(t, 15*time.Second, func() bool { return phase() != "init" },
		"the driver never moved the rotation past init")
	driver.CloseStoreForTest()
	died := time.Now()
	var next *authtest.Server
	for next == nil || next == driver {
		next = holderOf(other)
		if time.Since(died) > 10*time.Second {
			t.Fatal("no replica took the lease over from the dead driver")
		}
	}
	t.Logf("the lease moved %s after its holder lost the store (TTL %s)", time.Since(died).Round(time.Millisecond), ttl)
	testkit.Eventually(t, 15*time.Second, func() bool { return phase() == "standby" },
		"the rotation did not reach standby after its driver died")
	// The step is stored before its audit event is committed: wait for
	// the event, then count.
	var seen map[string]int
	// Within, not Eventually: the counts below say what is missing.
	testkit.Within(15*time.Second, func() bool {
		seen = map[string]int{}
		for _, ev := range auditTypes(t, other, "ca.rotation") {
			if ev.Outcome == "success" {
				seen[ev.Details["to"]]++
			}
		}
		return seen["standby"] > 0
	})
	for _, to := range []string{"init", "update_clients", "update_servers", "standby"} {
		if seen[to] != 1 {
			t.Errorf("the step to %s is audited %d times, want once (%v)", to, seen[to], seen)
		}
	}
	resp, err := admin.VerifyAudit(ctx, &authv1.VerifyAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Problems) > 0 {
		t.Fatalf("the audit log has problems: %v", resp.Problems)
	}
}

// TestIdleUnknownNamesAreForgotten: anyone can make the store count
// failures of names that are not users, so those counts go once they are
// idle for a day and unlocked; locked or recent ones stay.
func TestIdleUnknownNamesAreForgotten(t *testing.T) {
	auth.SetArgon2MemoryForTest(t, 64)
	clock := &offsetClock{}
	srv := authtest.Start(t, authtest.WithClock(clock.now))
	ctx := context.Background()
	_, err := login(t, srv, &authv1.LoginRequest{User: "mallory", Password: "guess guess guess"})
	wantDenied(t, err, codes.Unauthenticated, "login failed")
	for range corelogin.MaxLoginFailures {
		login(t, srv, &authv1.LoginRequest{User: "trudy", Password: "guess guess guess"})
	}
	stored := func(name string) bool {
		ok, err := srv.UnknownLoginStoredForTest(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !stored("mallory") || !stored("trudy") {
		t.Fatal("failed logins of unknown names are not in the store")
	}
	clock.advance(23 * time.Hour)
	srv.ForgetIdleUnknownLoginsForTest(ctx)
	if !stored("mallory") {
		t.Fatal("a failure 23 hours old was forgotten")
	}
	// trudy fails again (the clock has moved past the TLS certificate's
	// life, so not over TLS): kept.
	srv.FailUnknownLoginForTest(ctx, "trudy", "192.0.2.1")
	clock.advance(2 * time.Hour)
	srv.ForgetIdleUnknownLoginsForTest(ctx)
	if stored("mallory") {
		t.Fatal("a failure 25 hours old is still stored")
	}
	if !stored("trudy") {
		t.Fatal("the counts of a name failed an hour ago were forgotten")
	}
}

// TestReplicaRestartsAfterOthersMovedOn: a replica's anchor records the
// audit head and CA keys as that replica last saw them. While it is down
// the others append to the audit log and rotate every CA through a whole
// rotation (so no key it anchored is left); it starts again all the same,
// since the store's chain extends what it anchored and records those
// rotations.
func TestReplicaRestartsAfterOthersMovedOn(t *testing.T) {
	dbURL := pgtest.Database(t)
	a := authtest.Start(t, authtest.WithPostgres(dbURL))
	dir := authtest.ReplicaDataDir(t, a)
	opts := []authtest.Option{authtest.WithPostgres(dbURL), authtest.WithDataDir(dir)}
	ctx := context.Background()
	admin := a.AdminClient(t)
	t.Run("first start", func(t *testing.T) {
		b := authtest.Start(t, opts...)
		create(t, b, roleDoc(t, "on-b", grant("/b/*")))
	})
	create(t, a, roleDoc(t, "on-a", grant("/a/*")))
	t.Run("after the audit head moved", func(t *testing.T) {
		b := authtest.Start(t, opts...)
		create(t, b, roleDoc(t, "on-b-again", grant("/b/*")))
	})
	for _, phase := range []string{"init", "update_clients", "update_servers", "standby"} {
		if _, err := admin.RotateCA(ctx, &authv1.RotateCARequest{Type: "all", Phase: phase, Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("after every CA rotated", func(t *testing.T) {
		b := authtest.Start(t, opts...)
		resp, err := b.AdminClient(t).VerifyAudit(ctx, &authv1.VerifyAuditRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Problems) > 0 {
			t.Fatalf("the audit log has problems: %v", resp.Problems)
		}
	})
}

// TestUnknownNamesTakeBoundedRoom: guesses at ever new names that are not
// users fill a fixed number of stored buckets of a few names each; in a
// full bucket the least recently failed name gives way, a locked one last.
func TestUnknownNamesTakeBoundedRoom(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	// Names that share one bucket.
	bucket := auth.UnknownBucketForTest("locked-name")
	var names []string
	for i := 0; len(names) < 3*auth.UnknownPerBucketForTest; i++ {
		if n := fmt.Sprintf("guess-%d", i); auth.UnknownBucketForTest(n) == bucket {
			names = append(names, n)
		}
	}
	for range corelogin.MaxLoginFailures {
		srv.FailUnknownLoginForTest(ctx, "locked-name", "192.0.2.1")
	}
	for _, n := range names {
		if err := srv.FailUnknownLoginForTest(ctx, n, "192.0.2.2"); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("guess at %s: %v", n, err)
		}
	}
	buckets, err := srv.StoredItemsForTest(ctx, auth.UnknownLoginKind)
	if err != nil {
		t.Fatal(err)
	}
	if buckets != 1 {
		t.Fatalf("%d buckets stored, want 1", buckets)
	}
	counted := 0
	for _, n := range append(names, "locked-name") {
		if ok, _ := srv.UnknownLoginStoredForTest(ctx, n); ok {
			counted++
		}
	}
	if counted != auth.UnknownPerBucketForTest {
		t.Fatalf("the bucket counts %d names, want %d", counted, auth.UnknownPerBucketForTest)
	}
	if ok, _ := srv.UnknownLoginStoredForTest(ctx, "locked-name"); !ok {
		t.Fatal("a locked unknown name gave way to newer guesses")
	}
	if ok, _ := srv.UnknownLoginStoredForTest(ctx, names[len(names)-1]); !ok {
		t.Fatal("the newest guess is not counted")
	}
}

// TestAgentsOfADeadReplicaStopHoldingRotations: an agent followed replica
// B, which died without a word (it lost the store, as with kill -9, so the
// record still names it). Replica A shows the agent as connected for three
// heartbeats, then as gone, and its gate waits for it through the agent
// window like for any agent that went away, then moves on.
func TestAgentsOfADeadReplicaStopHoldingRotations(t *testing.T) {
	dbURL := pgtest.Database(t)
	clock := &offsetClock{}
	a := authtest.Start(t, authtest.WithPostgres(dbURL), authtest.WithClock(clock.now))
	b := authtest.StartReplica(t, a, dbURL)
	ctx := context.Background()
	admin := a.AdminClient(t)
	create(t, a, agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**"))
	bot := joinedBot(t, b, "agent", "prod-agent")
	stream := watch(t, bot, "node-1")
	stream.next(t, time.Second)
	if _, err := admin.RotateCA(ctx, &authv1.RotateCARequest{Type: "spiffe", Phase: "init"}); err != nil {
		t.Fatal(err)
	}
	b.CloseStoreForTest()

	agentState := func() *authv1.AgentCAState {
		t.Helper()
		st, err := admin.GetCAStatus(ctx, &authv1.GetCAStatusRequest{Type: "spiffe"})
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Cas[0].Agents) == 0 {
			return nil
		}
		return st.Cas[0].Agents[0]
	}
	step := func() error {
		_, err := admin.RotateCA(ctx, &authv1.RotateCARequest{Type: "spiffe", Phase: "update_clients"})
		return err
	}
	if ag := agentState(); ag == nil || !ag.Connected || !ag.Lagging {
		t.Fatalf("right after B died, A shows its agent as %v, want connected and lagging", ag)
	}
	clock.advance(4 * time.Minute)
	if ag := agentState(); ag == nil || ag.Connected || !ag.Lagging {
		t.Fatalf("4 minutes after B died, A shows its agent as %v, want gone but lagging", ag)
	}
	if err := step(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("update_clients 4 minutes after B died: %v, want a refusal that waits for the agent", err)
	}
	clock.advance(auth.DefaultAgentWindow)
	if ag := agentState(); ag != nil {
		t.Fatalf("past the agent window A still shows B's agent: %v", ag)
	}
	if err := step(); err != nil {
		t.Fatalf("update_clients past the agent window: %v", err)
	}
}
