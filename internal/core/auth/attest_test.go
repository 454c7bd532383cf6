package auth_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestRecordAttestations(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	create(t, srv, agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**"))
	bot := joinedBot(t, srv, "agent", "prod-agent")
	watch(t, bot, "node-7").next(t, 5*time.Second)
	when := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	req := &authv1.RecordAttestationsRequest{Host: "node-7", Attestations: []*authv1.Attestation{
		{
			Id: "a1", Time: timestamppb.New(when), Attributes: map[string]string{"workload.unix.uid": "1000"},
			SpiffeIds: []string{"spiffe://example.org/svc/web", "spiffe://example.org/svc/api"}, Outcome: "success", Method: "FetchX509SVID",
		},
		{
			Id: "a2", Time: timestamppb.New(when.Add(time.Second)), Attributes: map[string]string{"workload.unix.uid": "0"},
			Outcome: "denied", Reason: `workload identity "web" does not match: workload.unix.uid is "0", not "1000"`, Method: "FetchJWTSVID",
		},
	}}
	if _, err := bot.RecordAttestations(ctx, req); err != nil {
		t.Fatalf("RecordAttestations: %v", err)
	}
	// A retried batch (the answer was lost) is recorded once, also when two
	// copies race.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if _, err := bot.RecordAttestations(ctx, req); err != nil {
				t.Errorf("RecordAttestations again: %v", err)
			}
		})
	}
	wg.Wait()

	evs := auditTypes(t, srv, "workload.attest")
	if len(evs) != 2 {
		t.Fatalf("%d workload.attest events, want 2", len(evs))
	}
	ok, denied := evs[0], evs[1]
	if ok.Actor != "bot:agent" || ok.Host != "node-7" || !ok.Time.AsTime().Equal(when) || ok.Outcome != "success" ||
		ok.Attributes["workload.unix.uid"] != "1000" || ok.SpiffeId != "spiffe://example.org/svc/web" ||
		ok.Details["spiffe_ids"] != "spiffe://example.org/svc/web,spiffe://example.org/svc/api" || ok.Details["method"] != "FetchX509SVID" {
		t.Errorf("success event %+v", ok)
	}
	if denied.Outcome != "denied" || !strings.Contains(denied.Reason, `not "1000"`) || denied.Attributes["workload.unix.uid"] != "0" || denied.SpiffeId != "" || denied.Details["method"] != "FetchJWTSVID" {
		t.Errorf("denied event %+v", denied)
	}

	// A new id in a batch of old ones is recorded.
	req.Attestations = append(req.Attestations, &authv1.Attestation{Id: "a3", Outcome: "denied", Reason: "no identity"})
	if _, err := bot.RecordAttestations(ctx, req); err != nil {
		t.Fatal(err)
	}
	if n := len(auditTypes(t, srv, "workload.attest")); n != 3 {
		t.Fatalf("%d workload.attest events after adding one, want 3", n)
	}
}

func TestRecordAttestationsRefuses(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	create(t, srv, agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**"))
	bot := joinedBot(t, srv, "agent", "prod-agent")
	watch(t, bot, "").next(t, 5*time.Second)
	many := make([]*authv1.Attestation, 10001)
	for i := range many {
		many[i] = &authv1.Attestation{Id: fmt.Sprint(i), Outcome: "denied"}
	}
	_, err := bot.RecordAttestations(ctx, &authv1.RecordAttestationsRequest{Attestations: many})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "attestations is 10001 items long, over the limit of 10000 items") {
		t.Errorf("10001 attestations: %v", err)
	}
	_, err = bot.RecordAttestations(ctx, &authv1.RecordAttestationsRequest{Attestations: []*authv1.Attestation{{Id: "x", Outcome: "maybe"}}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), `outcome "maybe"`) {
		t.Errorf("unknown outcome: %v", err)
	}
	_, err = srv.AdminClient(t).RecordAttestations(ctx, &authv1.RecordAttestationsRequest{Attestations: []*authv1.Attestation{{Id: "x"}}})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("admin RecordAttestations: %v", err)
	}
	if n := len(auditTypes(t, srv, "workload.attest")); n != 0 {
		t.Errorf("refused requests recorded %d attestations", n)
	}
	// The "x" refused for its outcome was not remembered: it can be sent right.
	if _, err := bot.RecordAttestations(ctx, &authv1.RecordAttestationsRequest{Attestations: []*authv1.Attestation{{Id: "x", Outcome: "denied"}}}); err != nil {
		t.Fatal(err)
	}
	if n := len(auditTypes(t, srv, "workload.attest")); n != 1 {
		t.Errorf("%d attestations recorded, want 1", n)
	}
}

// A bot records only what its agent could have seen: it must hold the agent
// permission, follow the auth service from the host it names, credit
// workloads only with SPIFFE IDs it may issue, and cannot date events far
// from now. Every refusal is audited.
func TestRecordAttestationsOnlyWhatTheAgentCouldSee(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	create(t, srv, agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/web/**"), roleDoc(t, "nothing", grant("/svc/web/**")))
	attest := func(id, spiffeID string, when time.Time) *authv1.RecordAttestationsRequest {
		return &authv1.RecordAttestationsRequest{Host: "node-1", Attestations: []*authv1.Attestation{{
			Id: id, Time: timestamppb.New(when), SpiffeIds: []string{spiffeID}, Outcome: "success", Method: "FetchX509SVID",
			Attributes: map[string]string{"workload.unix.uid": "0"},
		}}}
	}
	denials := func() int { return len(auditTypes(t, srv, "access.denied")) }
	monthAgo := time.Now().Add(-30 * 24 * time.Hour)

	// A bot without the agent permission (no workload identity rights).
	plain := joinedBot(t, srv, "plain", "nothing")
	before := denials()
	if _, err := plain.RecordAttestations(ctx, attest("p1", "spiffe://example.org/svc/admin", monthAgo)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a bot with no agent rights: %v, want PermissionDenied", err)
	}
	if denials() <= before {
		t.Error("the refusal of a bot with no agent rights was not audited")
	}

	agent := joinedBot(t, srv, "agent", "prod-agent")
	// A host the bot does not follow the auth service from.
	_, err := agent.RecordAttestations(ctx, attest("h1", "spiffe://example.org/svc/web/a", time.Now()))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), `no state stream open from host "node-1"`) {
		t.Fatalf("a host the agent does not follow from: %v", err)
	}
	watch(t, agent, "node-1").next(t, 5*time.Second)

	// An ID the bot may not issue.
	before = denials()
	_, err = agent.RecordAttestations(ctx, attest("i1", "spiffe://example.org/svc/admin", time.Now()))
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "credits a workload with spiffe://example.org/svc/admin, which bot \"agent\" may not issue") {
		t.Fatalf("an ID the bot may not issue: %v", err)
	}
	if denials() <= before {
		t.Error("the refusal of an ID the bot may not issue was not audited")
	}
	_, err = agent.RecordAttestations(ctx, attest("i2", "spiffe://evil.org/svc/web/a", time.Now()))
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an ID of another trust domain: %v", err)
	}

	// A time a month back is not the event's time.
	if _, err := agent.RecordAttestations(ctx, attest("t1", "spiffe://example.org/svc/web/a", monthAgo)); err != nil {
		t.Fatalf("a good attestation with an old time: %v", err)
	}
	evs := auditTypes(t, srv, "workload.attest")
	if len(evs) != 1 {
		t.Fatalf("%d workload.attest events, want 1: %v", len(evs), evs)
	}
	if got := evs[0].Time.AsTime(); time.Since(got) > time.Minute || evs[0].Details["agent_time"] == "" {
		t.Fatalf("an attestation dated a month back was recorded at %s with details %v, want now and the agent's time apart", got, evs[0].Details)
	}
}
