package auth_test

import (
	"context"
	"strings"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/testkit"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// An agent's report answers the CA step it was made under. A report from
// before a step must not let the next one through, even when it names the
// key that signs again (a rollback returns to the key that signed at init).
func TestRotationGateNeedsReportsOfTheCurrentStep(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	admin := srv.AdminClient(t)
	create(t, srv, agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**"))
	bot := joinedBot(t, srv, "agent", "prod-agent")
	stream := watch(t, bot, "node-1")
	stream.next(t, time.Second)

	rotate := func(phase string, force bool) error {
		_, err := admin.RotateCA(ctx, &authv1.RotateCARequest{Type: "spiffe", Phase: phase, Force: force})
		return err
	}
	// report answers the state last pushed, claiming every SVID is signed by signer.
	report := func(st *authv1.AgentState, signer string) {
		t.Helper()
		req := &authv1.ReportAgentStatusRequest{Host: "node-1", Sequences: map[string]int64{}, Generations: map[string]int64{}, SignedBy: map[string]string{"spiffe": signer}}
		for typ, c := range st.Cas {
			req.Sequences[typ], req.Generations[typ] = c.Sequence, c.Generation
		}
		if _, err := bot.ReportAgentStatus(ctx, req); err != nil {
			t.Fatal(err)
		}
	}

	if err := rotate("init", false); err != nil {
		t.Fatal(err)
	}
	atInit := stream.next(t, time.Second)
	oldSigner := atInit.Cas["spiffe"].ActiveSignerId
	// Until the agent reports the new bundle, update_clients waits for it.
	err := rotate("update_clients", false)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `bot "agent" on node-1`) {
		t.Fatalf("update_clients before the agent reported: %v, want a refusal naming the agent", err)
	}
	report(atInit, oldSigner)
	if err := rotate("update_clients", false); err != nil {
		t.Fatalf("update_clients after the agent reported: %v", err)
	}
	atUpdate := stream.next(t, time.Second)
	if atUpdate.Cas["spiffe"].ActiveSignerId == oldSigner || atUpdate.Cas["spiffe"].Generation <= atInit.Cas["spiffe"].Generation {
		t.Fatalf("update_clients pushed signer %s generation %d", atUpdate.Cas["spiffe"].ActiveSignerId, atUpdate.Cas["spiffe"].Generation)
	}
	// The agent renews from the new key (it reports so), then the operator rolls back.
	report(atUpdate, atUpdate.Cas["spiffe"].ActiveSignerId)
	if err := rotate("rollback", false); err != nil {
		t.Fatal(err)
	}
	atRollback := stream.next(t, time.Second)
	// The report made at init names the old key, which signs again; it is
	// stale all the same, and standby must wait for a fresh one.
	report(atInit, oldSigner)
	err = rotate("standby", false)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "has not answered the spiffe CA's last step") {
		t.Fatalf("standby on a report from before the rollback: %v, want a refusal", err)
	}
	// A fresh report that still names the new key also waits.
	report(atRollback, atUpdate.Cas["spiffe"].ActiveSignerId)
	if err := rotate("standby", false); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "signed by the other key") {
		t.Fatalf("standby while the agent serves SVIDs of the new key: %v, want a refusal", err)
	}
	// Renewed from the old key: the new key may leave, but not before the
	// agent's workloads have had a moment to take the renewed SVIDs up.
	report(atRollback, oldSigner)
	if err := rotate("standby", false); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "gives its workloads") {
		t.Fatalf("standby right after the agent renewed: %v, want a refusal that waits for its workloads", err)
	}
	// Then the rollback completes by itself.
	testkit.Eventually(t, 5*time.Second, func() bool {
		resp, err := admin.ListCAs(ctx, &authv1.ListCAsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Cas[0].Phase == "standby"
	}, "the rollback never completed")
}
