package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/wid-project/wid/internal/testkit"
)

var inviteRE = regexp.MustCompile(`--invite (\S+)`)

// TestHumanIssuesSVID is issue 5's journey with the real binaries: an admin
// makes role dev and user alice; alice logs in with her invite (no keyring
// here, so the key goes to a 0600 file), issues /team/alice/laptop, and uses
// it over spiffetls with a server that authorizes only that ID; her
// refusals name the limit and are audited.
func TestHumanIssuesSVID(t *testing.T) {
	t.Parallel()
	a := startAgent(t, newDataDir(t), "--no-dev-identity")
	a.widctl("role", "create", "dev", "--spiffe-path", "/team/alice/**", "--dns-san", "*.alice.dev.example", "--max-ttl", "4h").must(t)
	added := a.widctl("user", "add", "alice", "--roles", "dev").must(t)
	invite := inviteRE.FindStringSubmatch(added.stdout)
	if invite == nil {
		t.Fatalf("user add printed no invite:\n%s", added.stdout)
	}

	home := t.TempDir()
	alice := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "XDG_DATA_HOME=" + filepath.Join(home, ".local/share"),
		"DBUS_SESSION_BUS_ADDRESS=unix:path=" + filepath.Join(home, "no-bus")}
	run := func(stdin string, args ...string) result {
		t.Helper()
		return runWidctl(t, alice, stdin, args...)
	}
	started := time.Now()
	login := run("correct horse battery staple\n", "login", "--auth", a.addr, "--user", "alice", "--invite", invite[1], "--ca-pin", a.pin, "--password-stdin")
	if login.code != 0 {
		t.Fatalf("login: exit %d\n%s%s", login.code, login.stdout, login.stderr)
	}
	if !strings.Contains(login.stderr+login.stdout, "keyring") {
		t.Errorf("with no keyring, login did not say where the key went:\n%s%s", login.stdout, login.stderr)
	}
	dir := filepath.Join(t.TempDir(), "svid")
	issued := run("", "svid", "issue", "/team/alice/laptop", "--ttl", "2h", "--dns-san", "laptop.alice.dev.example", "-o", dir)
	if issued.code != 0 {
		t.Fatalf("svid issue: exit %d\n%s%s", issued.code, issued.stdout, issued.stderr)
	}
	t.Logf("login (one argon2id hash for the invite's password) to first SVID on disk: %s", time.Since(started))

	svid, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := x509bundle.Load(svid.ID.TrustDomain(), filepath.Join(dir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		t.Fatalf("alice's SVID does not verify against bundle.pem: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "svid.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("svid.key: %v", err)
	}
	for _, p := range []string{filepath.Join(home, ".config", "widctl")} {
		_ = filepath.Walk(p, func(path string, fi os.FileInfo, err error) error {
			if err == nil && strings.HasSuffix(path, ".key") && fi.Mode().Perm() != 0o600 {
				t.Errorf("login key %s is %v, want 0600", path, fi.Mode().Perm())
			}
			return nil
		})
	}

	// A server (its SVID from the admin) that admits only alice's laptop.
	srvDir := filepath.Join(t.TempDir(), "server")
	a.widctl("svid", "issue", "/svc/server", "-o", srvDir).must(t)
	srvSVID, err := x509svid.Load(filepath.Join(srvDir, "svid.pem"), filepath.Join(srvDir, "svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	want := spiffeid.RequireFromPath(svid.ID.TrustDomain(), "/team/alice/laptop")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	addr := testkit.GreeterMTLS(t, tlsconfig.AuthorizeID(want), srvSVID, bundle)
	reply, err := testkit.Greet(ctx, addr, tlsconfig.AuthorizeAny(), svid, bundle)
	if err != nil {
		t.Fatalf("alice's SVID did not get her through mTLS: %v", err)
	}
	if reply != "hello "+want.String()+", you said hi\n" {
		t.Fatalf("the server answered %q", reply)
	}
	// The server refuses any other ID: its own SVID, say.
	if r, err := testkit.Greet(ctx, addr, tlsconfig.AuthorizeAny(), srvSVID, bundle); err == nil {
		t.Fatalf("the server admitted %s: %q", srvSVID.ID, r)
	}

	for _, r := range []struct {
		args []string
		want string
	}{
		{[]string{"/team/bob/x"}, "/team/bob/x"},
		{[]string{"/team/alice/laptop", "--ttl", "5h"}, "4h"},
		{[]string{"/team/alice/laptop", "--dns-san", "evil.example.com"}, "evil.example.com"},
	} {
		out := filepath.Join(t.TempDir(), "out")
		res := run("", append(append([]string{"svid", "issue"}, r.args...), "-o", out)...)
		if res.code == 0 || !strings.Contains(res.stderr, r.want) || strings.Count(strings.TrimSpace(res.stderr), "\n") != 0 {
			t.Errorf("svid issue %v: exit %d, stderr %q; want a one-sentence refusal naming %q", r.args, res.code, res.stderr, r.want)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("svid issue %v left %s behind", r.args, out)
		}
	}
	log := a.widctl("audit", "ls", "--actor", "alice", "--format", "json").must(t).stdout
	if n := strings.Count(log, `"svid.x509.issued"`); n != 1 {
		t.Errorf("audit ls --actor alice shows %d issuances, want 1", n)
	}
	if n := strings.Count(log, `"svid.denied"`); n != 3 {
		t.Errorf("audit ls --actor alice shows %d refusals, want 3", n)
	}

	// logout leaves neither key nor certificate behind.
	run("", "logout").must(t)
	_ = filepath.Walk(filepath.Join(home, ".config"), func(path string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && (strings.HasSuffix(path, ".key") || strings.HasSuffix(path, ".crt") || strings.HasSuffix(path, ".pem")) {
			t.Errorf("logout left %s", path)
		}
		return nil
	})
}
