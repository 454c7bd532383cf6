package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/wid-project/wid/internal/testkit"
)

// traffic is what a rotation must not disturb: two workloads holding
// X509Sources that make a new mTLS connection every 50 ms, and a third that
// fetches and validates a fresh JWT-SVID every 50 ms.
type traffic struct {
	t                    *testing.T
	cancel               context.CancelFunc
	wg                   sync.WaitGroup
	handshakes, jwts     atomic.Int64
	failures             atomic.Int64
	mu                   sync.Mutex
	firstErrs            []string
	serverSrc, clientSrc *workloadapi.X509Source
	jwtSrc               *workloadapi.JWTSource
	lis                  net.Listener
}

func startTraffic(t *testing.T, socket string, td spiffeid.TrustDomain) *traffic {
	t.Helper()
	return startTrafficBetween(t, socket, socket, td)
}

// startTrafficBetween is traffic whose server workload gets its SVIDs from
// the agent at serverSocket and whose client and JWT workloads get theirs
// from the agent at clientSocket, so that each handshake needs both
// agents' views of the trust domain to agree.
func startTrafficBetween(t *testing.T, serverSocket, clientSocket string, td spiffeid.TrustDomain) *traffic {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr := &traffic{t: t, cancel: cancel}
	serverOpt := workloadapi.WithClientOptions(workloadapi.WithAddr("unix://" + serverSocket))
	opt := workloadapi.WithClientOptions(workloadapi.WithAddr("unix://" + clientSocket))
	var err error
	startCtx, startCancel := context.WithTimeout(ctx, 30*time.Second)
	defer startCancel()
	if tr.serverSrc, err = workloadapi.NewX509Source(startCtx, serverOpt); err != nil {
		t.Fatalf("server X509Source: %v", err)
	}
	if tr.clientSrc, err = workloadapi.NewX509Source(startCtx, opt); err != nil {
		t.Fatalf("client X509Source: %v", err)
	}
	if tr.jwtSrc, err = workloadapi.NewJWTSource(startCtx, opt); err != nil {
		t.Fatalf("JWTSource: %v", err)
	}
	authz := tlsconfig.AuthorizeMemberOf(td)
	tr.lis, err = spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0", spiffetls.MTLSServerWithSource(authz, tr.serverSrc))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	tr.wg.Add(3)
	go func() {
		defer tr.wg.Done()
		for {
			c, err := tr.lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 1)
				if _, err := io.ReadFull(c, buf); err == nil {
					_, _ = c.Write(buf)
				}
			}()
		}
	}()
	go func() {
		defer tr.wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			tr.record("mtls", tr.handshake(ctx, authz), &tr.handshakes)
		}
	}()
	go func() {
		defer tr.wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			tr.record("jwt", tr.validateJWT(ctx), &tr.jwts)
		}
	}()
	return tr
}

func (tr *traffic) handshake(ctx context.Context, authz tlsconfig.Authorizer) error {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := spiffetls.DialWithMode(dctx, "tcp", tr.lis.Addr().String(), spiffetls.MTLSClientWithSource(authz, tr.clientSrc))
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{7}); err != nil {
		return err
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("reading the echo (the server refused the handshake?): %w", err)
	}
	return nil
}

func (tr *traffic) validateJWT(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	svid, err := tr.jwtSrc.FetchJWTSVID(fctx, jwtsvid.Params{Audience: "rotation"})
	if err != nil {
		return fmt.Errorf("fetching: %w", err)
	}
	_, err = jwtsvid.ParseAndValidate(svid.Marshal(), tr.jwtSrc, []string{"rotation"})
	return err
}

func (tr *traffic) record(what string, err error, ok *atomic.Int64) {
	if err == nil {
		ok.Add(1)
		return
	}
	if errors := tr.failures.Add(1); errors <= 5 {
		tr.mu.Lock()
		tr.firstErrs = append(tr.firstErrs, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), what, err))
		tr.mu.Unlock()
	}
}

// settle waits until the traffic has made n more handshakes and n more JWT
// validations, so that a check covers traffic under the state now served.
func (tr *traffic) settle(n int64) {
	tr.t.Helper()
	h, j := tr.handshakes.Load()+n, tr.jwts.Load()+n
	testkit.Eventually(tr.t, 30*time.Second, func() bool {
		return tr.handshakes.Load()+tr.failures.Load() >= h && tr.jwts.Load()+tr.failures.Load() >= j
	}, "the traffic made %d more handshakes and JWT validations", n)
}

// check fails the test if anything failed since the last check.
func (tr *traffic) check(what string) {
	tr.t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if n := tr.failures.Swap(0); n > 0 {
		tr.t.Errorf("%s: %d failed handshakes or validations; first: %s", what, n, strings.Join(tr.firstErrs, "; "))
	}
	tr.firstErrs = nil
	tr.t.Logf("%s: %d handshakes, %d JWT validations so far, none failed", what, tr.handshakes.Load(), tr.jwts.Load())
}

func (tr *traffic) stop() {
	tr.cancel()
	tr.lis.Close()
	tr.wg.Wait()
	tr.serverSrc.Close()
	tr.clientSrc.Close()
	tr.jwtSrc.Close()
}

// caState reads one CA from widctl ca ls.
func caState(t *testing.T, a *agent, typ string) (phase string, seq int64) {
	t.Helper()
	var cas []struct {
		Type     string `json:"type"`
		Phase    string `json:"phase"`
		Sequence int64  `json:"sequence"`
	}
	r := a.widctl("ca", "ls", "--format", "json").must(t)
	if err := json.Unmarshal([]byte(r.stdout), &cas); err != nil {
		t.Fatalf("ca ls --format json: %v\n%s", err, r.stdout)
	}
	for _, c := range cas {
		if c.Type == typ {
			return c.Phase, c.Sequence
		}
	}
	t.Fatalf("ca ls has no %s CA", typ)
	return "", 0
}

// rotateTo asks for phase every 200 ms until the auth service takes it; a
// refusal must be the gate's (agents lag), never anything else.
func rotateTo(t *testing.T, a *agent, typ, phase string) (refusals int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := a.widctl("ca", "rotate", "--type", typ, "--phase", phase)
		if r.code == 0 {
			return refusals
		}
		if !strings.Contains(r.stderr, "lag") || time.Now().After(deadline) {
			t.Fatalf("ca rotate --type %s --phase %s: exit %d: %s", typ, phase, r.code, r.stderr)
		}
		refusals++
		// The 200 ms between asks is the operator being paced, as the
		// test's name says; the refusals counted depend on it.
		time.Sleep(200 * time.Millisecond)
	}
}

func TestRotationNoWorkloadNotices(t *testing.T) {
	a := startAgent(t, newDataDir(t))
	td := spiffeid.RequireTrustDomainFromString(a.td)
	tr := startTraffic(t, a.workload, td)
	defer tr.stop()
	tr.settle(5)
	tr.check("before rotating")

	full := []string{"init", "update_clients", "update_servers", "standby"}
	// pause is how many handshakes and validations run between phases.
	run := func(name string, phases []string, pause int64) {
		refused := 0
		for _, p := range phases {
			for _, typ := range []string{"spiffe", "jwt"} {
				refused += rotateTo(t, a, typ, p)
			}
			tr.settle(pause)
		}
		for _, typ := range []string{"spiffe", "jwt"} {
			if phase, _ := caState(t, a, typ); phase != phases[len(phases)-1] && phase != "standby" {
				t.Fatalf("%s: the %s CA ended in %s, want %s", name, typ, phase, phases[len(phases)-1])
			}
		}
		tr.check(fmt.Sprintf("%s (%d steps refused while agents caught up)", name, refused))
	}
	// An operator who looks around between the phases.
	run("manual rotation", full, 10)
	// A rollback from update_clients: the old keys sign again, and the CA
	// returns to standby by itself once the agents renewed.
	run("rollback from update_clients", []string{"init", "update_clients", "rollback"}, 0)
	for _, typ := range []string{"spiffe", "jwt"} {
		testkit.EventuallyEvery(t, 10*time.Second, 100*time.Millisecond, func() bool {
			phase, _ := caState(t, a, typ)
			return phase == "standby"
		}, "the %s CA did not return to standby after the rollback", typ)
	}
	tr.settle(5)
	tr.check("after the rollback")
	// An operator in a hurry: each next phase asked for at once, again
	// every 200 ms until the gate lets it through, never --force.
	run("rushed rotation", full, 0)
	tr.settle(10)
	tr.check("after the rushed rotation")

	r := a.widctl("audit", "ls", "--type", "ca.rotation", "--format", "json").must(t)
	if n := strings.Count(r.stdout, `"outcome": "success"`); n < 2*(4+3+4) {
		t.Errorf("audit has %d successful ca.rotation events, want at least %d", n, 2*(4+3+4))
	}
	if !strings.Contains(r.stdout, `"old_fingerprint": "sha256:`) || !strings.Contains(r.stdout, `"new_fingerprint": "sha256:`) {
		t.Errorf("rotation events lack the key fingerprints:\n%.2000s", r.stdout)
	}
	a.widctl("audit", "verify").must(t)
}

// lowerSVIDTTL caps every role's SVIDs at ttl, so that an automatic
// rotation may be short.
func lowerSVIDTTL(t *testing.T, a *agent, ttl string) {
	t.Helper()
	for _, role := range []string{"editor", "local-agent"} {
		r := a.widctl("get", "role/"+role, "--format", "yaml").must(t)
		doc := strings.Replace(r.stdout, "spec:\n", "spec:\n  options:\n    max_svid_ttl: "+ttl+"\n", 1)
		file := filepath.Join(t.TempDir(), role+".yaml")
		if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		a.widctl("create", "-f", file, "--force").must(t)
	}
}

func TestAutomaticRotation(t *testing.T) {
	a := startAgent(t, newDataDir(t))
	lowerSVIDTTL(t, a, "6s")
	td := spiffeid.RequireTrustDomainFromString(a.td)
	tr := startTraffic(t, a.workload, td)
	defer tr.stop()

	r := a.widctl("ca", "rotate", "--type", "spiffe", "--grace-period", "3s")
	if r.code == 0 || !strings.Contains(r.stderr, "grace period 3s is shorter than the 6s") || !strings.Contains(r.stderr, "--grace-period 6s") {
		t.Fatalf("a grace period under the longest SVID life: exit %d, %s", r.code, r.stderr)
	}
	if phase, _ := caState(t, a, "spiffe"); phase != "standby" {
		t.Fatalf("a refused rotation moved the CA to %s", phase)
	}
	start := time.Now()
	for _, typ := range []string{"spiffe", "jwt"} {
		// 8s: init 2s, then 3s each for update_clients and update_servers,
		// so that what the old key signed last (6s) expires before it goes.
		a.widctl("ca", "rotate", "--type", typ, "--grace-period", "8s").must(t)
	}
	r = a.widctl("ca", "rotate", "--type", "spiffe", "--phase", "update_clients", "--manual")
	if r.code == 0 || !strings.Contains(r.stderr, "of a rotation in auto mode: a manual step cannot move it") {
		t.Errorf("a manual step in an automatic rotation: exit %d, %s", r.code, r.stderr)
	}
	for _, typ := range []string{"spiffe", "jwt"} {
		testkit.EventuallyEvery(t, time.Until(start.Add(40*time.Second)), 200*time.Millisecond, func() bool {
			phase, seq := caState(t, a, typ)
			return phase == "standby" && seq >= 3
		}, "the automatic %s rotation did not finish", typ)
	}
	t.Logf("both automatic rotations done in %s", time.Since(start).Round(time.Millisecond))
	tr.settle(10)
	tr.check("automatic rotation")
	r = a.widctl("audit", "ls", "--type", "ca.rotation", "--format", "json").must(t)
	if !strings.Contains(r.stdout, `"actor": "auth@`) {
		t.Errorf("automatic steps are not audited as the auth service's:\n%.1500s", r.stdout)
	}
}

func TestStoppedAgentHoldsRotationBack(t *testing.T) {
	auth := startAgent(t, newDataDir(t), "--roles", "auth")
	tok := tokenFrom(t, auth.widctl("bot", "add", "edge", "--roles", "local-agent").must(t))
	auth.widctl("workload-identity", "create", "edge-workload", "--spiffe-id", "/svc/edge", "--rule", "workload.unix.uid="+uid).must(t)
	ag := startAgent(t, newDataDir(t), "--roles", "agent", "--auth", auth.addr, "--join-token", tok, "--ca-pin", auth.pin)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+ag.workload)))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	rotateTo(t, auth, "spiffe", "init")
	_, seq := caState(t, auth, "spiffe")
	// Wait until the agent holds the new bundle, then stop it: it can
	// still enter update_clients, but cannot renew its SVIDs from the new key.
	// A just-started agent first waits for its workloads to reconnect (it
	// says so as its signer); stop it once that is over.
	waitAgent(t, auth, func(s agentStatus) bool {
		return s.Sequence == seq && !s.Lagging && s.SignedBy != "" && s.SignedBy != "warming-up"
	}, 15*time.Second)
	if err := ag.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			ag.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	rotateTo(t, auth, "spiffe", "update_clients")
	r := auth.widctl("ca", "rotate", "--type", "spiffe", "--phase", "update_servers")
	if r.code == 0 || !strings.Contains(r.stderr, `bot "edge" on`) || !strings.Contains(r.stderr, ". Wait for them (widctl ca status shows them), or add --force to move on without them") {
		t.Fatalf("update_servers with a stopped agent: exit %d, %s; want a refusal naming bot edge", r.code, r.stderr)
	}
	if phase, _ := caState(t, auth, "spiffe"); phase != "update_clients" {
		t.Fatalf("a refused step moved the CA to %s", phase)
	}
	r = auth.widctl("ca", "rotate", "--type", "spiffe", "--phase", "update_servers", "--force").must(t)
	if !strings.Contains(r.stdout, "forced past lagging agents: edge@") {
		t.Errorf("a forced step does not say whom it went past:\n%s", r.stdout)
	}
	audit := auth.widctl("audit", "ls", "--type", "ca.rotation", "--format", "json").must(t)
	if !strings.Contains(audit.stdout, `"forced": "true"`) || !strings.Contains(audit.stdout, `"laggards": "edge@`) {
		t.Errorf("the forced step is not audited as forced:\n%.2000s", audit.stdout)
	}

	ag.cmd.Process.Signal(syscall.SIGCONT)
	stopped = false
	resumed := time.Now()
	signer := waitAgent(t, auth, func(s agentStatus) bool { return !s.Lagging }, time.Second)
	t.Logf("the agent caught up %s after SIGCONT (signed by %s)", time.Since(resumed).Round(time.Millisecond), signer.SignedBy)
	// The workload holds an SVID from the new key.
	if svid, err := src.GetX509SVID(); err != nil || fmt.Sprintf("%x", svid.Certificates[0].AuthorityKeyId) != signer.SignedBy {
		t.Errorf("the workload's SVID after catching up: %v; want one signed by %s", err, signer.SignedBy)
	}
	rotateTo(t, auth, "spiffe", "standby")
}

type agentStatus struct {
	Bot      string `json:"bot"`
	Sequence int64  `json:"sequence"`
	SignedBy string `json:"signed_by"`
	Lagging  bool   `json:"lagging"`
	Reason   string `json:"reason"`
}

// waitAgent waits until the spiffe CA's status shows the edge agent in a state.
func waitAgent(t *testing.T, a *agent, ok func(agentStatus) bool, within time.Duration) agentStatus {
	t.Helper()
	var last agentStatus
	if !testkit.WithinEvery(within, 50*time.Millisecond, func() bool {
		var st []struct {
			Agents []agentStatus `json:"agents"`
		}
		r := a.widctl("ca", "status", "--type", "spiffe", "--format", "json").must(t)
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st) != 1 {
			t.Fatalf("ca status --format json: %v\n%s", err, r.stdout)
		}
		for _, s := range st[0].Agents {
			if s.Bot == "edge" {
				last = s
				if ok(s) {
					return true
				}
			}
		}
		return false
	}) {
		t.Fatalf("the edge agent did not get there within %s; last: %+v", within, last)
	}
	return last
}

func TestKill9DuringRotation(t *testing.T) {
	t.Parallel()
	dir := newDataDir(t)
	a := startAgent(t, dir)
	for _, phase := range []string{"init", "update_clients", "update_servers"} {
		rotateTo(t, a, "spiffe", phase)
		a.kill()
		a = startAgent(t, dir)
		if got, _ := caState(t, a, "spiffe"); got != phase {
			t.Fatalf("after kill -9 in %s the CA is in %s", phase, got)
		}
	}
	rotateTo(t, a, "spiffe", "standby")
	// The restarted agent serves SVIDs from the new key only.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+a.workload))
	if err != nil {
		t.Fatal(err)
	}
	bundle := a.widctl("bundle", "export").must(t)
	if strings.Count(bundle.stdout, "BEGIN CERTIFICATE") != 1 {
		t.Errorf("after the rotation the bundle holds %d CAs, want 1", strings.Count(bundle.stdout, "BEGIN CERTIFICATE"))
	}
	_ = svid
	a.widctl("audit", "verify").must(t)
}

func TestHostCARotationKeepsAgentsConnected(t *testing.T) {
	t.Parallel()
	auth := startAgent(t, newDataDir(t), "--roles", "auth")
	tok := tokenFrom(t, auth.widctl("bot", "add", "edge", "--roles", "local-agent").must(t))
	agDir := newDataDir(t)
	ag := startAgent(t, agDir, "--roles", "agent", "--auth", auth.addr, "--join-token", tok, "--ca-pin", auth.pin)
	for _, phase := range []string{"init", "update_clients", "update_servers", "standby"} {
		rotateTo(t, auth, "host", phase)
	}
	// A restarted agent trusts the new host CA from its saved identity.
	ag.stop()
	ag = startAgent(t, agDir, "--roles", "agent", "--auth", auth.addr, "--ca-pin", auth.pin)
	// The agent still reaches the auth service: a new identity reaches it
	// and a workload gets it.
	auth.widctl("workload-identity", "create", "after", "--spiffe-id", "/svc/after", "--rule", "workload.unix.uid="+uid).must(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+ag.workload))
	if err != nil || !strings.HasSuffix(svid.ID.String(), "/svc/after") {
		t.Fatalf("after the host CA rotation the agent serves %v, %v", svid, err)
	}
	st := waitAgent(t, auth, func(s agentStatus) bool { return !s.Lagging }, 5*time.Second)
	_ = st
}

func TestLoginSurvivesUserAndHostCARotation(t *testing.T) {
	t.Parallel()
	a := startAgent(t, newDataDir(t), "--no-dev-identity")
	a.widctl("role", "create", "dev", "--spiffe-path", "/team/alice/**").must(t)
	invite := inviteRE.FindStringSubmatch(a.widctl("user", "add", "alice", "--roles", "dev").must(t).stdout)
	if invite == nil {
		t.Fatal("user add printed no invite")
	}
	home := t.TempDir()
	alice := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "XDG_DATA_HOME=" + filepath.Join(home, ".local/share"),
		"DBUS_SESSION_BUS_ADDRESS=unix:path=" + filepath.Join(home, "no-bus")}
	run := func(args ...string) result {
		t.Helper()
		r := runWidctl(t, alice, "correct horse battery staple\n", args...)
		if r.code != 0 {
			t.Fatalf("widctl %v as alice: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
		return r
	}
	run("login", "--auth", a.addr, "--user", "alice", "--invite", invite[1], "--ca-pin", a.pin, "--password-stdin")
	for _, phase := range []string{"init", "update_clients", "update_servers", "standby"} {
		rotateTo(t, a, "all", phase)
		// Alice works through every phase; her login follows the CAs.
		run("status")
	}
	dir := filepath.Join(t.TempDir(), "svid")
	run("svid", "issue", "/team/alice/laptop", "-o", dir)
	if _, err := os.Stat(filepath.Join(dir, "svid.pem")); err != nil {
		t.Fatal(err)
	}
	r := a.widctl("audit", "ls", "--type", "user.cert.renewed", "--format", "json").must(t)
	if !strings.Contains(r.stdout, `"actor": "alice"`) {
		t.Errorf("the login's renewal is not audited:\n%s", r.stdout)
	}

	// A login that goes unused through a whole user CA rotation cannot
	// follow it; widctl says so, rather than that the service is down.
	for _, phase := range []string{"init", "update_clients", "update_servers", "standby"} {
		rotateTo(t, a, "user", phase)
	}
	for _, args := range [][]string{{"status"}, {"svid", "issue", "/team/alice/laptop", "-o", "-", "--type", "jwt", "--audience", "x"}} {
		r = runWidctl(t, alice, "", args...)
		if r.code != 3 || !strings.Contains(r.stderr, "no longer accepts your login as alice: its user CA was rotated while the login went unused; run widctl login") {
			t.Errorf("widctl %v with a login from a retired user CA: exit %d, %s", args, r.code, r.stderr)
		}
	}
}

// Steps out of order are refused with the phases allowed now, a non-zero
// exit, an audited denial, and nothing changed.
func TestRotationRefusals(t *testing.T) {
	t.Parallel()
	a := startAgent(t, newDataDir(t))
	before := a.widctl("ca", "ls", "--format", "json").must(t).stdout
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--type", "spiffe", "--phase", "update_servers"}, "the spiffe CA is in standby and cannot move to update_servers: from standby it may move to init"},
		{[]string{"--type", "jwt", "--phase", "rollback"}, "the jwt CA is in standby and cannot move to rollback: from standby it may move to init"},
		{[]string{"--type", "all", "--phase", "standby"}, "cannot move to standby"},
		{[]string{"--type", "wit", "--grace-period", "23h"}, "the grace period 23h is shorter than the 24h that role"},
	} {
		r := a.widctl(append([]string{"ca", "rotate"}, tt.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, tt.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("ca rotate %v: exit %d, %q; want one line containing %q", tt.args, r.code, r.stderr, tt.want)
		}
	}
	if after := a.widctl("ca", "ls", "--format", "json").must(t).stdout; after != before {
		t.Errorf("refused steps changed the CAs:\nbefore %s\nafter %s", before, after)
	}
	// A rotation in one mode refuses steps of the other.
	a.widctl("ca", "rotate", "--type", "spiffe", "--phase", "init").must(t)
	r := a.widctl("ca", "rotate", "--type", "spiffe", "--phase", "init", "--grace-period", "30h")
	if r.code == 0 || !strings.Contains(r.stderr, "from init it may move to update_clients or rollback") {
		t.Errorf("starting an automatic rotation during a manual one: exit %d, %s", r.code, r.stderr)
	}
	audit := a.widctl("audit", "ls", "--type", "ca.rotation", "--outcome", "denied", "--format", "json").must(t).stdout
	if n := strings.Count(audit, `"outcome": "denied"`); n < 5 {
		t.Errorf("audit shows %d refused rotation steps, want 5:\n%.1500s", n, audit)
	}
}

// TestRotationAfterIdentityRemoved is docs/agent.md then docs/rotation.md,
// word for word: an SVID of the dev identity is fetched, the identity is
// removed, and a whole manual rotation follows without --force. The SVID
// of the removed identity leaves the agent at once, so no phase waits on
// it, and the agent never asks the auth service for it again. Not
// parallel: the rotation's length is bounded, so it runs alone.
func TestRotationAfterIdentityRemoved(t *testing.T) {
	// For its first 10 s an agent reports that it is warming up (workloads
	// of a previous process may still reconnect), which holds back the
	// steps that wait on signers: the bound below counts from then.
	warm := time.Now().Add(10 * time.Second)
	a := startAgent(t, newDataDir(t))
	fetch := func() ([]byte, error) {
		return exec.Command(filepath.Join(binDir, "widagent"), "api", "fetch", "x509", "--socket", a.workload).CombinedOutput()
	}
	if out, err := fetch(); err != nil || !strings.Contains(string(out), "spiffe://"+a.td+"/uid/") {
		t.Fatalf("fetching the dev identity's SVID: %v\n%s", err, out)
	}
	a.widctl("rm", "workload_identity/dev-uid").must(t)

	started := time.Now()
	for _, phase := range []string{"init", "update_clients", "update_servers", "standby"} {
		refused := rotateTo(t, a, "spiffe", phase)
		t.Logf("%s after %s (%d refusals)", phase, time.Since(started).Round(time.Millisecond), refused)
	}
	if late := time.Since(maxTime(warm, started)); late > 5*time.Second {
		t.Errorf("the rotation ended %s after the agent was warm: a phase waited on something", late.Round(time.Millisecond))
	}
	if phase, _ := caState(t, a, "spiffe"); phase != "standby" {
		t.Fatalf("the spiffe CA ended in %s", phase)
	}
	if out, err := fetch(); err == nil {
		t.Fatalf("the removed identity's SVID is still served:\n%s", out)
	}
	if strings.Contains(a.out.String(), `"dev-uid" does not exist`) {
		t.Errorf("the agent asked for the removed identity's SVID:\n%s", a.out)
	}
	audit := a.widctl("audit", "ls", "--type", "svid.denied", "--format", "json").must(t).stdout
	if strings.Contains(audit, "dev-uid") {
		t.Errorf("the audit log has a refused issuance of the removed identity:\n%.2000s", audit)
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
