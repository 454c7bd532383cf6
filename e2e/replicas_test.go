package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/store/postgres/pgtest"
	"github.com/wid-project/wid/internal/testkit"
)

// replicaDataDir makes a data dir for another auth replica of first: a
// copy of first's keys/ (the key encryption key every replica needs and
// the anchor its store is checked against), as an operator copies them.
func replicaDataDir(t *testing.T, first *agent) string {
	t.Helper()
	dir := newDataDir(t)
	keys := filepath.Join(dir, "keys")
	if err := os.MkdirAll(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ca.key", "anchor"} {
		b, err := os.ReadFile(filepath.Join(first.dataDir, "keys", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(keys, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// verifyAudit runs widctl audit verify on a and fails unless the log is intact.
func verifyAudit(t *testing.T, a *agent) (head int64) {
	t.Helper()
	r := a.widctl("audit", "verify", "--format", "json").must(t)
	var v struct {
		OK      bool  `json:"ok"`
		HeadSeq int64 `json:"head_seq"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || !v.OK {
		t.Fatalf("audit verify: %v\n%s", err, r.stdout)
	}
	return v.HeadSeq
}

// TestReplicasShareOneAuditChainThroughKill9: three auth replicas on one
// PostgreSQL database take writes at once, one of them is killed with
// SIGKILL in the middle, and the audit chain verifies on every replica,
// holding each acknowledged change exactly once; the killed replica
// starts again on its data dir.
func TestReplicasShareOneAuditChainThroughKill9(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.Database(t)
	first := startAgent(t, newDataDir(t), "--roles", "auth", "--store", dbURL)
	rs := []*agent{first}
	dirs := []string{first.dataDir}
	for range 2 {
		dir := replicaDataDir(t, first)
		dirs = append(dirs, dir)
		rs = append(rs, startAgent(t, dir, "--roles", "auth", "--store", dbURL))
	}
	for i, r := range rs[1:] {
		if r.td != first.td || r.pin != first.pin {
			t.Fatalf("replica %d serves trust domain %q pin %s, want %q %s", i+1, r.td, r.pin, first.td, first.pin)
		}
	}

	const perReplica = 6
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created []string
	)
	for i, r := range rs {
		for j := range perReplica {
			wg.Go(func() {
				name := fmt.Sprintf("r%d-%d", i, j)
				res := r.widctl("role", "create", name, "--spiffe-path", "/svc/"+name)
				mu.Lock()
				defer mu.Unlock()
				if res.code == 0 {
					created = append(created, name)
				} else if i != 1 {
					t.Errorf("creating role %s on live replica %d: %s", name, i, res.stderr)
				}
			})
		}
	}
	// Replica 1 dies in the middle of its writes: once one has gone through.
	testkit.Eventually(t, 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(strings.Join(created, ","), "r1-")
	}, "no write went through replica 1")
	rs[1].kill()
	wg.Wait()

	for _, i := range []int{0, 2} {
		verifyAudit(t, rs[i])
	}
	r := rs[2].widctl("audit", "ls", "--type", "resource.created", "--format", "json").must(t)
	var evs []struct {
		Resource string `json:"resource"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &evs); err != nil {
		t.Fatalf("audit ls: %v\n%s", err, r.stdout)
	}
	count := map[string]int{}
	for _, ev := range evs {
		count[strings.TrimPrefix(ev.Resource, "role/")]++
	}
	for name, n := range count {
		if n > 1 {
			t.Errorf("the creation of role %s is audited %d times", name, n)
		}
	}
	for _, name := range created {
		if count[name] != 1 {
			t.Errorf("role %s was created but its creation is audited %d times", name, count[name])
		}
	}
	t.Logf("%d roles created, %d creations audited", len(created), len(evs))

	back := startAgent(t, dirs[1], "--roles", "auth", "--store", dbURL)
	verifyAudit(t, back)
}

// leaseHolder waits until one of rs says it took the periodic lease after
// it had written `after` bytes of log, and returns it.
func leaseHolder(t *testing.T, rs []*agent, after []int) *agent {
	t.Helper()
	var holder *agent
	testkit.Eventually(t, 30*time.Second, func() bool {
		for i, r := range rs {
			if strings.Contains(r.out.String()[after[i]:], "took the lease") {
				holder = r
				return true
			}
		}
		return false
	}, "no replica took the periodic lease")
	return holder
}

// TestAutomaticRotationSurvivesKill9OfItsDriver: of three auth replicas
// one drives automatic rotations; it is killed with SIGKILL in the middle
// of one started through another replica, and another replica takes the
// driving over within seconds and finishes it, each step taken once, while
// go-spiffe workloads on two agents (each given every replica) make an
// mTLS handshake with each other every 50 ms and none fails.
func TestAutomaticRotationSurvivesKill9OfItsDriver(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.Database(t)
	first := startAgent(t, newDataDir(t), "--roles", "auth", "--store", dbURL)
	rs := []*agent{first}
	for range 2 {
		rs = append(rs, startAgent(t, replicaDataDir(t, first), "--roles", "auth", "--store", dbURL))
	}
	lowerSVIDTTL(t, first, "6s")
	driver := leaseHolder(t, rs, []int{0, 0, 0})
	var others []*agent
	for _, r := range rs {
		if r != driver {
			others = append(others, r)
		}
	}
	// Two agents, each given every replica, one the driver first and so
	// following the replica that is killed, and a go-spiffe workload on
	// each making an mTLS handshake with the other every 50 ms throughout.
	first.widctl("workload-identity", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid="+uid).must(t)
	onDriver := startFollower(t, first, "edge-driver", driver.addr+","+others[0].addr+","+others[1].addr)
	onOther := startFollower(t, first, "edge-other", others[1].addr+","+driver.addr+","+others[0].addr)
	if addr, _ := onDriver.followed(); addr != driver.addr {
		t.Fatalf("the agent given the driver first follows %s, not the driver %s", addr, driver.addr)
	}
	tr := startTrafficBetween(t, onDriver.workload, onOther.workload, spiffeid.RequireTrustDomainFromString(first.td))
	defer tr.stop()
	tr.waitHandshakes(5)
	tr.check("before rotating")
	others[0].widctl("ca", "rotate", "--type", "spiffe", "--grace-period", "8s").must(t)
	start := time.Now()
	testkit.EventuallyEvery(t, 30*time.Second, 100*time.Millisecond, func() bool {
		phase, _ := caState(t, others[1], "spiffe")
		return phase != "init"
	}, "the automatic rotation never left init")
	marks := []int{len(others[0].out.String()), len(others[1].out.String())}
	_, followings := onDriver.followed()
	driver.kill()
	killed := time.Now()
	next := leaseHolder(t, others, marks)
	t.Logf("another replica took the lease %s after the driver's kill -9", time.Since(killed).Round(10*time.Millisecond))
	if addr, _ := onDriver.waitFollowing(t, followings, 15*time.Second); addr == driver.addr {
		t.Fatalf("the agent that followed the killed driver follows it again: %s", addr)
	}
	testkit.EventuallyEvery(t, time.Until(start.Add(60*time.Second)), 200*time.Millisecond, func() bool {
		phase, seq := caState(t, next, "spiffe")
		return phase == "standby" && seq >= 3
	}, "the automatic rotation did not finish after its driver was killed")
	t.Logf("the rotation finished %s after it started", time.Since(start).Round(100*time.Millisecond))
	tr.waitHandshakes(10)
	tr.check("an automatic rotation whose driver was killed")
	for _, r := range others {
		verifyAudit(t, r)
	}
	res := others[0].widctl("audit", "ls", "--type", "ca.rotation", "--outcome", "success", "--format", "json").must(t)
	var evs []struct {
		Details map[string]string `json:"details"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &evs); err != nil {
		t.Fatalf("audit ls: %v\n%s", err, res.stdout)
	}
	steps := map[string]int{}
	for _, ev := range evs {
		steps[ev.Details["to"]]++
	}
	for _, to := range []string{"init", "update_clients", "update_servers", "standby"} {
		if steps[to] != 1 {
			t.Errorf("the step to %s is audited %d times, want once (%v)", to, steps[to], steps)
		}
	}
}

// TestTokensAndLockoutsAcrossReplicas: a single-use join token raced on two
// replicas admits exactly one agent, and 20 parallel wrong logins for one
// user spread over three replicas lock it exactly as on one: five
// failures, then fifteen "locked".
func TestTokensAndLockoutsAcrossReplicas(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.Database(t)
	first := startAgent(t, newDataDir(t), "--roles", "auth", "--store", dbURL)
	rs := []*agent{first}
	for range 2 {
		rs = append(rs, startAgent(t, replicaDataDir(t, first), "--roles", "auth", "--store", dbURL))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dial := func(a *agent) *client.Client {
		c, err := client.Dial(client.Config{Auth: a.addr, CAPin: a.pin})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	first.widctl("bot", "add", "edge", "--roles", "local-agent").must(t)
	for round := range 5 {
		tok := tokenFrom(t, rs[round%3].widctl("token", "add", "--bot", "edge").must(t))
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			admitted int
		)
		start := make(chan struct{})
		for _, r := range []*agent{rs[1], rs[2]} {
			c := dial(r)
			key, _ := client.NewKey()
			csr, _ := client.NewCSR(key)
			wg.Go(func() {
				<-start
				_, err := c.Join(ctx, &authv1.JoinRequest{Token: tok, Csr: csr, Host: "racer"})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					admitted++
				case status.Code(err) != codes.PermissionDenied:
					t.Errorf("the join that lost: %v, want PermissionDenied", err)
				}
			})
		}
		close(start)
		wg.Wait()
		if admitted != 1 {
			t.Fatalf("round %d: a single-use token raced on two replicas admitted %d agents", round, admitted)
		}
	}

	first.widctl("role", "create", "dev", "--spiffe-path", "/team/alice/**").must(t)
	added := first.widctl("user", "add", "alice", "--roles", "dev").must(t)
	invite := inviteRE.FindStringSubmatch(added.stdout)
	if invite == nil {
		t.Fatalf("user add printed no invite:\n%s", added.stdout)
	}
	const password = "correct horse battery staple"
	login := func(c *client.Client, req *authv1.LoginRequest) error {
		key, _ := client.NewKey()
		req.Csr, _ = client.NewCSR(key)
		// A replica checks one or two hashes at once and refuses the rest
		// for load, not counted: those are asked again until checked.
		for {
			_, err := c.Login(ctx, req)
			if status.Code(err) != codes.ResourceExhausted || ctx.Err() != nil {
				return err
			}
			// Pacing a retry the replica asked for (it was busy), as a
			// client would; nothing to wait on.
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err := login(dial(rs[2]), &authv1.LoginRequest{User: "alice", Invite: invite[1], Password: password}); err != nil {
		t.Fatalf("alice's first login: %v", err)
	}
	clients := []*client.Client{dial(rs[0]), dial(rs[1]), dial(rs[2])}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		counts = map[codes.Code]int{}
	)
	start := make(chan struct{})
	for i := range 20 {
		wg.Go(func() {
			<-start
			err := login(clients[i%3], &authv1.LoginRequest{User: "alice", Password: fmt.Sprintf("wrong guess %d", i)})
			mu.Lock()
			counts[status.Code(err)]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	if counts[codes.Unauthenticated] != 5 || counts[codes.PermissionDenied] != 15 {
		t.Fatalf("20 parallel wrong logins over 3 replicas answered %v, want 5 failures and 15 locked", counts)
	}
	for i, c := range clients {
		if err := login(c, &authv1.LoginRequest{User: "alice", Password: password}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("replica %d let the locked user in: %v", i, err)
		}
	}
	verifyAudit(t, rs[1])
}
