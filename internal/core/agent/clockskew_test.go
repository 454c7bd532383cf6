package agent_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/wid-project/wid/internal/core/agent"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/testkit"
)

// TestClockSkewToTheAuthService runs the auth service with a clock 20
// minutes behind the agent's and a 5-minute X509-SVID: on the agent's clock
// every SVID would have expired when issued. The agent counts the lifetime
// from the auth service's answer instead, serves the SVID, and warns of the
// skew.
func TestClockSkewToTheAuthService(t *testing.T) {
	const behind = 20 * time.Minute
	var logs testkit.SyncBuffer
	e := startWithAuth(t, []authtest.Option{authtest.WithClock(func() time.Time { return time.Now().Add(-behind) })},
		func(c *agent.Config) {
			c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		})
	wi := identity("me", "/uid/{{ workload.unix.uid }}", "me", eq("workload.unix.uid", uid))
	wi.Spec.X509.TTL = resource.Duration(5 * time.Minute)
	e.create(t, wi)
	ctx := ctxT(t, 20*time.Second)
	var x *workloadapi.X509Context
	testkit.Succeeds(t, 10*time.Second, func() (err error) {
		x, err = workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(e.addr))
		return err
	}, "with the auth service's clock %s behind, no X509-SVID was served", behind)
	life := x.DefaultSVID().Certificates[0].NotAfter.Sub(x.DefaultSVID().Certificates[0].NotBefore)
	t.Logf("served an X509-SVID of %s issued by an auth service %s behind", life, behind)
	if skew := metric(t, e, "wid_agent_auth_clock_skew_seconds"); skew > -behind.Seconds()+5 || skew < -behind.Seconds()-5 {
		t.Fatalf("wid_agent_auth_clock_skew_seconds is %v, want about %v", skew, -behind.Seconds())
	}
	if out := logs.String(); !strings.Contains(out, "clock") || !strings.Contains(out, "auth_ahead_by=-20m") {
		t.Fatalf("the agent's log does not warn of the clock skew:\n%s", out)
	}
}
