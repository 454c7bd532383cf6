package e2e

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/testkit"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

var uid = strconv.Itoa(os.Getuid())

// buildWorkload builds the mtls test workload once per test binary.
var buildWorkload = sync.OnceValues(func() (string, error) {
	out := filepath.Join(binDir, "mtls")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/mtls")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the mtls workload: %v\n%s", err, b)
	}
	return out, nil
})

// copyBinary puts a copy of the workload at path, so that it runs as a
// different binary (workload.unix.path) with the same content.
func copyBinary(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestTwoBinariesGetTheirOwnIdentitiesAndTalkMTLS: two processes whose
// binaries differ get different SPIFFE IDs from rules on workload.unix.path,
// and each sees the other's ID over spiffetls mTLS.
func TestTwoBinariesGetTheirOwnIdentitiesAndTalkMTLS(t *testing.T) {
	t.Parallel()
	bin, err := buildWorkload()
	if err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, newDataDir(t), "--no-dev-identity")
	dir := t.TempDir()
	server, client := filepath.Join(dir, "server"), filepath.Join(dir, "client")
	copyBinary(t, bin, server)
	copyBinary(t, bin, client)
	a.widctl("workload-identity", "create", "server", "--spiffe-id", "/svc/server", "--rule", "workload.unix.path="+server).must(t)
	a.widctl("workload-identity", "create", "client", "--spiffe-id", "/svc/client", "--rule", "workload.unix.path="+client+",workload.unix.uid="+uid).must(t)

	env := append(os.Environ(), "SPIFFE_ENDPOINT_SOCKET=unix://"+a.workload)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := exec.CommandContext(ctx, server, "serve")
	srv.Env = env
	srvOut, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var srvErr strings.Builder
	srv.Stderr = &srvErr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(srvOut)
	if !lines.Scan() {
		srv.Wait()
		t.Fatalf("server printed nothing; stderr: %s", srvErr.String())
	}
	first := strings.Fields(lines.Text()) // listening ADDR as ID
	if len(first) != 4 || first[3] != "spiffe://"+a.td+"/svc/server" {
		t.Fatalf("server: %q", lines.Text())
	}
	cl := exec.CommandContext(ctx, client, "dial", first[1])
	cl.Env = env
	out, err := cl.CombinedOutput()
	if err != nil {
		t.Fatalf("client: %v\n%s", err, out)
	}
	want := fmt.Sprintf("peer spiffe://%[1]s/svc/server says spiffe://%[1]s/svc/server\n", a.td)
	if string(out) != want {
		t.Fatalf("client printed %q, want %q", out, want)
	}
	if !lines.Scan() {
		t.Fatalf("server said nothing about its peer; stderr: %s", srvErr.String())
	}
	if got := lines.Text(); got != fmt.Sprintf("peer spiffe://%[1]s/svc/client says spiffe://%[1]s/svc/client", a.td) {
		t.Fatalf("server printed %q", got)
	}
	srv.Wait()

	// A binary no rule names gets nothing and is told no more than that;
	// which rule wanted what is for the audit log.
	fetch := exec.Command(filepath.Join(binDir, "widagent"), "api", "fetch", "x509", "--socket", a.workload)
	b, err := fetch.CombinedOutput()
	if err == nil || !strings.Contains(string(b), "gave this process no identity: no identity issued: this process matches no workload identity") || strings.Contains(string(b), "workload.unix.path") {
		t.Fatalf("an unmatched process: %v\n%s", err, b)
	}
	var audit string
	if !testkit.WithinEvery(10*time.Second, 50*time.Millisecond, func() bool {
		audit = a.widctl("audit", "ls", "--type", "workload.attest", "--format", "json").must(t).stdout
		return strings.Contains(audit, "workload.unix.path is") && strings.Contains(audit, "denied")
	}) {
		t.Fatalf("the audit log does not say which rule the unmatched process failed:\n%s", audit)
	}
}

// TestFirstSVIDFromAFreshStart is the README's journey: widagent start on a
// fresh data dir gives the starting user's processes an SVID at once.
func TestFirstSVIDFromAFreshStart(t *testing.T) {
	t.Parallel()
	started := time.Now()
	a := startAgent(t, newDataDir(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+a.workload))
	if err != nil {
		t.Fatalf("first fetch: %v\n%s", err, a.out)
	}
	t.Logf("fresh data dir to first SVID: %s", time.Since(started))
	if svid.ID.String() != "spiffe://"+a.td+"/uid/"+uid {
		t.Fatalf("first SVID is %s", svid.ID)
	}
	bundle := a.widctl("bundle", "export", "--format", "pem").must(t).stdout
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(bundle))
	inter := x509.NewCertPool()
	for _, c := range svid.Certificates[1:] {
		inter.AddCert(c)
	}
	if _, err := svid.Certificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the first SVID does not verify against widctl bundle export: %v", err)
	}
	// widctl rm takes it away again.
	a.widctl("rm", "workload_identity/dev-uid").must(t)
	if !testkit.Within(5*time.Second, func() bool {
		_, err = workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+a.workload))
		return err != nil && strings.Contains(err.Error(), "PermissionDenied")
	}) {
		t.Fatalf("after removing dev-uid the fetch gave: %v", err)
	}
}

// TestIdleAgentDoesNotPoll: an agent with SVIDs cached and nothing
// changing makes no calls to the auth service for 60 seconds.
func TestIdleAgentDoesNotPoll(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a minute")
	}
	t.Parallel()
	a := startAgent(t, newDataDir(t), "--diag-addr", "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+a.workload)); err != nil {
		t.Fatal(err)
	}
	before := metricSum(t, a.diag, "wid_agent_auth_rpcs_total")
	// Letting a minute pass is the point: an idle agent must make no calls.
	time.Sleep(60 * time.Second)
	after := metricSum(t, a.diag, "wid_agent_auth_rpcs_total")
	if after != before {
		t.Fatalf("an idle agent made %v calls to the auth service in 60s", after-before)
	}
	if before == 0 {
		t.Fatal("the agent's auth call counter never moved: the test measures nothing")
	}
}

func metricSum(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	total := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err == nil {
				total += v
			}
		}
	}
	return total
}

// TestAuthOutage: with the auth service killed for longer than half an
// SVID's life, the agent keeps serving the cached SVID until it expires and
// never after; once the auth service is back the workload gets a renewed
// SVID, and attestations made during the outage reach the audit log.
func TestAuthOutage(t *testing.T) {
	t.Parallel()
	authDir := newDataDir(t)
	auth := startAgent(t, authDir, "--roles", "auth")
	tok := tokenFrom(t, auth.widctl("bot", "add", "edge", "--roles", "local-agent").must(t))
	auth.widctl("workload-identity", "create", "short", "--spiffe-id", "/svc/short", "--x509-ttl", "8s", "--rule", "workload.unix.uid="+uid).must(t)
	agentDir := newDataDir(t)
	ag := startAgent(t, agentDir, "--roles", "agent", "--auth", auth.addr, "--join-token", tok, "--ca-pin", auth.pin)
	if fi, err := os.Stat(filepath.Join(agentDir, "agent", "identity.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent identity key: %v %v", err, fi)
	}
	addr := "unix://" + ag.workload
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first, err := c.FetchX509SVID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	expiry := first.Certificates[0].NotAfter
	serial := first.Certificates[0].SerialNumber.String()

	auth.kill()
	killed := time.Now()

	// A process that first calls during the outage is attested; its record
	// must survive the outage.
	fetch := exec.Command(filepath.Join(binDir, "widagent"), "api", "fetch", "x509", "--socket", ag.workload)
	if err := fetch.Start(); err != nil {
		t.Fatal(err)
	}
	outagePID := strconv.Itoa(fetch.Process.Pid)
	fetch.Wait()

	servedCached := false
	for time.Now().Before(expiry.Add(2 * time.Second)) {
		asked := time.Now()
		s, err := c.FetchX509SVID(ctx)
		now := time.Now()
		if err == nil {
			// Judged by when the call started: on a busy machine the answer
			// may arrive after an expiry it came before.
			if !asked.Before(s.Certificates[0].NotAfter) {
				t.Fatalf("the agent served an SVID that expired at %s to a call made at %s", s.Certificates[0].NotAfter, asked)
			}
			if s.Certificates[0].SerialNumber.String() == serial {
				servedCached = true
			}
		} else if now.Before(expiry.Add(-500 * time.Millisecond)) {
			t.Fatalf("the agent stopped serving a valid cached SVID during the outage, %s before it expired: %v", expiry.Sub(now), err)
		}
		// Sampling what is served across the outage, up to the expiry:
		// the pace of the samples, not a wait for anything.
		time.Sleep(100 * time.Millisecond)
	}
	if !servedCached {
		t.Fatal("the cached SVID was never served during the outage")
	}
	if d := time.Since(killed); d < 4*time.Second {
		t.Fatalf("the outage lasted %s, less than half the 8s TTL", d)
	}

	// Back on the same address and data dir.
	startAgent(t, authDir, "--roles", "auth", "--auth-listen", auth.addr)
	if !testkit.WithinEvery(30*time.Second, 200*time.Millisecond, func() bool {
		s, err := c.FetchX509SVID(ctx)
		return err == nil && s.Certificates[0].SerialNumber.String() != serial && time.Now().Before(s.Certificates[0].NotAfter)
	}) {
		t.Fatalf("no renewed SVID after the auth service came back; agent log:\n%s", ag.out)
	}

	admin := auth.admin()
	testkit.Succeeds(t, 30*time.Second, func() error {
		resp, err := admin.ListAuditEvents(ctx, &authv1.ListAuditEventsRequest{Query: &authv1.AuditQuery{Types: []string{"workload.attest"}}})
		if err != nil {
			return err
		}
		for _, ev := range resp.Events {
			if ev.Attributes["workload.unix.pid"] == outagePID {
				return nil
			}
		}
		return fmt.Errorf("no event for it among %d", len(resp.Events))
	}, "the attestation of pid %s during the outage never reached the audit log", outagePID)
}

// TestFileOutputsRotateAtomically: a reader looping over the output files
// while the agent renews them never sees a partial file.
func TestFileOutputsRotateAtomically(t *testing.T) {
	t.Parallel()
	dir := newDataDir(t)
	out := filepath.Join(dir, "out", "svid")
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("outputs:\n  - type: x509\n    path: /svc/files\n    dir: %s\n    ttl: 4s\n", out)), 0o600); err != nil {
		t.Fatal(err)
	}
	startAgent(t, dir, "--config", cfg)
	testkit.Succeeds(t, 10*time.Second, func() error {
		_, err := os.Stat(filepath.Join(out, "svid.pem"))
		return err
	}, "the output was never written")
	fi, err := os.Stat(filepath.Join(out, "svid.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("svid.key: %v, mode %v", err, fi.Mode().Perm())
	}
	serials := map[string]bool{}
	reads := 0
	for end := time.Now().Add(7 * time.Second); time.Now().Before(end); reads++ {
		for _, name := range []string{"svid.pem", "svid.key", "bundle.pem"} {
			b, err := os.ReadFile(filepath.Join(out, name))
			if err != nil {
				t.Fatalf("reading %s: %v", name, err)
			}
			blocks := 0
			for rest := b; ; {
				var blk *pem.Block
				blk, rest = pem.Decode(rest)
				if blk == nil {
					if len(strings.TrimSpace(string(rest))) != 0 {
						t.Fatalf("%s has %d bytes that are not PEM: a partial file", name, len(rest))
					}
					break
				}
				blocks++
				if name == "svid.pem" && blocks == 1 {
					c, err := x509.ParseCertificate(blk.Bytes)
					if err != nil {
						t.Fatalf("svid.pem holds a certificate that does not parse: %v", err)
					}
					serials[c.SerialNumber.String()] = true
				}
				if name == "svid.key" {
					if _, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err != nil {
						t.Fatalf("svid.key does not parse: %v", err)
					}
				}
			}
			if blocks == 0 {
				t.Fatalf("%s is empty: a partial file", name)
			}
		}
	}
	if len(serials) < 2 {
		t.Fatalf("saw %d SVID(s) in %d reads over 7s of a 4s TTL: the output was not renewed", len(serials), reads)
	}
	t.Logf("%d reads, %d renewals seen", reads, len(serials)-1)
}

// TestGoSpiffeAgainstWidagentStart: go-spiffe's sources, watcher and
// validator against the real widagent start, and the header rule.
func TestGoSpiffeAgainstWidagentStart(t *testing.T) {
	t.Parallel()
	a := startAgent(t, newDataDir(t))
	addr := "unix://" + a.workload
	opt := workloadapi.WithClientOptions(workloadapi.WithAddr(addr))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := "spiffe://" + a.td + "/uid/" + uid

	x509Source, err := workloadapi.NewX509Source(ctx, opt)
	if err != nil {
		t.Fatalf("NewX509Source: %v", err)
	}
	defer x509Source.Close()
	svid, err := x509Source.GetX509SVID()
	if err != nil || svid.ID.String() != want {
		t.Fatalf("X509 source SVID %v, %v; want %s", svid, err, want)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, x509Source); err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}

	jwtSource, err := workloadapi.NewJWTSource(ctx, opt)
	if err != nil {
		t.Fatalf("NewJWTSource: %v", err)
	}
	defer jwtSource.Close()
	token, err := jwtSource.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "e2e"})
	if err != nil || token.ID.String() != want {
		t.Fatalf("FetchJWTSVID: %v, %v", token, err)
	}
	if _, err := jwtsvid.ParseAndValidate(token.Marshal(), jwtSource, []string{"e2e"}); err != nil {
		t.Fatalf("jwtsvid.ParseAndValidate: %v", err)
	}
	validated, err := workloadapi.ValidateJWTSVID(ctx, token.Marshal(), "e2e", workloadapi.WithAddr(addr))
	if err != nil || validated.ID.String() != want {
		t.Fatalf("ValidateJWTSVID: %v, %v", validated, err)
	}

	bundles, err := workloadapi.NewBundleSource(ctx, opt)
	if err != nil {
		t.Fatalf("NewBundleSource: %v", err)
	}
	defer bundles.Close()
	if b, err := bundles.GetX509BundleForTrustDomain(svid.ID.TrustDomain()); err != nil || len(b.X509Authorities()) == 0 {
		t.Fatalf("bundle source has no X.509 bundle: %v", err)
	}
	if b, err := bundles.GetJWTBundleForTrustDomain(svid.ID.TrustDomain()); err != nil || len(b.JWTAuthorities()) == 0 {
		t.Fatalf("bundle source has no JWT bundle: %v", err)
	}

	c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := &firstUpdate{ch: make(chan *workloadapi.X509Context, 1)}
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.WatchX509Context(wctx, w) }()
	select {
	case u := <-w.ch:
		if len(u.SVIDs) != 1 || u.SVIDs[0].ID.String() != want {
			t.Fatalf("WatchX509Context update: %v", u.SVIDs)
		}
	case <-ctx.Done():
		t.Fatal("WatchX509Context sent nothing")
	}
	wcancel()
	<-done

	// Without the security header: InvalidArgument.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a call without the security header: %v, want InvalidArgument", err)
	}
}

type firstUpdate struct{ ch chan *workloadapi.X509Context }

func (f *firstUpdate) OnX509ContextUpdate(c *workloadapi.X509Context) {
	select {
	case f.ch <- c:
	default:
	}
}
func (f *firstUpdate) OnX509ContextWatchError(error) {}

// TestSameHostJoinKeepsToken is the printed join command run on the auth
// host next to a running widagent start: every attempt that cannot run
// (the auth service's own data dir, a workload socket or a diagnostics
// port in use) is refused before the token is spent and writes nothing
// into the other process's data dir, so that a corrected attempt joins
// with the same single-use token.
func TestSameHostJoinKeepsToken(t *testing.T) {
	t.Parallel()
	authDir := newDataDir(t)
	auth := startAgent(t, authDir)
	tok := tokenFrom(t, auth.widctl("bot", "add", "edge", "--roles", "local-agent").must(t))
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	agentDir := newDataDir(t)
	join := []string{"start", "--roles", "agent", "--auth", auth.addr, "--join-token", tok, "--ca-pin", auth.pin}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"the auth service's data dir", []string{"--data-dir", authDir, "--workload-socket", filepath.Join(agentDir, "w.sock")}, "belongs to a running auth service"},
		{"a workload socket in use", []string{"--data-dir", agentDir, "--workload-socket", auth.workload}, "another process serves the workload socket"},
		{"a diagnostics port in use", []string{"--data-dir", agentDir, "--workload-socket", filepath.Join(agentDir, "w.sock"), "--diag-addr", taken.Addr().String()}, "listening for diagnostics on " + taken.Addr().String()},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, filepath.Join(binDir, "widagent"), append(join, tt.args...)...).CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), tt.want) {
			t.Fatalf("%s: %v, want a refusal saying %q:\n%s", tt.name, err, tt.want, out)
		}
		if strings.Contains(string(out), "joined the trust domain") {
			t.Fatalf("%s: the agent joined before it failed:\n%s", tt.name, out)
		}
	}
	if _, err := os.Stat(filepath.Join(authDir, "agent")); !os.IsNotExist(err) {
		t.Errorf("the refused agent wrote into the auth service's data dir: %v", err)
	}
	if evs := auth.widctl("audit", "ls", "--type", "bot.join", "--format", "json").must(t).stdout; strings.Contains(evs, "bot:edge") {
		t.Fatalf("a refused attempt joined:\n%s", evs)
	}
	// The corrected command joins with the same token.
	ag := startAgent(t, agentDir, append(join[1:], "--workload-socket", filepath.Join(agentDir, "w.sock"))...)
	if _, err := os.Stat(filepath.Join(agentDir, "agent", "identity.key")); err != nil {
		t.Fatalf("the joined agent has no identity: %v\n%s", err, ag.out)
	}
}

// TestJoinWithTokenFile joins with the token in a file, as a service
// manager would start the agent: the secret is in no process's arguments.
func TestJoinWithTokenFile(t *testing.T) {
	t.Parallel()
	auth := startAgent(t, newDataDir(t), "--roles", "auth")
	tok := tokenFrom(t, auth.widctl("bot", "add", "edge", "--roles", "local-agent").must(t))
	agentDir := newDataDir(t)
	tokenFile := filepath.Join(agentDir, "join-token")
	if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ag := startAgent(t, agentDir, "--roles", "agent", "--auth", auth.addr, "--join-token-file", tokenFile, "--ca-pin", auth.pin)
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ag.cmd.Process.Pid))
	if err == nil && strings.Contains(string(cmdline), tok) {
		t.Errorf("the join token is in the agent's command line")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	auth.widctl("workload-identity", "create", "me", "--spiffe-id", "/svc/me", "--rule", "workload.unix.uid="+uid).must(t)
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+ag.workload))
	if err != nil {
		t.Fatalf("fetching from the agent that joined with a token file: %v\n%s", err, ag.out)
	}
	if svid.ID.Path() != "/svc/me" {
		t.Errorf("the agent served %s", svid.ID)
	}
	if evs := auth.widctl("audit", "ls", "--type", "bot.join", "--format", "json").must(t).stdout; !strings.Contains(evs, "bot:edge") {
		t.Errorf("the join is not in the audit log:\n%s", evs)
	}
}
