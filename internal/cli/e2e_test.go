package cli_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/clitest"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/root"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/testkit"
)

// widctl is the shared in-process runner, with this package's helpers.
type widctl struct{ clitest.Widctl }

func newWidctl(t *testing.T, srv *authtest.Server) widctl {
	return widctl{clitest.Widctl{T: t, Srv: srv, Main: root.Run}}
}

func start(t *testing.T, opts ...authtest.Option) widctl {
	t.Helper()
	return widctl{clitest.StartWidctl(t, root.Run, opts...)}
}

// A role made with flags and the same role from a file print identically:
// the YAML get prints is the document create -f takes.
func TestRoleFromFlagsEqualsRoleFromFile(t *testing.T) {
	w := start(t)
	w.OK("role", "create", "europe-foo",
		"--spiffe-path", "/region/europe/svc/foo", "--dns-san", "foo.example.com", "--ip-san", "10.0.0.0/8",
		"--deny-path", "/region/europe/svc/foo/admin", "--max-ttl", "24h")
	fromFlags := w.OK("get", "role/europe-foo", "--format", "yaml")

	doc := strings.ReplaceAll(fromFlags, "europe-foo", "europe-bar")
	code, out, errOut := w.RunIn(doc, "create", "-f", "-")
	if code != 0 || out != "created role/europe-bar\n" {
		t.Fatalf("create -f: exit %d, %q %q", code, out, errOut)
	}
	fromFile := w.OK("get", "role/europe-bar", "--format", "yaml")
	if strings.ReplaceAll(fromFile, "europe-bar", "europe-foo") != fromFlags {
		t.Errorf("from flags:\n%s\nfrom the file:\n%s", fromFlags, fromFile)
	}
	if got := w.OK("role", "get", "europe-foo", "--format", "yaml"); got != fromFlags {
		t.Errorf("role get differs from get role/NAME:\n%s", got)
	}
	if got, want := w.OK("role", "get", "europe-foo"), w.OK("get", "role/europe-foo"); got != want {
		t.Errorf("role get text differs from get role/NAME:\n%s\n%s", got, want)
	}
	if !strings.Contains(fromFlags, "max_svid_ttl: 24h") || !strings.Contains(fromFlags, "- path: /region/europe/svc/foo/admin") {
		t.Errorf("the role is not what the flags said:\n%s", fromFlags)
	}
}

// What the auth service refuses reaches the user as its sentence, with the
// exit code of its kind, and never as a raw gRPC error.
func TestServerErrors(t *testing.T) {
	w := start(t)
	w.OK("role", "create", "web", "--spiffe-path", "/svc/web/*")
	w.OK("bot", "create", "web-agent", "--roles", "web")
	w.OK("wi", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.user=web")
	wrongPin := "sha256:" + strings.Repeat("00", 32)

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"already exists", []string{"role", "create", "web", "--spiffe-path", "/x"}, cmdutil.ExitBadInput, "role/web already exists"},
		{"not found", []string{"role", "get", "nope"}, cmdutil.ExitNotFound, "role/nope does not exist"},
		{"update not found", []string{"user", "update", "nope", "--roles", "web"}, cmdutil.ExitNotFound, "user/nope does not exist"},
		{"role still held", []string{"rm", "role/web"}, cmdutil.ExitBadInput, "role web is held by bot web-agent"},
		{"unknown role", []string{"user", "create", "alice", "--roles", "ghost"}, cmdutil.ExitBadInput, "ghost"},
		{"token for a missing bot", []string{"token", "create", "--bot", "ghost"}, cmdutil.ExitNotFound, "ghost"},
		{"join token by file", []string{"create", "-f", "-"}, cmdutil.ExitBadInput, "join tokens are made by the auth service"},
		{"workload identity exists", []string{"wi", "create", "web", "--spiffe-id", "/x", "--rule", "workload.unix.uid=1"}, cmdutil.ExitBadInput, "workload_identity/web already exists"},
		{"workload identity not found", []string{"workload-identity", "rm", "nope"}, cmdutil.ExitNotFound, "workload_identity/nope does not exist"},
		{"wrong CA pin", []string{"--auth", w.Srv.Addr, "--ca-pin", wrongPin, "role", "ls"}, cmdutil.ExitAuth, "the auth service's CA does not match the pin " + wrongPin},
		{"no login over TCP", []string{"--auth", w.Srv.Addr, "--ca-pin", w.Srv.CAPin, "role", "ls"}, cmdutil.ExitAuth, "needs a login"},
		{"no CA known", []string{"--auth", w.Srv.Addr, "role", "ls"}, cmdutil.ExitBadInput, "pass --ca-pin"},
		{"unreachable socket", []string{"--admin-socket", w.Srv.DataDir + "/nothing.sock", "role", "ls"}, cmdutil.ExitUnavailable, "cannot reach the auth service at " + w.Srv.DataDir + "/nothing.sock: is widagent running?"},
		{"unreachable address", []string{"--auth", "127.0.0.1:1", "--ca-pin", w.Srv.CAPin, "role", "ls"}, cmdutil.ExitUnavailable, "cannot reach the auth service at 127.0.0.1:1"},
	}
	stdin := map[string]string{
		"join token by file": "kind: token\nversion: v1\nmetadata: {name: abc}\nspec: {bot: web-agent, method: token, uses: 1, used: 0, expires: 2030-01-02T15:04:05Z}\n",
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := w.RunIn(stdin[tt.name], tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d: %s", code, tt.code, errOut)
			}
			if !strings.HasPrefix(errOut, "error: ") || !strings.Contains(errOut, tt.want) || strings.Count(errOut, "\n") != 1 {
				t.Errorf("stderr = %q, want one line with %q", errOut, tt.want)
			}
			if strings.Contains(errOut, "rpc error") || strings.Contains(errOut, "code =") {
				t.Errorf("raw gRPC error shown: %q", errOut)
			}
			if out != "" {
				t.Errorf("stdout = %q", out)
			}
		})
	}
}

func TestBotAndTokens(t *testing.T) {
	w := start(t)
	w.OK("role", "create", "web", "--spiffe-path", "/svc/web/*")
	out := w.OK("bot", "create", "web-agent", "--roles", "web", "--token-ttl", "30m", "--format", "json")
	var j struct {
		Bot         string    `json:"bot"`
		Token       string    `json:"token"`
		TokenName   string    `json:"token_name"`
		Uses        int       `json:"uses"`
		Expires     time.Time `json:"expires"`
		JoinCommand string    `json:"join_command"`
	}
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("bot create --format json: %v\n%s", err, out)
	}
	wantCmd := fmt.Sprintf("WID_JOIN_TOKEN=%s widagent start --roles agent --auth %s --ca-pin %s", j.Token, w.Srv.Addr, w.Srv.CAPin)
	if j.Bot != "web-agent" || len(j.Token) < 32 || j.JoinCommand != wantCmd || j.Uses != 1 {
		t.Errorf("bot create = %+v, want join command %q", j, wantCmd)
	}
	if d := time.Until(j.Expires); d < 25*time.Minute || d > 31*time.Minute {
		t.Errorf("token expires in %v, want about 30m", d)
	}

	text := w.OK("token", "create", "--bot", "web-agent", "--uses", "3")
	if !strings.Contains(text, "Join token for bot web-agent (3 uses, expires ") || !regexp.MustCompile(`\n  WID_JOIN_TOKEN=[0-9a-f]{64} widagent start --roles agent --auth `+regexp.QuoteMeta(w.Srv.Addr)+` --ca-pin `).MatchString(text) {
		t.Errorf("token create printed:\n%s", text)
	}
	secret := strings.TrimSpace(strings.Split(text, "\n")[1])

	for _, format := range []string{"text", "json", "yaml"} {
		ls := w.OK("token", "ls", "--format", format)
		if strings.Contains(ls, secret) || strings.Contains(ls, j.Token) || strings.Contains(ls, "secret_hash") {
			t.Errorf("token ls --format %s shows a secret:\n%s", format, ls)
		}
		if !strings.Contains(ls, j.TokenName) {
			t.Errorf("token ls --format %s misses token %s:\n%s", format, j.TokenName, ls)
		}
	}
	if ls := w.OK("token", "ls"); !strings.Contains(ls, "0/3") || !strings.HasPrefix(ls, "NAME ") {
		t.Errorf("token ls:\n%s", ls)
	}
	if got := w.OK("token", "rm", j.TokenName); got != "removed token/"+j.TokenName+"\n" {
		t.Errorf("token rm printed %q", got)
	}
	w.OK("bot", "rm", "web-agent")
	code, _, errOut := w.Run("token", "ls")
	if code != 0 || !strings.Contains(errOut, "no join tokens") {
		t.Errorf("after bot rm, token ls: exit %d, %q (a bot's tokens go with it)", code, errOut)
	}
}

func TestExplainExitCodes(t *testing.T) {
	w := start(t)
	w.OK("role", "create", "web", "--spiffe-path", "/svc/*", "--deny-path", "/svc/admin", "--max-ttl", "1h")
	w.OK("user", "create", "alice", "--roles", "web")

	code, out, _ := w.Run("explain", "--user", "alice", "--spiffe-id", "/svc/web")
	if code != 0 || !strings.HasPrefix(out, "ALLOWED: user alice may get spiffe://example.org/svc/web\n") {
		t.Errorf("allowed: exit %d\n%s", code, out)
	}
	code, out, errOut := w.Run("explain", "--user", "alice", "--spiffe-id", "spiffe://example.org/svc/admin")
	if code != cmdutil.ExitError || !strings.HasPrefix(out, "DENIED: user alice may not get spiffe://example.org/svc/admin\n") || errOut != "" {
		t.Errorf("denied: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "/svc/admin") || !strings.Contains(out, "Reason:") {
		t.Errorf("the denial does not say why:\n%s", out)
	}
	code, out, _ = w.Run("explain", "--role", "web", "--spiffe-id", "/svc/web", "--ttl", "2h", "--format", "json")
	var e struct {
		Allowed bool
		Check   string
		Reason  string
	}
	if err := json.Unmarshal([]byte(out), &e); err != nil || code != 1 || e.Allowed || e.Check != "ttl_over_max" {
		t.Errorf("ttl over max: exit %d, %+v, %v\n%s", code, e, err, out)
	}
}

func TestAuditAndBundle(t *testing.T) {
	w := start(t)
	w.OK("role", "create", "web", "--spiffe-path", "/svc/*")

	ls := w.OK("audit", "ls", "--type", "resource.created")
	lines := strings.Split(strings.TrimSpace(ls), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "TIME") || !strings.Contains(lines[1], "role/web") || !strings.Contains(lines[1], "success") {
		t.Errorf("audit ls:\n%s", ls)
	}
	var events []struct {
		Seq      int64
		Type     string
		Resource string
		Hash     string
	}
	if err := json.Unmarshal([]byte(w.OK("audit", "ls", "--format", "json", "--since", "1h")), &events); err != nil || len(events) < 2 {
		t.Fatalf("audit ls --format json: %v, %d events", err, len(events))
	}
	if last := events[len(events)-1]; last.Type != "resource.created" || last.Resource != "role/web" || last.Hash == "" {
		t.Errorf("last event = %+v", last)
	}
	if out := w.OK("audit", "ls", "--until", "2000-01-01T00:00:00Z"); out != "" {
		t.Errorf("events before 2000: %q", out)
	}

	// Events record full SPIFFE IDs; a bare path is resolved in the trust domain.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(key.Public())
	if _, err := w.Srv.AdminClient(t).SignX509SVID(context.Background(), &authv1.SignX509SVIDRequest{SpiffeId: "/svc/web", PublicKey: pub}); err != nil {
		t.Fatalf("issuing an SVID as admin: %v", err)
	}
	byPath := w.OK("audit", "ls", "--spiffe-id", "/svc/web")
	byID := w.OK("audit", "ls", "--spiffe-id", "spiffe://example.org/svc/web")
	if byPath != byID || !strings.Contains(byPath, "svid.x509.issued") || strings.Contains(byPath, "resource.created") {
		t.Errorf("audit ls by path:\n%s\nby ID:\n%s", byPath, byID)
	}
	events = events[:0]
	if err := json.Unmarshal([]byte(w.OK("audit", "ls", "--format", "json")), &events); err != nil {
		t.Fatal(err)
	}

	verify := w.OK("audit", "verify")
	if !strings.HasPrefix(verify, fmt.Sprintf("audit log verified: %d events, head ", len(events))) {
		t.Errorf("audit verify: %q", verify)
	}

	td := spiffeid.RequireTrustDomainFromString(w.Srv.TrustDomain)
	pemOut := w.OK("bundle", "export")
	xb, err := x509bundle.Parse(td, []byte(pemOut))
	if err != nil || len(xb.X509Authorities()) == 0 {
		t.Errorf("bundle export is not an X.509 bundle go-spiffe reads: %v", err)
	}
	file := t.TempDir() + "/bundle.jwks"
	code, out, errOut := w.Run("bundle", "export", "--format", "jwks", "-o", file)
	if code != 0 || out != "" || !strings.Contains(errOut, "to "+file) {
		t.Fatalf("bundle export -o: exit %d %q %q", code, out, errOut)
	}
	sb, err := spiffebundle.Load(td, file)
	if err != nil || len(sb.X509Authorities()) == 0 || len(sb.JWTAuthorities()) == 0 {
		t.Errorf("the JWKS is not a SPIFFE bundle with x509-svid and jwt-svid keys: %v", err)
	}
	// The file is there now: -o does not replace it unless --force.
	if err := os.WriteFile(file, []byte("kept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := w.Run("bundle", "export", "--format", "json", "-o", file); code != cmdutil.ExitBadInput || !strings.Contains(errOut, "pass --force") {
		t.Errorf("bundle export -o over a file: exit %d %q", code, errOut)
	}
	if b, _ := os.ReadFile(file); string(b) != "kept\n" {
		t.Errorf("the refused export changed the file: %q", b)
	}
	w.OK("bundle", "export", "--format", "json", "-o", file, "--force")
	if _, err := spiffebundle.Load(td, file); err != nil {
		t.Errorf("bundle export --format json --force: %v", err)
	}
}

// audit tail prints the backlog, then events as they happen, and ends
// cleanly when interrupted.
func TestAuditTail(t *testing.T) {
	w := start(t)
	w.OK("role", "create", "first", "--spiffe-path", "/a")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := testkit.NewSyncBuffer()
	ios, _, _, errOut := iostreams.Test()
	ios.Out = out
	done := make(chan int, 1)
	go func() {
		done <- root.Run(ctx, cmdutil.NewFactory(ios), []string{"--admin-socket", w.Srv.AdminSocket, "audit", "tail", "--backlog", "1", "--format", "json"})
	}()
	out.WaitFor(t, "role/first", 10*time.Second)
	w.OK("role", "create", "second", "--spiffe-path", "/b")
	out.WaitFor(t, "role/second", 10*time.Second)
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("tail ended with %d: %s", code, errOut)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tail did not stop when interrupted")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want the backlog of 1 and 1 live event, got:\n%s", out.String())
	}
	for _, l := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Errorf("line is not one JSON event: %q", l)
		}
	}
}

func TestVersionShowsServer(t *testing.T) {
	w := start(t)
	out := w.OK("version")
	if out != "widctl dev\nauth service test (trust domain example.org)\n" {
		t.Errorf("version:\n%s", out)
	}
	code, out, _ := w.Run("--admin-socket", w.Srv.DataDir+"/none.sock", "version")
	if code != 0 || !strings.Contains(out, "auth service: unknown (cannot reach the auth service at") {
		t.Errorf("version without a server: exit %d\n%s", code, out)
	}
}

// A workload identity made with flags and the same one written as YAML by
// hand print identically, and the per-noun commands show what the generic
// ones show.
func TestWorkloadIdentityFromFlagsEqualsFromFile(t *testing.T) {
	w := start(t)
	out := w.OK("workload-identity", "create", "per-uid",
		"--spiffe-id", "/uid/{{ workload.unix.uid }}", "--hint", "per uid",
		"--dns-san", "{{ workload.unix.user }}.users.example.com", "--x509-ttl", "1h", "--jwt-ttl", "5m",
		"--label", "env=prod", "--description", "one SPIFFE ID per uid",
		"--rule", "workload.unix.uid=1000|1001,workload.unix.path~/opt/app/*",
		"--rule", `workload.unix.group=backup,workload.unix.user!=root,workload.unix.supplementary_gids!=0\,10|10`)
	if out != "created workload_identity/per-uid\n" {
		t.Errorf("create printed %q", out)
	}
	doc := `kind: workload_identity
version: v1
metadata:
  name: from-file
  description: one SPIFFE ID per uid
  labels: {env: prod}
spec:
  spiffe: {id: "/uid/{{ workload.unix.uid }}", hint: per uid}
  x509: {dns_sans: ["{{ workload.unix.user }}.users.example.com"], ttl: 1h}
  jwt: {ttl: 5m}
  rules:
    allow:
      - conditions:
          - {attribute: workload.unix.uid, in: ["1000", "1001"]}
          - {attribute: workload.unix.path, glob: /opt/app/*}
      - conditions:
          - {attribute: workload.unix.group, eq: backup}
          - {attribute: workload.unix.user, not_eq: root}
          - {attribute: workload.unix.supplementary_gids, not_in: ["0,10", "10"]}
`
	code, out, errOut := w.RunIn(doc, "create", "-f", "-")
	if code != 0 || out != "created workload_identity/from-file\n" {
		t.Fatalf("create -f: exit %d, %q %q", code, out, errOut)
	}
	fromFlags := w.OK("get", "workload_identity/per-uid", "--format", "yaml")
	fromFile := w.OK("get", "workload_identity/from-file", "--format", "yaml")
	if strings.Replace(fromFile, "name: from-file\n", "name: per-uid\n", 1) != fromFlags {
		t.Errorf("from flags:\n%s\nfrom the file:\n%s", fromFlags, fromFile)
	}
	for _, format := range []string{"text", "json", "yaml"} {
		got := w.OK("wi", "get", "per-uid", "--format", format)
		if want := w.OK("get", "workload_identity/per-uid", "--format", format); got != want {
			t.Errorf("wi get --format %s differs from get workload_identity/NAME:\n%s\n%s", format, got, want)
		}
	}

	ls := w.OK("workload-identity", "ls")
	lines := strings.Split(strings.TrimSpace(ls), "\n")
	if len(lines) != 3 || !regexp.MustCompile(`^NAME +SPIFFE ID +HINT +RULES +LABELS$`).MatchString(lines[0]) ||
		!regexp.MustCompile(`^per-uid +/uid/\{\{ workload.unix.uid \}\} +per uid +workload.unix.uid=1000\|1001,workload.unix.path~/opt/app/\*; workload.unix.group=backup,.*supplementary_gids!=0\\,10\|10 +env=prod$`).MatchString(lines[2]) {
		t.Errorf("wi ls:\n%s", ls)
	}
	// What ls shows as a rule is what --rule takes back.
	rule := strings.Fields(strings.SplitN(lines[2], "; ", 2)[1])[0]
	w.OK("wi", "create", "again", "--spiffe-id", "/again", "--rule", rule)
	if got := w.OK("wi", "get", "again", "--format", "json"); !strings.Contains(got, `"not_in": [`+"\n"+`                "0,10",`) {
		t.Errorf("the rule from ls did not come back the same:\n%s", got)
	}

	code, _, errOut = w.Run("wi", "create", "per-uid", "--spiffe-id", "/x", "--rule", "workload.unix.uid=1")
	if code != cmdutil.ExitBadInput || !strings.Contains(errOut, "workload_identity/per-uid already exists") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("create over an existing one: exit %d %q", code, errOut)
	}
	if out := w.OK("wi", "create", "per-uid", "--force", "--spiffe-id", "/x", "--rule", "workload.unix.uid=1"); out != "created or replaced workload_identity/per-uid\n" {
		t.Errorf("create --force printed %q", out)
	}
	if got := w.OK("get", "workload_identity/per-uid", "--format", "yaml"); !strings.Contains(got, "id: /x\n") || strings.Contains(got, "hint") {
		t.Errorf("--force did not replace:\n%s", got)
	}
	if out := w.OK("workload-identity", "rm", "per-uid"); out != "removed workload_identity/per-uid\n" {
		t.Errorf("rm printed %q", out)
	}
	if code, _, errOut := w.Run("wi", "get", "per-uid"); code != cmdutil.ExitNotFound {
		t.Errorf("after rm, get: exit %d %q", code, errOut)
	}
}

// explain --workload-attrs: which workload identities a workload gets from
// a bot's agent, and why not the others.
func TestExplainWorkloadAttrs(t *testing.T) {
	w := start(t)
	w.OK("wi", "create", "per-uid", "--spiffe-id", "/uid/{{ workload.unix.uid }}", "--label", "env=prod", "--rule", "workload.unix.uid=1000|1001")
	w.OK("wi", "create", "db", "--spiffe-id", "/svc/db", "--label", "env=prod", "--rule", "workload.unix.user=db")
	w.OK("wi", "create", "staging", "--spiffe-id", "/staging/{{ workload.unix.user }}", "--label", "env=staging", "--rule", "workload.unix.uid=1000")
	role := "kind: role\nversion: v1\nmetadata: {name: prod-workloads}\nspec:\n  allow:\n    spiffe: [{path: /**}]\n    workload_identity_labels: {env: [prod]}\n"
	if code, _, errOut := w.RunIn(role, "create", "-f", "-"); code != 0 {
		t.Fatalf("creating the role: %s", errOut)
	}
	w.OK("bot", "create", "web-agent", "--roles", "prod-workloads")

	// Without --bot, explain asks for the bot local-agent. widagent start
	// makes it when it starts its agent; authtest runs no agent.
	code, _, errOut := w.Run("explain", "--workload-attrs", "workload.unix.uid=1000")
	if code != cmdutil.ExitNotFound || !strings.Contains(errOut, "the bot local-agent does not exist: widagent start makes it when it runs an agent, or pass --bot NAME") {
		t.Errorf("without the bot local-agent: exit %d %q", code, errOut)
	}
	w.OK("bot", "create", "local-agent", "--roles", "local-agent")

	type answer struct {
		Principal  string
		Attributes map[string]string
		Identities []struct {
			Identity string
			Issued   bool
			SPIFFEID string `json:"spiffe_id"`
			Reason   string
			Check    string
		}
	}
	explain := func(wantCode int, args ...string) answer {
		t.Helper()
		code, out, errOut := w.Run(append([]string{"explain", "--format", "json"}, args...)...)
		if code != wantCode {
			t.Fatalf("explain %v: exit %d, want %d: %s", args, code, wantCode, errOut)
		}
		var a answer
		if err := json.Unmarshal([]byte(out), &a); err != nil {
			t.Fatalf("explain %v: %v\n%s", args, err, out)
		}
		return a
	}
	byName := func(a answer) map[string]string {
		m := map[string]string{}
		for _, i := range a.Identities {
			if i.Issued {
				m[i.Identity] = "issued " + i.SPIFFEID
			} else {
				m[i.Identity] = "refused " + i.Check
			}
		}
		return m
	}

	// The bot local-agent may issue every workload identity.
	a := explain(0, "--workload-attrs", "workload.unix.uid=1000,workload.unix.user=web")
	got := byName(a)
	want := map[string]string{"per-uid": "issued spiffe://example.org/uid/1000", "db": "refused rules", "staging": "issued spiffe://example.org/staging/web"}
	if a.Principal != "bot local-agent" || !reflect.DeepEqual(got, want) {
		t.Errorf("for local-agent: %+v\ngot %v\nwant %v", a, got, want)
	}
	for _, i := range a.Identities {
		if i.Identity == "db" && !strings.Contains(i.Reason, "workload.unix.user") {
			t.Errorf("the refusal of db does not say why: %q", i.Reason)
		}
	}

	// web-agent's roles select only env=prod.
	got = byName(explain(0, "--bot", "web-agent", "--workload-attrs", "workload.unix.uid=1000", "--workload-attrs", "workload.unix.user=web"))
	if got["per-uid"] != "issued spiffe://example.org/uid/1000" || got["staging"] != "refused not_selected" || !strings.HasPrefix(got["db"], "refused ") {
		t.Errorf("for web-agent: %v", got)
	}

	// Nothing issued is a "no": exit 1, with the table still printed.
	code, out, _ := w.Run("explain", "--workload-attrs", "workload.unix.uid=5,workload.unix.user=nobody")
	if code != cmdutil.ExitError || !regexp.MustCompile(`(?m)^IDENTITY +RESULT +SPIFFE ID +REASON\n`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^per-uid +refused +- +\S`).MatchString(out) {
		t.Errorf("nothing issued: exit %d\n%s", code, out)
	}

	code, _, errOut = w.Run("explain", "--bot", "ghost", "--workload-attrs", "workload.unix.uid=1")
	if code != cmdutil.ExitNotFound || !strings.Contains(errOut, "ghost") {
		t.Errorf("unknown bot: exit %d %q", code, errOut)
	}
}
