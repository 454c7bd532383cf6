package cli_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/testkit"
)

// The issue's journey for people: alice logs in, issues herself an
// X509-SVID for her laptop with her own identity, and uses it with spiffetls
// against a server that authorizes only her ID. Outside her grant (another
// path, a TTL over her roles' max, a DNS SAN not granted) she gets the
// sentence naming the limit, no files, and the audit log shows all of it
// with her as the actor.
func TestUserIssuesSVID(t *testing.T) {
	p, invite := newPerson(t)
	if code, _, errOut := p.firstLogin(invite); code != 0 {
		t.Fatalf("login: %s", errOut)
	}
	dir := filepath.Join(t.TempDir(), "laptop")
	code, out, errOut := p.run("", "svid", "issue", "/team/alice/laptop", "--ttl", "2h", "--dns-san", "laptop.alice.dev.example", "-o", dir)
	if code != 0 || !strings.Contains(out, "spiffe://example.org/team/alice/laptop") {
		t.Fatalf("svid issue as alice: exit %d, %q %q", code, out, errOut)
	}
	td := spiffeid.RequireTrustDomainFromString(p.srv.TrustDomain)
	alice, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := x509bundle.Load(td, filepath.Join(dir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(alice.Certificates, bundle); err != nil {
		t.Fatalf("alice's SVID does not verify against bundle.pem: %v", err)
	}

	// A server with its own SVID (from the admin) that lets only alice's laptop in.
	admin := newWidctl(t, p.srv)
	serverDir := t.TempDir()
	admin.OK("svid", "issue", "/svc/api", "-o", serverDir)
	server, err := x509svid.Load(filepath.Join(serverDir, "svid.pem"), filepath.Join(serverDir, "svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := testkit.GreeterMTLS(t, tlsconfig.AuthorizeID(spiffeid.RequireFromPath(td, "/team/alice/laptop")), server, bundle)
	reply, err := testkit.Greet(ctx, addr, tlsconfig.AuthorizeID(server.ID), alice, bundle)
	if err != nil {
		t.Fatalf("alice cannot reach the server: %v", err)
	}
	if reply != "hello spiffe://example.org/team/alice/laptop, you said hi\n" {
		t.Errorf("the server answered %q", reply)
	}

	refusals := []struct {
		name string
		args []string
		want string
	}{
		{"another path", []string{"/team/bob/x"}, "/team/bob/x"},
		{"TTL over the max", []string{"/team/alice/laptop", "--ttl", "5h"}, "TTL 5h is over the maximum 4h set by role \"dev\""},
		{"DNS SAN not granted", []string{"/team/alice/laptop", "--dns-san", "evil.example.com"}, `DNS SAN "evil.example.com" is not granted for /team/alice/laptop`},
	}
	for _, r := range refusals {
		out := filepath.Join(t.TempDir(), "out")
		code, stdout, stderr := p.run("", append(append([]string{"svid", "issue"}, r.args...), "-o", out)...)
		if code != cmdutil.ExitAuth || stdout != "" || !strings.HasPrefix(stderr, "error: ") || !strings.Contains(stderr, r.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d and %q", r.name, code, stdout, stderr, cmdutil.ExitAuth, r.want)
		}
		if files(t, filepath.Dir(out)) != nil {
			t.Errorf("%s left files behind: %v", r.name, files(t, filepath.Dir(out)))
		}
	}

	log := admin.OK("audit", "ls", "--actor", "alice", "--format", "json")
	if n := strings.Count(log, `"svid.x509.issued"`); n != 1 {
		t.Errorf("the audit log shows %d issuances by alice, want 1:\n%s", n, log)
	}
	if n := strings.Count(log, `"svid.denied"`); n != 3 {
		t.Errorf("the audit log shows %d refusals of alice, want 3:\n%s", n, log)
	}
}
