package auth_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/store/postgres/pgtest"
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
	guess := func(user string) []string {
		const n = 20
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			answers []string
		)
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				_, err := login(t, rs[i%len(rs)], &authv1.LoginRequest{User: user, Password: fmt.Sprintf("wrong guess %d", i)})
				msg := strings.ReplaceAll(lockTimeRE.ReplaceAllString(status.Convert(err).Message(), "TIME"), user, "USER")
				mu.Lock()
				answers = append(answers, status.Code(err).String()+": "+msg)
				mu.Unlock()
			})
		}
		close(start)
		wg.Wait()
		slices.Sort(answers)
		return answers
	}
	alice := guess("alice")
	counts := map[string]int{}
	for _, a := range alice {
		counts[strings.SplitN(a, ":", 2)[0]]++
	}
	if counts["Unauthenticated"] != auth.MaxLoginFailures || counts["PermissionDenied"] != 20-auth.MaxLoginFailures {
		t.Errorf("20 parallel guesses over 3 replicas answered %v, want %d failures then locked", counts, auth.MaxLoginFailures)
	}
	mallory := guess("mallory")
	if !slices.Equal(alice, mallory) {
		t.Errorf("a known and an unknown user answered differently:\n%q\n%q", alice, mallory)
	}
	denied := 0
	for _, ev := range auditTypes(t, rs[2], "user.login.denied") {
		if ev.Actor == "alice" {
			denied++
		}
	}
	if denied != 20 {
		t.Errorf("%d of 20 guesses at alice audited", denied)
	}
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
