package auth_test

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	corelogin "github.com/wid-project/wid/internal/core/login"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestOversizedFieldsAreRefused: a field over its limit, from an anonymous
// joiner, a bot or a user, is one InvalidArgument that names the field and
// the limit, and the refusal's audit event holds none of the content.
func TestOversizedFieldsAreRefused(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	create(t, srv, agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**"))
	bot := joinedBot(t, srv, "agent", "prod-agent")
	anon, err := client.Dial(client.Config{Auth: srv.Addr, CAPin: srv.CAPin})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	big := strings.Repeat("h", 3<<20)
	key, _ := client.NewKey()
	csr, _ := client.NewCSR(key)

	for name, tt := range map[string]struct {
		call  func() error
		words string
	}{
		"join host": {func() error {
			_, err := anon.Join(ctx, &authv1.JoinRequest{Token: "x", Csr: csr, Host: big})
			return err
		}, "host is 3145728 bytes long, over the limit of 253 bytes"},
		"login user": {func() error {
			_, err := anon.Login(ctx, &authv1.LoginRequest{User: big, Password: "p", Csr: csr})
			return err
		}, "user is 3145728 bytes long, over the limit of 253 bytes"},
		"attestation reason": {func() error {
			_, err := bot.RecordAttestations(ctx, &authv1.RecordAttestationsRequest{Attestations: []*authv1.Attestation{{Id: "a", Outcome: "denied", Reason: big}}})
			return err
		}, "attestations[0].reason is 3145728 bytes long, over the limit of 4096 bytes"},
		"attestation attribute": {func() error {
			_, err := bot.RecordAttestations(ctx, &authv1.RecordAttestationsRequest{Attestations: []*authv1.Attestation{{Id: "a", Attributes: map[string]string{"workload.unix.path": big[:100<<10]}}}})
			return err
		}, `attestations[0].attributes["workload.unix.path"] is 102400 bytes long, over the limit of 4096 bytes`},
		"jwt audience": {func() error {
			_, err := bot.IssueWorkloadSVIDs(ctx, &authv1.IssueWorkloadSVIDsRequest{Svids: []*authv1.WorkloadSVIDRequest{{Identity: "web", Type: "jwt", Audience: []string{big[:100<<10]}}}})
			return err
		}, "svids[0].audience[0] is 102400 bytes long, over the limit of 1024 bytes"},
		"watch host": {func() error {
			st, err := bot.WatchAgent(ctx, &authv1.WatchAgentRequest{Host: big[:1000]})
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}, "host is 1000 bytes long, over the limit of 253 bytes"},
	} {
		t.Run(name, func(t *testing.T) {
			err := tt.call()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.words) {
				t.Fatalf("got %v, want InvalidArgument saying %q", err, tt.words)
			}
		})
	}
	resp, err := srv.AdminClient(t).ListAuditEvents(ctx, &authv1.ListAuditEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	refusals := 0
	for _, ev := range resp.Events {
		if strings.Contains(ev.Reason, "request is too large") {
			refusals++
		}
		if n := len(ev.String()); n > 8<<10 {
			t.Errorf("audit event %s %s is %d bytes", ev.Type, ev.Actor, n)
		}
	}
	if refusals != 6 {
		t.Errorf("%d refusals audited, want 6", refusals)
	}
	if n := len(auditTypes(t, srv, "workload.attest")); n != 0 {
		t.Errorf("refused requests recorded %d attestations", n)
	}
}

// TestDenialFloodIsCounted: a source sending refused requests faster than
// the denial rate has the rest counted, not written one by one, and the
// count reaches the audit log as one summary event.
func TestDenialFloodIsCounted(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	const joins = 300
	began := time.Now()
	for i := range joins {
		if _, err := join(srv, fmt.Sprintf("no-such-token-%d", i)); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("join %d: %v", i, err)
		}
	}
	// The limiter lets the burst through, then refills at its rate for as
	// long as the joins took: a loaded machine takes longer and so records
	// more, but never more than that.
	most := auth.DenialBurst + int(auth.DenialRate*time.Since(began).Seconds()) + 1
	written := len(auditTypes(t, srv, "bot.join.denied"))
	if written < auth.DenialBurst || written > most || written >= joins {
		t.Errorf("%d of %d refused joins written to the audit log, want the burst of %d and at most %d", written, joins, auth.DenialBurst, most)
	}
	srv.FlushDenialSummaryForTest(ctx)
	sums := auditTypes(t, srv, "audit.denials.dropped")
	if len(sums) != 1 {
		t.Fatalf("%d summary events, want 1", len(sums))
	}
	if got, want := sums[0].Details["dropped"], fmt.Sprint(joins-written); got != want || sums[0].Details["source:127.0.0.1"] != want {
		t.Errorf("summary details %v, want %s dropped, all from 127.0.0.1", sums[0].Details, want)
	}
	// Nothing more was dropped: no second summary.
	srv.FlushDenialSummaryForTest(ctx)
	if n := len(auditTypes(t, srv, "audit.denials.dropped")); n != 1 {
		t.Errorf("%d summary events after an idle flush, want 1", n)
	}
}

// TestLoginFloodIsRefusedAtOnce: logins past the concurrent-hash bound are
// refused at once with ResourceExhausted and a retry hint, audited.
func TestLoginFloodIsRefusedAtOnce(t *testing.T) {
	srv := authtest.Start(t)
	addUser(t, srv, 0)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		codeN = map[codes.Code]int{}
		hint  bool
	)
	const n = 40
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			_, err := login(t, srv, &authv1.LoginRequest{User: "alice", Password: "not the password"})
			mu.Lock()
			defer mu.Unlock()
			codeN[status.Code(err)]++
			if status.Code(err) == codes.ResourceExhausted {
				for _, d := range status.Convert(err).Details() {
					if ri, ok := d.(*errdetails.RetryInfo); ok && ri.RetryDelay.AsDuration() > 0 {
						hint = true
					}
				}
			}
		})
	}
	close(start)
	wg.Wait()
	if codeN[codes.ResourceExhausted] == 0 || !hint {
		t.Errorf("answers %v: want some ResourceExhausted with a retry hint", codeN)
	}
	for c := range codeN {
		if c != codes.ResourceExhausted && c != codes.Unauthenticated && c != codes.PermissionDenied {
			t.Errorf("answers %v: %s is not a login answer", codeN, c)
		}
	}
	if got := len(auditTypes(t, srv, "user.login.denied")); got != n {
		t.Errorf("%d refused logins audited, want %d", got, n)
	}
}

var lockTimeRE = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`)

// TestParallelGuessesCountEach: 20 wrong guesses at once count and lock
// exactly as 20 in a row would (5 failures, then locked), each is audited,
// and a known and an unknown name get the same answers.
func TestParallelGuessesCountEach(t *testing.T) {
	auth.SetArgon2MemoryForTest(t, 64)
	srv := authtest.Start(t)
	srv.SetLoginLimitsForTest(32, 1000, 1000)
	invite := addUser(t, srv, 0)
	if _, err := login(t, srv, &authv1.LoginRequest{User: "alice", Invite: invite, Password: alicePassword}); err != nil {
		t.Fatal(err)
	}
	parallelGuesses(t, []*authtest.Server{srv}, "")
	// Locked: even the right password is refused.
	_, err := login(t, srv, &authv1.LoginRequest{User: "alice", Password: alicePassword})
	wantDenied(t, err, codes.PermissionDenied, "too many failed attempts")
}

// parallelGuesses makes 20 wrong logins at once for alice, spread over
// servers in turn, then as many for the unknown mallory, and checks that
// they count and lock exactly as 20 in a row would (MaxLoginFailures
// failures, then locked), that each at alice is audited (as the last
// server reads the audit), and that both names got the same answers. where
// says where the guesses went, for the error.
func parallelGuesses(t *testing.T, servers []*authtest.Server, where string) {
	t.Helper()
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
				_, err := login(t, servers[i%len(servers)], &authv1.LoginRequest{User: user, Password: fmt.Sprintf("wrong guess %d", i)})
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
	if counts["Unauthenticated"] != corelogin.MaxLoginFailures || counts["PermissionDenied"] != 20-corelogin.MaxLoginFailures {
		t.Errorf("20 parallel guesses%s answered %v, want %d failures then locked", where, counts, corelogin.MaxLoginFailures)
	}
	mallory := guess("mallory")
	if !slices.Equal(alice, mallory) {
		t.Errorf("a known and an unknown user answered differently:\n%q\n%q", alice, mallory)
	}
	denied := 0
	for _, ev := range auditTypes(t, servers[len(servers)-1], "user.login.denied") {
		if ev.Actor == "alice" {
			denied++
		}
	}
	if denied != 20 {
		t.Errorf("%d of 20 guesses at alice audited", denied)
	}
}

// TestLoginLimitsSpareOtherCalls: while logins are refused for load, admin
// calls still answer at once.
func TestLoginLimitsSpareOtherCalls(t *testing.T) {
	srv := authtest.Start(t)
	srv.SetLoginLimitsForTest(1, 1000, 1000)
	addUser(t, srv, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				login(t, srv, &authv1.LoginRequest{User: "alice", Password: "not the password"})
			}
		})
	}
	admin := srv.AdminClient(t)
	for range 5 {
		start := time.Now()
		if _, err := admin.Ping(context.Background(), &authv1.PingRequest{}); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("an admin call took %s during a login flood", d)
		}
	}
	cancel()
	wg.Wait()
}
