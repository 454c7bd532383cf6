package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/wid-project/wid/bench/workloadapi/system"
	"github.com/wid-project/wid/internal/testkit"
)

// SPIRE's own workload CLI, spire-agent api fetch, is a second Workload API
// peer next to go-spiffe: what it accepts from widagent, SPIRE users'
// tooling accepts. scripts/spire/build.sh builds it (minutes the first time,
// seconds with a warm Go build cache), so these tests skip with -short.

const spireVersion = "1.13.3"

var spireBuild sync.Mutex

// spireBin builds the SPIRE binaries named (idempotent) and returns the
// directory that holds them.
func spireBin(t *testing.T, bins ...string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds SPIRE " + spireVersion + " from source; skipped with -short")
	}
	spireBuild.Lock()
	defer spireBuild.Unlock()
	waitSpirePrebuild(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, ".bin", "spire-"+spireVersion)
	cmd := exec.Command(filepath.Join(root, "scripts", "spire", "build.sh"), bins...)
	cmd.Env = append(os.Environ(), "SPIRE_VERSION="+spireVersion, "SPIRE_BIN_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("building SPIRE %s: %v\n%s", spireVersion, err, out)
	}
	return dir
}

// spireFetch runs spire-agent api fetch ARGS... -socketPath socketPath, with
// ARGS such as "x509" or "jwt", "-audience", "A", and returns its stdout. It
// fails the test unless spire-agent succeeds.
func spireFetch(t *testing.T, socketPath string, args ...string) string {
	t.Helper()
	bin := filepath.Join(spireBin(t, "spire-agent"), "spire-agent")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	argv := append([]string{"api", "fetch"}, args...)
	argv = append(argv, "-socketPath", socketPath)
	cmd := exec.CommandContext(ctx, bin, argv...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("spire-agent %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(argv, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

var spireJWTRE = regexp.MustCompile(`token\((\S+)\):\s+(\S+)`)

// checkSpireFetches has spire-agent fetch an X509-SVID (written to files)
// and a JWT-SVID from socketPath, and checks that both are want's and verify
// against the bundles that go-spiffe fetches from the same socket.
func checkSpireFetches(t *testing.T, socketPath string, want spiffeid.ID) {
	t.Helper()
	dir := t.TempDir()
	out := spireFetch(t, socketPath, "x509", "-write", dir)
	if !strings.Contains(out, "SPIFFE ID:\t\t"+want.String()+"\n") {
		t.Fatalf("spire-agent api fetch x509 does not show SPIFFE ID %s:\n%s", want, out)
	}
	svid, err := x509svid.Load(filepath.Join(dir, "svid.0.pem"), filepath.Join(dir, "svid.0.key"))
	if err != nil {
		t.Fatalf("loading the X509-SVID spire-agent wrote: %v", err)
	}
	if svid.ID != want {
		t.Fatalf("written X509-SVID is %s, want %s", svid.ID, want)
	}

	const audience = "spiffe://example.org/e2e-audience"
	out = spireFetch(t, socketPath, "jwt", "-audience", audience)
	m := spireJWTRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("spire-agent api fetch jwt printed no token:\n%s", out)
	}
	if m[1] != want.String() {
		t.Fatalf("spire-agent api fetch jwt printed a token for %s, want %s:\n%s", m[1], want, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+socketPath))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	x509Bundles, err := c.FetchX509Bundles(ctx)
	if err != nil {
		t.Fatalf("go-spiffe FetchX509Bundles: %v", err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, x509Bundles); err != nil {
		t.Fatalf("the X509-SVID spire-agent fetched does not verify: %v", err)
	}
	jwtBundles, err := c.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatalf("go-spiffe FetchJWTBundles: %v", err)
	}
	jwt, err := jwtsvid.ParseAndValidate(m[2], jwtBundles, []string{audience})
	if err != nil {
		t.Fatalf("the JWT-SVID spire-agent fetched does not validate: %v", err)
	}
	if jwt.ID != want {
		t.Fatalf("JWT-SVID subject is %s, want %s", jwt.ID, want)
	}
}

// waitForSVID waits until go-spiffe fetches want from socketPath.
func waitForSVID(t *testing.T, socketPath string, want spiffeid.ID, within time.Duration) {
	t.Helper()
	testkit.Succeeds(t, within, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+socketPath))
		if err == nil && svid.ID != want {
			err = fmt.Errorf("got %s instead", svid.ID)
		}
		return err
	}, "no X509-SVID %s from %s", want, socketPath)
}

// The harness against SPIRE itself: spire-agent's CLI fetching from a real
// spire-agent must pass the same checks widagent has to. spire-server is
// built for make test anyway (TestFederationWithSpire), so this control of
// the harness costs only its few seconds of running.
func TestSpireAgentFetchesFromSpireAgent(t *testing.T) {
	bin := spireBin(t, "spire-agent", "spire-server")
	s := system.NewSpire(bin)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	if err := s.Start(ctx); err != nil {
		t.Fatalf("starting SPIRE: %v", err)
	}
	waitForSVID(t, s.SocketPath(), s.UIDSPIFFEID(), 60*time.Second)
	checkSpireFetches(t, s.SocketPath(), s.UIDSPIFFEID())
}

// Done-when: SPIRE's spire-agent api fetch x509 and jwt work against
// widagent's Workload API socket.
func TestSpireAgentFetchesFromWidagent(t *testing.T) {
	spireBin(t, "spire-agent")
	dir := newDataDir(t)
	a := startAgent(t, dir)
	socket := filepath.Join(dir, "workload.sock")
	// The dev-uid workload identity of a fresh data dir.
	want := spiffeid.RequireFromPathf(spiffeid.RequireTrustDomainFromString(a.td), "/uid/%d", os.Getuid())
	waitForSVID(t, socket, want, 20*time.Second)
	checkSpireFetches(t, socket, want)
}
