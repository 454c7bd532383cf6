package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/zalando/go-keyring"
)

// TestHumanLoginSecretService is issue 5's keyring journey with the real
// binaries and a real Secret Service: widctl login puts the key in the
// keyring (service wid, account <auth>/<user>) and no key file anywhere,
// svid issue signs with it, and logout takes it out again.
// scripts/keyring-test.sh runs it inside a dbus-run-session with
// gnome-keyring unlocked; elsewhere it is skipped.
func TestHumanLoginSecretService(t *testing.T) {
	if os.Getenv("WID_KEYRING_TEST") == "" {
		t.Skip("set WID_KEYRING_TEST=1 with a Secret Service running (scripts/keyring-test.sh does)")
	}
	a := startAgent(t, newDataDir(t), "--no-dev-identity")
	a.widctl("role", "create", "dev", "--spiffe-path", "/team/alice/**", "--max-ttl", "4h").must(t)
	added := a.widctl("user", "add", "alice", "--roles", "dev").must(t)
	invite := inviteRE.FindStringSubmatch(added.stdout)
	if invite == nil {
		t.Fatalf("user add printed no invite:\n%s", added.stdout)
	}
	home := t.TempDir()
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config")}
	run := func(stdin string, args ...string) result { t.Helper(); return runWidctl(t, env, stdin, args...) }

	login := run("correct horse battery staple\n", "login", "--auth", a.addr, "--user", "alice", "--invite", invite[1], "--ca-pin", a.pin, "--password-stdin").must(t)
	if strings.Contains(login.stderr, "no OS keyring") {
		t.Fatalf("login fell back to a key file with a Secret Service running:\n%s", login.stderr)
	}
	account := a.addr + "/alice"
	if v, err := keyring.Get("wid", account); err != nil || !strings.Contains(v, "PRIVATE KEY") {
		t.Fatalf("the keyring holds no key for wid %s: %v", account, err)
	}
	noKeyFiles := func(when string) {
		t.Helper()
		_ = filepath.Walk(home, func(path string, fi os.FileInfo, err error) error {
			if err == nil && strings.HasSuffix(path, ".key") {
				t.Errorf("%s: a key file %s exists; the key belongs in the keyring", when, path)
			}
			return nil
		})
	}
	noKeyFiles("after login")
	if p, err := os.ReadFile(filepath.Join(home, ".config", "widctl", "profile.yaml")); err != nil || !strings.Contains(string(p), "key_store: keyring") || strings.Contains(string(p), "PRIVATE") {
		t.Fatalf("profile %q (%v): want key_store keyring and no secret", p, err)
	}

	// svid issue authenticates with the key from the keyring.
	dir := filepath.Join(t.TempDir(), "svid")
	run("", "svid", "issue", "/team/alice/laptop", "-o", dir).must(t)
	if _, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key")); err != nil {
		t.Fatalf("the issued SVID does not load: %v", err)
	}

	run("", "logout").must(t)
	if _, err := keyring.Get("wid", account); err != keyring.ErrNotFound {
		t.Errorf("after logout the keyring answers for wid %s: %v", account, err)
	}
	noKeyFiles("after logout")
}
