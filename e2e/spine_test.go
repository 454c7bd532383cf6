package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var joinTokenRE = regexp.MustCompile(`WID_JOIN_TOKEN=(\S+)`)

// joinBot joins as a bot over TLS, pinning the auth service's CA.
func joinBot(t *testing.T, a *agent, token string) (*client.Identity, error) {
	t.Helper()
	c, err := client.Dial(client.Config{Auth: a.addr, CAPin: a.pin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key, err := client.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := client.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Join(context.Background(), &authv1.JoinRequest{Token: token, Csr: csr, Host: "e2e-host"})
	if err != nil {
		return nil, err
	}
	return client.NewIdentity(key, resp.CertChain, resp.HostCa)
}

func botClient(t *testing.T, a *agent, id *client.Identity) *client.Client {
	t.Helper()
	c, err := client.Dial(client.Config{Auth: a.addr, Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func tokenFrom(t *testing.T, r result) string {
	t.Helper()
	m := joinTokenRE.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("no join command in output:\n%s", r.stdout)
	}
	return m[1]
}

// Done-when 2: role create and create -f give the same role.
func TestRoleCreateMatchesCreateFile(t *testing.T) {
	a := startAgent(t, newDataDir(t))
	a.widctl("role", "create", "foo", "--spiffe-path", "/region/europe/svc/foo", "--dns-san", "foo.example.com",
		"--ip-san", "10.0.0.0/8", "--deny-path", "/region/europe/svc/foo/admin", "--max-ttl", "24h").must(t)
	fromFlags := a.widctl("get", "role/foo", "--format", "yaml").must(t).stdout
	a.widctl("rm", "role/foo").must(t)
	doc := `kind: role
version: v1
metadata:
  name: foo
spec:
  allow:
    spiffe:
      - path: /region/europe/svc/foo
        dns_sans: ["foo.example.com"]
        ip_sans: ["10.0.0.0/8"]
  deny:
    spiffe:
      - path: /region/europe/svc/foo/admin
  options:
    max_svid_ttl: 24h
`
	a.widctlIn(doc, "create", "-f", "-").must(t)
	fromFile := a.widctl("get", "role/foo", "--format", "yaml").must(t).stdout
	if fromFlags != fromFile {
		t.Fatalf("role from flags and from file differ:\n--- flags\n%s\n--- file\n%s", fromFlags, fromFile)
	}
	if !strings.Contains(fromFile, "max_svid_ttl: 24h") || !strings.Contains(fromFile, "/region/europe/svc/foo/admin") {
		t.Fatalf("role YAML is missing fields:\n%s", fromFile)
	}
}

// Done-when 3: a joined bot gets SVIDs that go-spiffe accepts, and refusals name the grant.
func TestBotIssuesVerifiableSVIDs(t *testing.T) {
	a := startAgent(t, newDataDir(t))
	a.widctl("role", "create", "svc", "--spiffe-path", "/svc/*", "--deny-path", "/svc/admin").must(t)
	token := tokenFrom(t, a.widctl("bot", "add", "web", "--roles", "svc").must(t))
	id, err := joinBot(t, a, token)
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	c := botClient(t, a, id)
	ctx := context.Background()
	td := spiffeid.RequireTrustDomainFromString(a.td)

	key, _ := client.NewKey()
	csr, _ := client.NewCSR(key)
	resp, err := c.SignX509SVID(ctx, &authv1.SignX509SVIDRequest{SpiffeId: "spiffe://" + a.td + "/svc/web", Csr: csr})
	if err != nil {
		t.Fatalf("issuing /svc/web: %v", err)
	}
	var chain []*x509.Certificate
	for _, der := range resp.CertChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	pemOut := a.widctl("bundle", "export", "--format", "pem").must(t).stdout
	var authorities []*x509.Certificate
	for rest := []byte(pemOut); ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		authorities = append(authorities, c)
	}
	if len(authorities) == 0 {
		t.Fatalf("bundle export printed no certificates:\n%s", pemOut)
	}
	gotID, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, authorities))
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if gotID.String() != "spiffe://"+a.td+"/svc/web" {
		t.Fatalf("SVID ID = %s", gotID)
	}
	leaf := chain[0]
	if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature || len(leaf.URIs) != 1 {
		t.Fatalf("leaf: IsCA %v, KeyUsage %v, URIs %v", leaf.IsCA, leaf.KeyUsage, leaf.URIs)
	}
	if len(leaf.ExtKeyUsage) != 2 || !hasEKU(leaf, x509.ExtKeyUsageServerAuth) || !hasEKU(leaf, x509.ExtKeyUsageClientAuth) {
		t.Fatalf("leaf EKUs = %v, want serverAuth and clientAuth", leaf.ExtKeyUsage)
	}
	if leaf.SerialNumber.BitLen() < 120 {
		t.Fatalf("serial has %d bits, want about 128", leaf.SerialNumber.BitLen())
	}

	jwt, err := c.SignJWTSVID(ctx, &authv1.SignJWTSVIDRequest{SpiffeId: "/svc/web", Audience: []string{"api"}})
	if err != nil {
		t.Fatalf("JWT for /svc/web: %v", err)
	}
	jwks := a.widctl("bundle", "export", "--format", "jwks").must(t).stdout
	bundle, err := spiffebundle.Parse(td, []byte(jwks))
	if err != nil {
		t.Fatalf("parsing exported JWKS: %v", err)
	}
	if _, err := jwtsvid.ParseAndValidate(jwt.Token, bundle, []string{"api"}); err != nil {
		t.Fatalf("jwtsvid.ParseAndValidate: %v", err)
	}

	for path, want := range map[string]string{"/svc/admin": "/svc/admin", "/other": "/other"} {
		_, err := c.SignX509SVID(ctx, &authv1.SignX509SVIDRequest{SpiffeId: path, Csr: csr})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("issuing %s: %v, want PermissionDenied", path, err)
		}
		if msg := status.Convert(err).Message(); !strings.Contains(msg, want) {
			t.Fatalf("refusal of %s does not name it: %q", path, msg)
		}
	}
	denied := a.widctl("audit", "ls", "--outcome", "denied").must(t).stdout
	for _, id := range []string{"spiffe://" + a.td + "/svc/admin", "spiffe://" + a.td + "/other"} {
		if !strings.Contains(denied, id) {
			t.Fatalf("audit ls --outcome denied does not show %s:\n%s", id, denied)
		}
	}
}

func hasEKU(c *x509.Certificate, want x509.ExtKeyUsage) bool {
	for _, u := range c.ExtKeyUsage {
		if u == want {
			return true
		}
	}
	return false
}

// Done-when 4: reused and expired join tokens are refused and audited.
func TestJoinTokenReuseAndExpiry(t *testing.T) {
	a := startAgent(t, newDataDir(t))
	a.widctl("role", "create", "svc", "--spiffe-path", "/svc/*").must(t)
	token := tokenFrom(t, a.widctl("bot", "add", "web", "--roles", "svc").must(t))
	if _, err := joinBot(t, a, token); err != nil {
		t.Fatalf("first join: %v", err)
	}
	_, err := joinBot(t, a, token)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "already used") {
		t.Fatalf("reused token: %v, want PermissionDenied saying already used", err)
	}

	short := tokenFrom(t, a.widctl("token", "add", "--bot", "web", "--ttl", "1s").must(t))
	time.Sleep(1100 * time.Millisecond) // the token's own lifetime; nothing to wait on but the clock
	_, err = joinBot(t, a, short)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "expired") {
		t.Fatalf("expired token: %v, want PermissionDenied saying expired", err)
	}
	evs, err := a.admin().ListAuditEvents(context.Background(), &authv1.ListAuditEventsRequest{Query: &authv1.AuditQuery{Types: []string{"bot.join.denied"}}})
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range evs.Events {
		reasons = append(reasons, e.Reason)
	}
	joined := strings.Join(reasons, "\n")
	if len(evs.Events) != 2 || !strings.Contains(joined, "already used") || !strings.Contains(joined, "expired") {
		t.Fatalf("join denials in the audit log: %q", reasons)
	}
	if out := a.widctl("audit", "ls", "--type", "bot.join.denied").must(t).stdout; !strings.Contains(out, "bot:web") {
		t.Fatalf("widctl audit ls does not show the denied joins:\n%s", out)
	}
}

// A non-admin uid on the admin socket is refused by peer credentials, in one
// sentence, and audited.
func TestAdminSocketRefusesOtherUIDs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run widctl under another uid")
	}
	a := startAgent(t, newDataDir(t))
	// Open the file permissions so that the peer-credential check is what stands in the way.
	for _, p := range []string{binDir, a.dataDir} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(a.socket, 0o666); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "widctl"), "role", "ls")
	cmd.Env = append(os.Environ(), "WIDCTL_ADMIN_SOCKET="+a.socket, "HOME=/tmp", "XDG_CONFIG_HOME=/tmp/wid-e2e-nobody")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 3 {
		t.Fatalf("widctl as uid 65534: %v, want exit 3\n%s", err, out)
	}
	if !strings.Contains(string(out), "uid 65534 may not use the admin socket") || !strings.Contains(string(out), "; log in with widctl login instead") ||
		strings.Contains(string(out), "rpc error") {
		t.Fatalf("refusal is not one clear sentence:\n%s", out)
	}
	if evs := a.widctl("audit", "ls", "--type", "access.denied").must(t).stdout; !strings.Contains(evs, "uid:65534") {
		t.Fatalf("the refusal is not audited:\n%s", evs)
	}
}
