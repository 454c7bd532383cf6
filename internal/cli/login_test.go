package cli_test

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"github.com/wid-project/wid/internal/cli/clitest"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/root"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/loginstore"
)

// memKeyring is an OS keyring in memory; failing makes it act as if there
// were no keyring at all.
type memKeyring struct {
	mu      sync.Mutex
	m       map[string]string
	failing bool
}

var errNoKeyring = errors.New("no Secret Service on the session bus")

func (k *memKeyring) Set(s, a, v string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.failing {
		return errNoKeyring
	}
	if k.m == nil {
		k.m = map[string]string{}
	}
	k.m[s+"|"+a] = v
	return nil
}

func (k *memKeyring) Get(s, a string) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.failing {
		return "", errNoKeyring
	}
	v, ok := k.m[s+"|"+a]
	if !ok {
		return "", loginstore.ErrKeyNotFound
	}
	return v, nil
}

func (k *memKeyring) Delete(s, a string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.failing {
		return errNoKeyring
	}
	if _, ok := k.m[s+"|"+a]; !ok {
		return loginstore.ErrKeyNotFound
	}
	delete(k.m, s+"|"+a)
	return nil
}

func (k *memKeyring) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

// person runs widctl as a user on a laptop: no admin socket, a keyring.
type person struct {
	t       *testing.T
	srv     *authtest.Server
	keyring *memKeyring
	home    string
}

func (p person) run(stdin string, args ...string) (code int, stdout, stderr string) {
	p.t.Helper()
	return clitest.Widctl{T: p.t, Srv: p.srv, Main: root.Run, Person: true,
		Setup: func(f *cmdutil.Factory) { f.Logins.Keyring = p.keyring }}.RunIn(stdin, args...)
}

// newPerson starts an auth service with role dev (/team/alice/**, DNS SANs,
// max TTL 4h) and user alice, and returns alice's invite.
func newPerson(t *testing.T) (person, string) {
	t.Helper()
	home := clitest.Isolate(t)
	srv := authtest.Start(t)
	admin := newWidctl(t, srv)
	admin.OK("role", "create", "dev", "--spiffe-path", "/team/alice/**", "--dns-san", "*.alice.dev.example", "--max-ttl", "4h")
	var inv struct {
		Invite       string `json:"invite"`
		LoginCommand string `json:"login_command"`
	}
	out := admin.OK("user", "create", "alice", "--roles", "dev", "--format", "json")
	if err := json.Unmarshal([]byte(out), &inv); err != nil {
		t.Fatalf("user create printed %q: %v", out, err)
	}
	want := "widctl login --auth " + srv.Addr + " --user alice --invite " + inv.Invite + " --ca-pin " + srv.CAPin
	if inv.LoginCommand != want {
		t.Fatalf("login command = %q, want %q", inv.LoginCommand, want)
	}
	return person{t: t, srv: srv, keyring: &memKeyring{}, home: home}, inv.Invite
}

const password = "a long enough password"

func (p person) firstLogin(invite string) (int, string, string) {
	return p.run(password+"\n", "login", "--auth", p.srv.Addr, "--user", "alice", "--invite", invite, "--ca-pin", p.srv.CAPin, "--password-stdin")
}

// files lists the regular files under dir.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, path)
		}
		return nil
	})
	return out
}

func TestLoginStatusCallLogout(t *testing.T) {
	p, invite := newPerson(t)
	code, out, errOut := p.firstLogin(invite)
	if code != 0 {
		t.Fatalf("login: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "Logged in to "+p.srv.Addr+" as alice (roles dev)") || errOut != "" {
		t.Fatalf("login said %q, stderr %q", out, errOut)
	}
	if p.keyring.len() != 1 {
		t.Fatalf("keyring holds %d keys, want the login key", p.keyring.len())
	}
	cfgDir := filepath.Join(p.home, "config", "widctl")
	prof, err := os.ReadFile(filepath.Join(cfgDir, "profile.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(prof), "PRIVATE") || !strings.Contains(string(prof), "ca_pin: "+p.srv.CAPin) || !strings.Contains(string(prof), "key_store: keyring") {
		t.Fatalf("profile:\n%s", prof)
	}
	for _, f := range files(t, cfgDir) {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), "PRIVATE KEY") {
			t.Fatalf("%s holds the private key although the keyring took it", f)
		}
	}

	code, out, errOut = p.run("", "status")
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"as alice", "Roles:   dev", "/team/alice/**  DNS SANs *.alice.dev.example  TTL up to 4h  (role dev)", "Key:     in the OS keyring", "Expires: "} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	// Any command without an admin socket now goes over mTLS as alice.
	code, out, errOut = p.run("", "role", "get", "dev")
	if code != 0 || !strings.Contains(out, "/team/alice/**") {
		t.Fatalf("role get dev as alice: exit %d: %s %s", code, out, errOut)
	}
	code, _, errOut = p.run("", "user", "ls")
	if code != cmdutil.ExitAuth || !strings.Contains(errOut, "list") {
		t.Fatalf("user ls as alice: exit %d %q, want a denial (alice holds no admin rule)", code, errOut)
	}

	// The password alone works for the next login.
	if code, _, errOut := p.run(password+"\n", "login", "--auth", p.srv.Addr, "--user", "alice", "--password-stdin"); code != 0 {
		t.Fatalf("second login: exit %d: %s", code, errOut)
	}

	code, out, errOut = p.run("", "logout")
	if code != 0 || !strings.Contains(out, "Logged out alice") {
		t.Fatalf("logout: exit %d: %s %s", code, out, errOut)
	}
	if p.keyring.len() != 0 {
		t.Error("logout left the key in the keyring")
	}
	if left := files(t, cfgDir); len(left) != 0 {
		t.Errorf("logout left %v", left)
	}
	code, _, errOut = p.run("", "status")
	if code != cmdutil.ExitAuth || !strings.Contains(errOut, "run widctl login") {
		t.Errorf("status after logout: exit %d %q", code, errOut)
	}
}

func TestLoginWithoutKeyring(t *testing.T) {
	p, invite := newPerson(t)
	p.keyring.failing = true
	code, _, errOut := p.firstLogin(invite)
	if code != 0 {
		t.Fatalf("login: exit %d: %s", code, errOut)
	}
	keyFile := filepath.Join(p.home, "config", "widctl", "keys", p.srv.Addr, "alice.key")
	if strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "warning: no OS keyring available") || !strings.Contains(errOut, keyFile) || !strings.Contains(errOut, "gnome-keyring") {
		t.Errorf("warning = %q, want one line naming %s and how to get a keyring", errOut, keyFile)
	}
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", fi, err)
	}
	if di, err := os.Stat(filepath.Dir(keyFile)); err != nil || di.Mode().Perm() != 0o700 {
		t.Fatalf("key dir: %v, want mode 0700", di)
	}
	if code, out, errOut := p.run("", "status"); code != 0 || !strings.Contains(out, "key file (no keyring)") {
		t.Fatalf("status: exit %d: %s %s", code, out, errOut)
	}
	if code, _, errOut := p.run("", "logout"); code != 0 {
		t.Fatalf("logout: %s", errOut)
	}
	if left := files(t, filepath.Join(p.home, "config", "widctl")); len(left) != 0 {
		t.Errorf("logout left %v", left)
	}
}

// Every bad login input: one sentence, the right exit code, no login saved.
func TestLoginBadInput(t *testing.T) {
	p, invite := newPerson(t)
	cfgDir := filepath.Join(p.home, "config", "widctl")
	login := func(pw string, extra ...string) (int, string) {
		args := append([]string{"login", "--auth", p.srv.Addr, "--user", "alice", "--ca-pin", p.srv.CAPin, "--password-stdin"}, extra...)
		code, _, errOut := p.run(pw+"\n", args...)
		return code, errOut
	}
	check := func(name string, code int, errOut string, wantCode int, want string) {
		t.Helper()
		if code != wantCode || !strings.HasPrefix(errOut, "error: ") || !strings.Contains(errOut, want) || strings.Count(errOut, "\n") != 1 || strings.Contains(errOut, "rpc error") {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and one sentence with %q", name, code, errOut, wantCode, want)
		}
	}

	code, errOut := login(password)
	check("password before the invite", code, errOut, cmdutil.ExitAuth, "login failed: the user name, password, invite or TOTP code is wrong")
	code, errOut = login("short", "--invite", invite)
	check("short new password", code, errOut, cmdutil.ExitBadInput, "at least 12 characters")
	code, errOut = login(password, "--invite", invite)
	if code != 0 {
		t.Fatalf("login with the invite failed: %s", errOut)
	}
	p.run("", "logout")
	code, errOut = login(password, "--invite", invite)
	check("reused invite", code, errOut, cmdutil.ExitAuth, "the invite was already used")

	code, wrong := login("the wrong password")
	check("wrong password", code, wrong, cmdutil.ExitAuth, "login failed")
	_, _, unknown := p.run("the wrong password\n", "login", "--auth", p.srv.Addr, "--user", "bob", "--ca-pin", p.srv.CAPin, "--password-stdin")
	if unknown != wrong {
		t.Errorf("unknown user says %q, wrong password says %q", unknown, wrong)
	}

	code, _, errOut = p.run(password+"\n", "login", "--auth", p.srv.Addr, "--user", "alice", "--ca-pin", "sha256:"+strings.Repeat("ab", 32), "--password-stdin")
	check("wrong CA pin", code, errOut, cmdutil.ExitAuth, "does not match the pin")

	code, _, errOut = p.run("", "login", "--auth", p.srv.Addr, "--user", "alice", "--ca-pin", p.srv.CAPin)
	check("no terminal", code, errOut, cmdutil.ExitBadInput, "pass --password-stdin")

	for range 4 {
		login("the wrong password")
	}
	code, errOut = login(password)
	check("locked user", code, errOut, cmdutil.ExitAuth, "too many failed attempts")

	// An admin's reset lifts the lock with a new invite.
	admin := newWidctl(t, p.srv)
	var inv struct {
		Invite string `json:"invite"`
	}
	if err := json.Unmarshal([]byte(admin.OK("user", "reset", "alice", "--format", "json")), &inv); err != nil {
		t.Fatal(err)
	}
	if code, errOut := login("a brand new password", "--invite", inv.Invite); code != 0 {
		t.Fatalf("login with the reset invite: %s", errOut)
	}
	p.run("", "logout")
	if left := files(t, cfgDir); len(left) != 0 {
		t.Errorf("failed logins left %v", left)
	}
}

// A saved login refuses a different CA pin, and corrupt files say how to recover.
func TestLoginSavedState(t *testing.T) {
	p, invite := newPerson(t)
	if code, _, errOut := p.firstLogin(invite); code != 0 {
		t.Fatal(errOut)
	}
	cfgDir := filepath.Join(p.home, "config", "widctl")
	code, _, errOut := p.run(password+"\n", "login", "--auth", p.srv.Addr, "--user", "alice", "--ca-pin", "sha256:"+strings.Repeat("cd", 32), "--password-stdin")
	if code != cmdutil.ExitAuth || !strings.Contains(errOut, "differs from "+p.srv.CAPin) || !strings.Contains(errOut, "impersonating") {
		t.Errorf("changed pin: exit %d %q", code, errOut)
	}

	// A corrupt key in the keyring.
	for k := range p.keyring.m {
		p.keyring.m[k] = "not a key"
	}
	code, _, errOut = p.run("", "status")
	if code != cmdutil.ExitAuth || !strings.Contains(errOut, "login key of alice is corrupt: run widctl logout, then widctl login") {
		t.Errorf("corrupt key: exit %d %q", code, errOut)
	}

	// Logging in again replaces the corrupt key; past its expiry the login
	// says what to do.
	if code, _, errOut := p.firstLoginAgain(); code != 0 {
		t.Fatalf("login again: %s", errOut)
	}
	prof, err := p.loginStore().Profile()
	if err != nil {
		t.Fatal(err)
	}
	_, err = cmdutil.LoginIdentity(p.loginStore(), prof, prof.Expires.Add(time.Second))
	if want := "your login as alice to " + p.srv.Addr + " expired at " + prof.Expires.Format(time.RFC3339) + ": run widctl login"; err == nil || err.Error() != want {
		t.Errorf("expired login: %v, want %q", err, want)
	}

	// A corrupt profile.
	if err := os.WriteFile(filepath.Join(cfgDir, "profile.yaml"), []byte("auth: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = p.run("", "role", "get", "dev")
	if code != cmdutil.ExitBadInput || !strings.Contains(errOut, "profile.yaml is corrupt: remove it and run widctl login") {
		t.Errorf("corrupt profile: exit %d %q", code, errOut)
	}
}

func (p person) loginStore() *loginstore.LoginStore {
	return &loginstore.LoginStore{Dir: filepath.Join(p.home, "config", "widctl"), Keyring: p.keyring}
}

func (p person) firstLoginAgain() (int, string, string) {
	return p.run(password+"\n", "login", "--auth", p.srv.Addr, "--user", "alice", "--password-stdin")
}

func TestLoginTOTP(t *testing.T) {
	clitest.Isolate(t)
	srv := authtest.Start(t)
	admin := newWidctl(t, srv)
	admin.OK("role", "create", "dev", "--spiffe-path", "/team/bob/**")
	var inv struct {
		Invite string `json:"invite"`
		TOTP   bool   `json:"totp"`
	}
	if err := json.Unmarshal([]byte(admin.OK("user", "create", "bob", "--roles", "dev", "--totp", "--format", "json")), &inv); err != nil || !inv.TOTP {
		t.Fatalf("user create --totp: %+v %v", inv, err)
	}
	p := person{t: t, srv: srv, keyring: &memKeyring{}}
	code, out, errOut := p.run(password+"\n", "login", "--auth", srv.Addr, "--user", "bob", "--invite", inv.Invite, "--ca-pin", srv.CAPin, "--password-stdin")
	if code != 0 {
		t.Fatalf("first login: %s", errOut)
	}
	i := strings.Index(out, "otpauth://")
	if i < 0 {
		t.Fatalf("first login did not show the TOTP secret:\n%s", out)
	}
	key, err := otp.NewKeyFromURL(strings.TrimSpace(out[i:]))
	if err != nil {
		t.Fatal(err)
	}
	code, _, errOut = p.run(password+"\n", "login", "--user", "bob", "--password-stdin")
	if code != cmdutil.ExitAuth || !strings.Contains(errOut, "TOTP code is wrong") {
		t.Fatalf("login without a code: exit %d %q", code, errOut)
	}
	totpCode, _ := totp.GenerateCode(key.Secret(), time.Now())
	if code, out, errOut := p.run(password+"\n"+totpCode+"\n", "login", "--user", "bob", "--password-stdin"); code != 0 || strings.Contains(out, "otpauth") {
		t.Fatalf("login with a code: exit %d %s %s", code, out, errOut)
	}
	stale, _ := totp.GenerateCode(key.Secret(), time.Now().Add(-5*time.Minute))
	if code, _, errOut := p.run(password+"\n", "login", "--user", "bob", "--password-stdin", "--totp-code", stale); code != cmdutil.ExitAuth {
		t.Fatalf("login with a stale code: exit %d %s", code, errOut)
	}
}

// A --ttl over what the roles allow is capped, and widctl says so in one line.
func TestLoginTTLCapIsSaid(t *testing.T) {
	p, invite := newPerson(t)
	admin := newWidctl(t, p.srv)
	admin.RunIn(`kind: role
version: v1
metadata:
  name: dev
spec:
  allow:
    spiffe:
      - path: /team/alice/**
  options:
    max_session_ttl: 2h
`, "create", "-f", "-", "--force")
	code, _, errOut := p.run(password+"\n", "login", "--auth", p.srv.Addr, "--user", "alice", "--invite", invite, "--ca-pin", p.srv.CAPin, "--password-stdin", "--ttl", "30h")
	if code != 0 {
		t.Fatalf("login: exit %d: %s", code, errOut)
	}
	if want := "note: you asked for --ttl 30h, but your roles allow at most 2h; the login lasts 2h\n"; errOut != want {
		t.Fatalf("stderr = %q, want %q", errOut, want)
	}
	code, _, errOut = p.run(password+"\n", "login", "--auth", p.srv.Addr, "--user", "alice", "--password-stdin", "--ttl", "90m")
	if code != 0 || errOut != "" {
		t.Fatalf("a login within the cap: exit %d, stderr %q, want nothing on stderr", code, errOut)
	}
}

// user ls and user get show who is locked out by failed logins, in the
// table and as a status field for scripts, and user reset clears it.
func TestUserLsShowsLock(t *testing.T) {
	p, invite := newPerson(t)
	admin := newWidctl(t, p.srv)
	admin.OK("user", "create", "bob", "--roles", "dev")
	if code, _, errOut := p.firstLogin(invite); code != 0 {
		t.Fatalf("first login: %s", errOut)
	}
	p.run("", "logout")
	lockedRow := regexp.MustCompile(`(?m)^alice\s+dev\s+from 1 address\s`)
	freeRow := regexp.MustCompile(`(?m)^bob\s+dev\s+-\s`)
	if out := admin.OK("user", "ls"); !strings.Contains(out, "LOCKED") || lockedRow.MatchString(out) || !freeRow.MatchString(out) {
		t.Fatalf("user ls before any failure:\n%s", out)
	}

	for range 5 {
		p.run("the wrong password\n", "login", "--auth", p.srv.Addr, "--user", "alice", "--ca-pin", p.srv.CAPin, "--password-stdin")
	}
	if code, _, errOut := p.run(password+"\n", "login", "--auth", p.srv.Addr, "--user", "alice", "--ca-pin", p.srv.CAPin, "--password-stdin"); code != cmdutil.ExitAuth || !strings.Contains(errOut, "too many failed attempts") ||
		!strings.Contains(errOut, ", or ask an admin to reset the user (widctl user reset alice)\n") {
		t.Fatalf("alice is not locked: exit %d: %s", code, errOut)
	}
	if out := admin.OK("user", "ls"); !lockedRow.MatchString(out) || !freeRow.MatchString(out) {
		t.Errorf("user ls with alice locked from this address:\n%s", out)
	}
	if out := admin.OK("user", "get", "alice"); !regexp.MustCompile(`(?m)^Locked:\s+from 1 address$`).MatchString(out) {
		t.Errorf("user get alice:\n%s", out)
	}
	if out := admin.OK("get", "user/bob"); !regexp.MustCompile(`(?m)^Locked:\s+-$`).MatchString(out) {
		t.Errorf("get user/bob:\n%s", out)
	}
	var docs []struct {
		Metadata struct{ Name string }
		Status   map[string]any
	}
	out := admin.OK("user", "ls", "--format", "json")
	if err := json.Unmarshal([]byte(out), &docs); err != nil || len(docs) != 2 {
		t.Fatalf("user ls --format json: %v\n%s", err, out)
	}
	if docs[0].Metadata.Name != "alice" || docs[0].Status["locked_sources"] != 1.0 || docs[1].Status != nil {
		t.Errorf("user ls --format json:\n%s", out)
	}
	for _, secret := range []string{"argon2", "127.0.0.1", "invite", "totp"} {
		if strings.Contains(out, secret) {
			t.Errorf("user ls --format json gives away %q:\n%s", secret, out)
		}
	}
	if out := admin.OK("user", "get", "alice", "--format", "yaml"); !strings.Contains(out, "status:\n  locked_sources: 1\n") {
		t.Errorf("user get alice --format yaml:\n%s", out)
	}

	admin.OK("user", "reset", "alice")
	if out := admin.OK("user", "ls"); lockedRow.MatchString(out) || !regexp.MustCompile(`(?m)^alice\s+dev\s+-\s`).MatchString(out) {
		t.Errorf("user ls after the reset:\n%s", out)
	}
	if out := admin.OK("user", "get", "alice", "--format", "json"); strings.Contains(out, "status") {
		t.Errorf("user get alice after the reset:\n%s", out)
	}
}

// A login from before an admin reset the user is refused, and widctl says
// what to do: the auth service names the step, widctl words it.
func TestOldLoginAfterResetSaysLogInAgain(t *testing.T) {
	p, invite := newPerson(t)
	if code, _, errOut := p.firstLogin(invite); code != 0 {
		t.Fatalf("first login: %s", errOut)
	}
	newWidctl(t, p.srv).OK("user", "reset", "alice")
	code, _, errOut := p.run("", "role", "get", "dev")
	want := regexp.MustCompile(`^error: your certificate was revoked at \S+ \(user reset\): run widctl login again\n$`)
	if code != cmdutil.ExitAuth || !want.MatchString(errOut) {
		t.Fatalf("role get dev with the old login: exit %d %q, want %d matching %q", code, errOut, cmdutil.ExitAuth, want)
	}
}

// TestLoginToReplicas: a login given several replicas, the first of them
// down, logs in through the next, keeps the whole list in its profile, and
// widctl status names the replica that answered.
func TestLoginToReplicas(t *testing.T) {
	p, invite := newPerson(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	l.Close()
	list := down + "," + p.srv.Addr
	code, out, errOut := p.run(password+"\n", "login", "--auth", list, "--user", "alice", "--invite", invite, "--ca-pin", p.srv.CAPin, "--password-stdin")
	if code != 0 || !strings.Contains(out, "Logged in to "+list+" as alice") {
		t.Fatalf("login through %s: exit %d: %s%s", list, code, out, errOut)
	}
	prof, err := os.ReadFile(filepath.Join(p.home, "config", "widctl", "profile.yaml"))
	if err != nil || !strings.Contains(string(prof), "auth: "+list) {
		t.Fatalf("profile (%v):\n%s", err, prof)
	}
	code, out, errOut = p.run("", "status")
	if code != 0 || !strings.Contains(out, "Replica: "+p.srv.Addr+" answered") {
		t.Fatalf("status: exit %d:\n%s%s", code, out, errOut)
	}
	code, out, errOut = p.run("", "status", "--format", "json")
	var st struct{ Auth, Replica string }
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Auth != list || st.Replica != p.srv.Addr {
		t.Fatalf("status as JSON: exit %d: %s%s", code, out, errOut)
	}
}
