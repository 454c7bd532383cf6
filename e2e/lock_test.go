package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/testkit"
)

// lockRefusals lists the audited refusals by lock id.
func lockRefusals(t *testing.T, ctx context.Context, auth *agent, id string) []*authv1.AuditEvent {
	t.Helper()
	resp, err := auth.admin().ListAuditEvents(ctx, &authv1.ListAuditEventsRequest{Query: &authv1.AuditQuery{Types: []string{"access.denied"}}})
	if err != nil {
		t.Fatal(err)
	}
	var out []*authv1.AuditEvent
	for _, ev := range resp.Events {
		if ev.Resource == "lock/"+id {
			out = append(out, ev)
		}
	}
	return out
}

// Done-when 1: a bot is locked while its agent serves workloads: its
// stream is closed within a second, its workloads keep their cached SVID
// only until it expires, its joins and renewals are refused with the lock's
// reason, and lock rm restores service with no restart.
func TestLockBotEndsItsStreamAndLockRmRestores(t *testing.T) {
	t.Parallel()
	auth := startAgent(t, newDataDir(t), "--roles", "auth")
	tok := tokenFrom(t, auth.widctl("bot", "add", "edge", "--roles", "local-agent").must(t))
	auth.widctl("workload-identity", "create", "short", "--spiffe-id", "/svc/short", "--x509-ttl", "10s", "--rule", "workload.unix.uid="+uid).must(t)
	agentDir := newDataDir(t)
	ag := startAgent(t, agentDir, "--roles", "agent", "--auth", auth.addr, "--join-token", tok, "--ca-pin", auth.pin)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+ag.workload))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first, err := c.FetchX509SVID(ctx)
	if err != nil {
		t.Fatal(err)
	}

	const reason = "host image leaked"
	out := auth.widctl("lock", "create", "--bot", "edge", "--reason", reason, "--name", "edge-lock").must(t).stdout
	if !strings.Contains(out, "edge-lock") {
		t.Fatalf("lock create does not name the lock: %q", out)
	}
	ls := auth.widctl("lock", "ls").must(t).stdout
	if rows := strings.Split(strings.TrimSpace(ls), "\n"); len(rows) != 2 || !strings.HasPrefix(rows[1], "edge-lock ") || !strings.Contains(rows[1], reason) {
		t.Fatalf("lock ls does not show the lock with its ID first:\n%s", ls)
	}

	// The stream's end is audited, naming the lock: within a second of the lock.
	var created time.Time
	if resp, err := auth.admin().ListAuditEvents(ctx, &authv1.ListAuditEventsRequest{Query: &authv1.AuditQuery{Types: []string{"resource.created"}}}); err == nil {
		for _, ev := range resp.Events {
			if ev.Resource == "lock/edge-lock" {
				created = ev.Time.AsTime()
			}
		}
	}
	if created.IsZero() {
		t.Fatal("the lock's creation was not audited")
	}
	var ended *authv1.AuditEvent
	if !testkit.WithinEvery(10*time.Second, 50*time.Millisecond, func() bool {
		for _, ev := range lockRefusals(t, ctx, auth, "edge-lock") {
			if ev.Details["method"] == "/wid.auth.v1.AuthService/WatchAgent" {
				ended = ev
				return true
			}
		}
		return false
	}) {
		t.Fatalf("the agent's stream was not ended by the lock; auth log:\n%s", auth.out)
	}
	if d := ended.Time.AsTime().Sub(created); d > time.Second {
		t.Fatalf("the agent's stream ended %s after the lock, over a second", d)
	}
	if !strings.Contains(ended.Reason, reason) || ended.Actor != "bot:edge" {
		t.Fatalf("the refusal does not name the bot and the lock's reason: %+v", ended)
	}

	// Until it expires the cached SVID is served; no renewal comes.
	expiry := first.Certificates[0].NotAfter
	for time.Now().Before(expiry.Add(-time.Second)) {
		s, err := c.FetchX509SVID(ctx)
		if err != nil {
			t.Fatalf("the cached SVID stopped being served %s before it expired: %v", time.Until(expiry), err)
		}
		if s.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) != 0 {
			t.Fatalf("a locked bot's agent got a new SVID (serial %x)", s.Certificates[0].SerialNumber)
		}
		// Not a wait: the SVID is sampled at this pace for as long as it is valid.
		time.Sleep(200 * time.Millisecond)
	}
	testkit.EventuallyEvery(t, 5*time.Second, 100*time.Millisecond, func() bool {
		s, err := c.FetchX509SVID(ctx)
		if err == nil && time.Now().After(s.Certificates[0].NotAfter) {
			t.Fatalf("the agent served an expired SVID")
		}
		return err != nil
	}, "the agent still serves an SVID after its expiry while its bot is locked")

	// A renewal (the agent's IssueWorkloadSVIDs) and a join are refused with the reason.
	var renewal bool
	for _, ev := range lockRefusals(t, ctx, auth, "edge-lock") {
		if ev.Details["method"] != "/wid.auth.v1.AuthService/WatchAgent" && strings.Contains(ev.Reason, reason) {
			renewal = true
		}
	}
	if !renewal {
		t.Fatal("no call but the stream was refused by the lock while the agent kept trying")
	}
	tok2 := tokenFrom(t, auth.widctl("token", "create", "--bot", "edge").must(t))
	jctx, jcancel := context.WithTimeout(ctx, 30*time.Second)
	second := newDataDir(t)
	b, err := exec.CommandContext(jctx, filepath.Join(binDir, "widagent"), "start", "--roles", "agent", "--data-dir", second,
		"--workload-socket", filepath.Join(second, "w.sock"), "--auth", auth.addr, "--join-token", tok2, "--ca-pin", auth.pin).CombinedOutput()
	jcancel()
	// widagent words the next step the refusal names: lifting the lock.
	if err == nil || !strings.Contains(string(b), reason) || !strings.Contains(string(b), "; an admin lifts it with widctl lock rm edge-lock") {
		t.Fatalf("a join as the locked bot was not refused with the lock's reason (%v):\n%s", err, b)
	}

	// lock rm: the same agent, not restarted, serves a new SVID.
	auth.widctl("lock", "rm", "edge-lock").must(t)
	if !testkit.WithinEvery(45*time.Second, 200*time.Millisecond, func() bool {
		s, ferr := c.FetchX509SVID(ctx)
		err = ferr
		return err == nil && s.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) != 0 && time.Now().Before(s.Certificates[0].NotAfter)
	}) {
		t.Fatalf("no new SVID after lock rm (%v); agent log:\n%s", err, ag.out)
	}
}

// Bad input: one sentence each, nothing changed.
func TestLockBadInput(t *testing.T) {
	t.Parallel()
	auth := startAgent(t, newDataDir(t), "--roles", "auth")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"lock", "create", "--reason", "x"}, "no target given"},
		{[]string{"lock", "create", "--bot", "a", "--user", "b", "--reason", "x"}, "name two targets"},
		{[]string{"lock", "create", "--bot", "a", "--reason", "x", "--ttl", "9000h"}, "past a year"},
		{[]string{"lock", "create", "--bot", "a"}, "no --reason given"},
		{[]string{"lock", "create", "--spiffe-id", "spiffe://example.org", "--reason", "x"}, "whole trust domain"},
	} {
		r := auth.widctl(tt.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tt.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("widctl %v: exit %d, stderr %q; want one line saying %q", tt.args, r.code, r.stderr, tt.want)
		}
	}
	// A file past a year is refused by the auth service itself.
	doc := `kind: lock
version: v1
metadata: {name: far}
spec:
  target: {bot: a}
  reason: x
  expires: "` + time.Now().Add(400*24*time.Hour).UTC().Format(time.RFC3339) + `"
`
	r := auth.widctlIn(doc, "create", "-f", "-")
	if r.code == 0 || !strings.Contains(r.stderr, "past a year") {
		t.Errorf("create -f of a lock past a year: exit %d, stderr %q", r.code, r.stderr)
	}
	if out := auth.widctl("lock", "ls").must(t); strings.TrimSpace(out.stdout) != "" {
		t.Errorf("a refused lock was stored:\n%s", out.stdout)
	}
}

// A SPIFFE ID lock reaches the agent with its state: the agent stops
// serving the locked SVID at once (the workload's other SVID stays), a
// JWT-SVID of the locked ID fails validation, and lock rm brings it back.
func TestLockSPIFFEIDStopsAgentServingIt(t *testing.T) {
	t.Parallel()
	a := startAgent(t, newDataDir(t))
	a.widctl("workload-identity", "create", "pay", "--spiffe-id", "/svc/pay", "--rule", "workload.unix.uid="+uid).must(t)
	a.widctl("workload-identity", "create", "other", "--spiffe-id", "/svc/other", "--rule", "workload.unix.uid="+uid).must(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+a.workload))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pay := "spiffe://" + a.td + "/svc/pay"
	ids := func() []string {
		svids, err := c.FetchX509SVIDs(ctx)
		if err != nil {
			return []string{err.Error()}
		}
		var out []string
		for _, s := range svids {
			out = append(out, s.ID.String())
		}
		return out
	}
	other := "spiffe://" + a.td + "/svc/other"
	var got []string
	if !testkit.WithinEvery(20*time.Second, 100*time.Millisecond, func() bool {
		got = ids()
		return slices.Contains(got, pay) && slices.Contains(got, other)
	}) {
		t.Fatalf("the workload does not get both SVIDs: %v", got)
	}
	payID, _ := spiffeid.FromString(pay)
	tok, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "bank", Subject: payID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ValidateJWTSVID(ctx, tok.Marshal(), "bank"); err != nil {
		t.Fatal(err)
	}

	a.widctl("lock", "create", "--spiffe-id", "/svc/pay", "--reason", "key leaked", "--name", "pay").must(t)
	locked := time.Now()
	if !testkit.WithinEvery(time.Second, 20*time.Millisecond, func() bool {
		got = ids()
		return !slices.Contains(got, pay) && slices.Contains(got, other)
	}) {
		t.Fatalf("a second after the lock the workload still gets %v", got)
	}
	if _, err := c.ValidateJWTSVID(ctx, tok.Marshal(), "bank"); err == nil || !strings.Contains(err.Error(), "key leaked") {
		t.Fatalf("a JWT-SVID of a locked ID validated: %v", err)
	}

	// A token's iat has whole seconds: one of the second the lock was
	// made in counts as issued before it.
	testkit.EventuallyEvery(t, 3*time.Second, 20*time.Millisecond, func() bool {
		return time.Now().After(locked.Truncate(time.Second).Add(time.Second))
	}, "the clock did not pass the second of the lock")
	a.widctl("lock", "rm", "pay").must(t)
	if !testkit.WithinEvery(20*time.Second, 100*time.Millisecond, func() bool {
		got = ids()
		return slices.Contains(got, pay)
	}) {
		t.Fatalf("after lock rm the workload still lacks %s: %v", pay, got)
	}
	// The lock revoked the ID: a token issued before it still fails,
	// saying when, until it expires; a token issued since validates.
	if _, err := c.ValidateJWTSVID(ctx, tok.Marshal(), "bank"); err == nil || !strings.Contains(err.Error(), "was revoked at") {
		t.Fatalf("after lock rm a JWT-SVID issued before the lock: %v, want refused as revoked", err)
	}
	fresh, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "bank", Subject: payID})
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Marshal() == tok.Marshal() {
		t.Fatal("after lock rm the agent serves the JWT-SVID issued before the lock")
	}
	if _, err := c.ValidateJWTSVID(ctx, fresh.Marshal(), "bank"); err != nil {
		t.Fatalf("a JWT-SVID issued after lock rm: %v", err)
	}
}
