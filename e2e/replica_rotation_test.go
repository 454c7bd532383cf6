package e2e

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wid-project/wid/internal/testkit"
)

// startFollower joins an agent through via as a new bot named bot, with
// auth as its --auth list, and waits until it follows one of them.
func startFollower(t *testing.T, via *agent, bot, auth string) *agent {
	t.Helper()
	tok := tokenFrom(t, via.widctl("bot", "add", bot, "--roles", "local-agent").must(t))
	ag := startAgent(t, newDataDir(t), "--roles", "agent", "--auth", auth, "--join-token", tok, "--ca-pin", via.pin)
	ag.waitFollowing(t, 0, 30*time.Second)
	return ag
}

// waitRotated waits until typ's CA, seen through a, is back in standby
// at a sequence past from.
func waitRotated(t *testing.T, a *agent, typ string, from int64, within time.Duration) {
	t.Helper()
	var phase string
	var seq int64
	if !testkit.WithinEvery(within, 200*time.Millisecond, func() bool {
		phase, seq = caState(t, a, typ)
		return phase == "standby" && seq > from
	}) {
		t.Fatalf("the %s CA is still in %s (sequence %d, was %d) after %s", typ, phase, seq, from, within)
	}
}

// TestRotationAcrossReplicasNoWorkloadNotices: three auth replicas on one
// PostgreSQL database; two agents follow replicas B and C only, and a
// go-spiffe workload on each makes an mTLS handshake with the other every
// 50 ms (spiffetls), while the spiffe and jwt CAs are rotated through
// replica A: step by step by hand, rushed (each phase asked again every
// 200 ms until the gate, which must see the agents of B and C, lets it
// through), and automatically. No handshake or JWT validation fails.
func TestRotationAcrossReplicasNoWorkloadNotices(t *testing.T) {
	t.Parallel()
	rs := startReplicas(t, 3)
	a := rs.r[0]
	lowerSVIDTTL(t, a, "6s")
	a.widctl("workload-identity", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid="+uid).must(t)
	agB := startFollower(t, a, "edge-b", rs.addrs[1])
	agC := startFollower(t, a, "edge-c", rs.addrs[2])
	td := spiffeid.RequireTrustDomainFromString(rs.td)
	tr := startTrafficBetween(t, agB.workload, agC.workload, td)
	defer tr.stop()
	tr.waitHandshakes(5)
	tr.check("before rotating")
	// Replica A's gate sees the agents connected to B and C, through the
	// reports they make there.
	var status string
	if !testkit.WithinEvery(20*time.Second, 100*time.Millisecond, func() bool {
		var st []struct {
			Agents []agentStatus `json:"agents"`
		}
		r := a.widctl("ca", "status", "--type", "spiffe", "--format", "json").must(t)
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st) != 1 {
			t.Fatalf("ca status --format json: %v\n%s", err, r.stdout)
		}
		status = r.stdout
		bots := map[string]bool{}
		for _, s := range st[0].Agents {
			bots[s.Bot] = true
		}
		return bots["edge-b"] && bots["edge-c"]
	}) {
		t.Fatalf("replica A's ca status does not show the agents of replicas B and C:\n%s", status)
	}

	full := []string{"init", "update_clients", "update_servers", "standby"}
	run := func(name string, pause time.Duration) {
		refused := 0
		for _, p := range full {
			for _, typ := range []string{"spiffe", "jwt"} {
				refused += rotateTo(t, a, typ, p)
			}
			if pause > 0 {
				tr.waitHandshakes(int64(pause / (50 * time.Millisecond)))
			}
		}
		for _, typ := range []string{"spiffe", "jwt"} {
			if phase, _ := caState(t, rs.r[1], typ); phase != "standby" {
				t.Fatalf("%s: replica B sees the %s CA in %s, want standby", name, typ, phase)
			}
		}
		tr.waitHandshakes(10)
		tr.check(fmt.Sprintf("%s through replica A (%d steps refused while the agents of B and C caught up)", name, refused))
	}
	run("manual rotation", 500*time.Millisecond)
	run("rushed rotation", 0)

	start := time.Now()
	seqs := map[string]int64{}
	for _, typ := range []string{"spiffe", "jwt"} {
		_, seqs[typ] = caState(t, a, typ)
		a.widctl("ca", "rotate", "--type", typ, "--grace-period", "8s").must(t)
	}
	for _, typ := range []string{"spiffe", "jwt"} {
		waitRotated(t, rs.r[2], typ, seqs[typ], 40*time.Second)
	}
	t.Logf("both automatic rotations done in %s", time.Since(start).Round(time.Millisecond))
	tr.waitHandshakes(10)
	tr.check("automatic rotation through replica A")
	for _, ag := range []*agent{agB, agC} {
		select {
		case <-ag.exited:
			t.Fatalf("an agent exited:\n%s", ag.out)
		default:
		}
	}
	for i := range rs.r {
		verifyAudit(t, rs.r[i])
	}
}
