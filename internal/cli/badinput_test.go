package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/cli/clitest"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/root"
)

// Every bad input the issue lists gets one sentence that says what is wrong
// and what to do, exit code 2, and nothing sent to the auth service (the
// factory fails the test if a command asks for a client).
func TestBadInput(t *testing.T) {
	dir := clitest.Isolate(t)
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodRole := "kind: role\nversion: v1\nmetadata:\n  name: web\nspec:\n  allow:\n    spiffe:\n      - path: /svc/web\n"
	long := "/" + strings.Repeat("a", 2048)
	configDir := filepath.Join(dir, "config", "widctl")
	if err := os.MkdirAll(configDir, 0o700); err != nil {
		t.Fatal(err)
	}
	badConfig := file("bad-config.yaml", "format: json\nadmin-socket: /x\n")
	issued := filepath.Join(dir, "issued")
	if err := os.Mkdir(issued, 0o700); err != nil {
		t.Fatal(err)
	}
	file("issued/svid.key", "an earlier key")
	notADir := file("not-a-dir", "")

	tests := []struct {
		name string
		args []string
		want string // a fragment of the one sentence on stderr
		code int
	}{
		// SPIFFE paths and IDs.
		{"double slash", []string{"role", "create", "web", "--spiffe-path", "/svc//web"}, `--spiffe-path: path pattern "/svc//web" has an empty segment 2 ("//")`, 2},
		{"dot segment", []string{"role", "create", "web", "--spiffe-path", "/svc/./web"}, `has a "." segment`, 2},
		{"dot dot segment", []string{"role", "create", "web", "--spiffe-path", "/svc/../web"}, `has a ".." segment`, 2},
		{"percent", []string{"role", "create", "web", "--spiffe-path", "/svc/%2e"}, `has the character '%' in segment "%2e"`, 2},
		{"trailing slash", []string{"role", "create", "web", "--spiffe-path", "/svc/"}, `ends with "/"`, 2},
		{"no leading slash", []string{"role", "create", "web", "--spiffe-path", "svc"}, `must start with "/"`, 2},
		{"deny path", []string{"role", "create", "web", "--spiffe-path", "/svc/*", "--deny-path", "/svc//x"}, `--deny-path: path pattern "/svc//x" has an empty segment`, 2},
		{"path over 2048 bytes", []string{"role", "create", "web", "--spiffe-path", long}, "over the limit of 2048 bytes", 2},
		{"upper-case trust domain", []string{"explain", "--bot", "b", "--spiffe-id", "spiffe://Example.ORG/svc/web"}, `has upper-case letters in its trust domain "Example.ORG": trust domains are lower-case, write "example.org"`, 2},
		{"id over 2048 bytes", []string{"explain", "--bot", "b", "--spiffe-id", "spiffe://example.org" + long}, "over the limit of 2048 bytes", 2},
		{"id with percent", []string{"explain", "--role", "r", "--spiffe-id", "spiffe://example.org/a%20b"}, "no percent-encoding", 2},
		{"id with dot dot", []string{"audit", "ls", "--spiffe-id", "/svc/../x"}, `--spiffe-id: SPIFFE ID path "/svc/../x" has a ".." segment`, 2},
		{"not an id", []string{"explain", "--user", "u", "--spiffe-id", "http://example.org/x"}, "is neither a SPIFFE ID nor a path", 2},
		// Globs.
		{"partial glob", []string{"role", "create", "web", "--spiffe-path", "/svc/web-*"}, `has the partial glob "web-*"`, 2},
		{"inner double star", []string{"role", "update", "web", "--spiffe-path", "/svc/**/admin"}, "** is only allowed as the last segment", 2},
		// CIDRs and SANs.
		{"bad CIDR", []string{"role", "create", "web", "--spiffe-path", "/svc/*", "--ip-san", "10.0.0.0/33"}, `--ip-san: IP range "10.0.0.0/33" is not a CIDR`, 2},
		{"not an IP", []string{"role", "create", "web", "--spiffe-path", "/svc/*", "--ip-san", "web"}, "--ip-san", 2},
		{"IP as DNS SAN", []string{"role", "create", "web", "--spiffe-path", "/svc/*", "--dns-san", "10.1.2.3"}, `--dns-san "10.1.2.3" is an IP address: put it in --ip-san instead`, 2},
		{"SANs without a path", []string{"role", "create", "web", "--deny-path", "/x", "--dns-san", "a.example.com"}, "--dns-san and --ip-san apply to the granted paths", 2},
		{"explain IP is a CIDR", []string{"explain", "--bot", "b", "--spiffe-id", "/x", "--ip-san", "10.0.0.0/8"}, `--ip-san "10.0.0.0/8" is not an IP address`, 2},
		// TTLs.
		{"ttl not a duration", []string{"role", "create", "web", "--spiffe-path", "/x", "--max-ttl", "1 day"}, `invalid argument "1 day" for "--max-ttl" flag: "1 day" is not a duration: write it like 90s, 15m, 1h, 24h or 7d`, 2},
		{"ttl negative", []string{"token", "create", "--bot", "b", "--ttl=-1h"}, `duration "-1h" must be positive`, 2},
		{"ttl over the maximum", []string{"role", "create", "web", "--spiffe-path", "/x", "--max-ttl", "48h"}, "--max-ttl 48h is over the 24h that any SVID may live", 2},
		{"explain ttl", []string{"explain", "--bot", "b", "--spiffe-id", "/x", "--ttl", "soon"}, `"soon" is not a duration`, 2},
		{"bot token ttl", []string{"bot", "create", "b", "--roles", "r", "--token-ttl", "0"}, `duration "0" must be positive`, 2},
		// Kinds, names and YAML.
		{"unknown kind", []string{"get", "widget/x"}, `unknown kind "widget": use one of role, user, bot, token, workload_identity`, 2},
		{"unknown kind to rm", []string{"rm", "widgets/x"}, `unknown kind "widgets"`, 2},
		{"not kind/name", []string{"rm", "role"}, `"role" is not KIND/NAME`, 2},
		{"unknown kind in file", []string{"create", "-f", file("kind.yaml", "kind: rolez\nversion: v1\nmetadata: {name: x}\nspec: {}\n")}, `unknown kind "rolez"`, 2},
		{"unknown YAML key", []string{"create", "-f", file("key.yaml", goodRole+"    spife: []\n")}, `line 9: field "spife" not found`, 2},
		{"two bad documents", []string{"create", "-f", file("two.yaml", "kind: role\nversion: v2\nmetadata: {name: a}\nspec: {}\n---\n"+goodRole+"---\nkind: user\nversion: v1\nmetadata: {name: B}\nspec: {roles: [web]}\n")}, "has 2 problems, nothing was sent:\n  document 1: ", 2},
		{"missing file", []string{"create", "-f", filepath.Join(dir, "nope.yaml")}, "does not exist: check the path given to -f", 2},
		{"no file", []string{"create"}, "no file given: pass -f FILE, or -f - to read from stdin", 2},
		{"file without -f", []string{"create", "roles.yaml"}, `unexpected argument "roles.yaml": to create what a file holds, run widctl create -f roles.yaml`, 2},
		{"empty file", []string{"create", "-f", file("empty.yaml", "\n# nothing\n")}, "empty.yaml: no resource found", 2},
		{"upper-case name", []string{"role", "create", "Web", "--spiffe-path", "/x"}, `name "Web" is invalid: use 1-63 lower-case letters`, 2},
		{"role grants nothing", []string{"role", "create", "web"}, `role "web" grants nothing: give at least one --spiffe-path`, 2},
		{"update changes nothing", []string{"role", "update", "web"}, "nothing to change", 2},
		{"user without roles", []string{"user", "create", "alice"}, `user "alice" needs roles: pass --roles`, 2},
		{"bot without roles", []string{"bot", "create", "ci"}, `bot "ci" needs roles`, 2},
		{"token without bot", []string{"token", "create"}, "no bot given: pass --bot NAME", 2},
		{"token uses", []string{"token", "create", "--bot", "ci", "--uses", "0"}, "--uses 0 is too few", 2},
		// Output format.
		{"bad --format", []string{"role", "ls", "--format", "xml"}, `unknown output format "xml": use text, json or yaml`, 2},
		{"bad WIDCTL_FORMAT", []string{"audit", "verify", "--format", "csv"}, `unknown output format "csv"`, 2},
		{"bad bundle format", []string{"bundle", "export", "--format", "yaml"}, `unknown bundle format "yaml": use pem, spiffe, or jwks (also called json)`, 2},
		{"bundle over a file", []string{"bundle", "export", "-o", notADir}, notADir + " already exists: pass --force to replace it", 2},
		// Audit filters.
		{"bad since", []string{"audit", "ls", "--since", "yesterday"}, `--since "yesterday" is neither a duration back from now`, 2},
		{"since after until", []string{"audit", "ls", "--since", "1h", "--until", "2h"}, "--since is not before --until", 2},
		{"bad outcome", []string{"audit", "tail", "--outcome", "maybe"}, `--outcome "maybe" is unknown: use success, denied or error`, 2},
		{"bad limit", []string{"audit", "ls", "--limit", "0"}, "--limit 0 is out of range", 2},
		{"unknown audit type", []string{"audit", "ls", "--type", "nosuch.type"}, `--type "nosuch.type" is not an event type: use one of svid.x509.issued`, 2},
		{"misspelt audit type", []string{"audit", "tail", "--type", "svid.x509.isued"}, `--type "svid.x509.isued" is not an event type (did you mean "svid.x509.issued"?)`, 2},
		// Explain.
		{"explain for nobody", []string{"explain", "--spiffe-id", "/x"}, "explain for whom? pass one of --user NAME, --bot NAME or --role NAME", 2},
		{"explain for two", []string{"explain", "--user", "a", "--bot", "b", "--spiffe-id", "/x"}, "--user and --bot given together", 2},
		{"explain without id", []string{"explain", "--user", "a"}, "no SPIFFE ID given: pass --spiffe-id", 2},
		// Workload identities.
		{"wi unclosed template", []string{"workload-identity", "create", "web", "--spiffe-id", "/svc/{{ workload.unix.uid", "--rule", "workload.unix.uid=1000"}, `--spiffe-id is invalid: template "/svc/{{ workload.unix.uid" has "{{" without a closing "}}": write placeholders as {{ workload.unix.uid }}`, 2},
		{"wi unknown template attribute", []string{"wi", "create", "web", "--spiffe-id", "/uid/{{ uid }}", "--rule", "workload.unix.uid=1000"}, `--spiffe-id is invalid: template "/uid/{{ uid }}": attribute "uid" is not a workload attribute: write it like workload.unix.uid`, 2},
		{"wi bad DNS SAN template", []string{"wi", "create", "web", "--spiffe-id", "/svc/web", "--dns-san", "{{ workload.unix.user }.example.com", "--rule", "workload.unix.uid=1000"}, `--dns-san: template "{{ workload.unix.user }.example.com" has "{{" without a closing "}}"`, 2},
		{"wi full SPIFFE ID", []string{"wi", "create", "web", "--spiffe-id", "spiffe://example.org/svc/web", "--rule", "workload.unix.uid=1000"}, `--spiffe-id "spiffe://example.org/svc/web" is a full SPIFFE ID: write only the path`, 2},
		{"wi template split by the shell", []string{"wi", "create", "web", "--spiffe-id", "/uid/{{", "workload.unix.uid", "}}", "--rule", "workload.unix.uid=1000"}, `unexpected argument "workload.unix.uid": the shell split a {{ ATTRIBUTE }} placeholder at its spaces, so quote the template`, 2},
		{"wi unknown rule attribute", []string{"wi", "create", "web", "--spiffe-id", "/svc/web", "--rule", "uid=1000"}, `--rule "uid=1000": condition "uid=1000": attribute "uid" is not a workload attribute: write it like workload.unix.uid`, 2},
		{"wi bad glob", []string{"wi", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.path~/opt/[a-"}, `--rule "workload.unix.path~/opt/[a-": condition "workload.unix.path~/opt/[a-": "/opt/[a-" is not a valid glob: use *, ? and [a-z] as in shell patterns`, 2},
		{"wi empty rule", []string{"wi", "create", "web", "--spiffe-id", "/svc/web", "--rule", ""}, `--rule "": the rule is empty: give at least one condition, such as workload.unix.uid=1000`, 2},
		{"wi empty condition", []string{"wi", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid=1,,workload.unix.gid=2"}, "condition 2 is empty: separate conditions with single commas", 2},
		{"wi condition without operator", []string{"wi", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid=1", "--rule", "workload.unix.user"}, `--rule 2 "workload.unix.user": condition "workload.unix.user" has no operator: write ATTR=VALUE, ATTR!=VALUE, ATTR=A|B|C, ATTR!=A|B|C or ATTR~GLOB`, 2},
		{"wi double equals", []string{"wi", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid==1000"}, `has "==": write a single "=" to compare`, 2},
		{"wi negated glob", []string{"wi", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.path!~/tmp/*"}, "negates a glob, which rules cannot do", 2},
		{"wi empty list value", []string{"wi", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.user=a||b"}, "has an empty value in its list: write the values as A|B|C", 2},
		{"wi no value", []string{"wi", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid="}, `has no value after "=": write it like workload.unix.uid=1000`, 2},
		{"wi no rule", []string{"wi", "create", "web", "--spiffe-id", "/svc/web"}, `workload identity "web" has no rules, so no workload could get it: give at least one --rule`, 2},
		{"wi no SPIFFE ID", []string{"wi", "create", "web", "--rule", "workload.unix.uid=1000"}, "no SPIFFE ID given: pass --spiffe-id", 2},
		{"wi ttl not a duration", []string{"wi", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid=1000", "--x509-ttl", "1w"}, `invalid argument "1w" for "--x509-ttl" flag: "1w" is not a duration: write it like 90s, 15m, 1h, 24h or 7d`, 2},
		{"wi ttl negative", []string{"wi", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid=1000", "--jwt-ttl=-5m"}, `duration "-5m" must be positive`, 2},
		{"wi ttl over the maximum", []string{"wi", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid=1000", "--x509-ttl", "48h"}, "--x509-ttl 48h is over the 24h that any SVID may live: set 24h or less", 2},
		{"wi hint too long", []string{"wi", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid=1000", "--hint", strings.Repeat("h", 65)}, "--hint is 65 characters long, over the limit of 64: shorten it", 2},
		{"wi label without value", []string{"wi", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid=1000", "--label", "env"}, `--label "env" has no value: write it as KEY=VALUE`, 2},
		{"wi upper-case name", []string{"wi", "create", "Web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid=1000"}, `name "Web" is invalid`, 2},
		{"wi get without name", []string{"wi", "get"}, "missing the workload_identity's name: run widctl workload-identity get NAME", 2},
		// Explaining workloads.
		{"explain unknown attribute", []string{"explain", "--workload-attrs", "uid=1000"}, `--workload-attrs: attribute "uid" is not a workload attribute: write it like workload.unix.uid`, 2},
		{"explain attribute without value", []string{"explain", "--workload-attrs", "workload.unix.uid"}, `--workload-attrs: "workload.unix.uid" is not ATTR=VALUE: write it like workload.unix.uid=1000`, 2},
		{"explain attribute twice", []string{"explain", "--workload-attrs", "workload.unix.uid=1,workload.unix.uid=2"}, "--workload-attrs: attribute workload.unix.uid is given twice", 2},
		{"explain no attributes", []string{"explain", "--workload-attrs", ""}, "--workload-attrs: no attributes given", 2},
		{"explain workload for a user", []string{"explain", "--user", "alice", "--workload-attrs", "workload.unix.uid=1"}, "--workload-attrs asks what the agent of a bot would issue, not a user: use --bot NAME", 2},
		{"explain workload and SPIFFE ID", []string{"explain", "--bot", "b", "--workload-attrs", "workload.unix.uid=1", "--spiffe-id", "/x"}, "--workload-attrs and --spiffe-id ask different questions", 2},
		// Issuing and inspecting SVIDs.
		{"svid malformed path", []string{"svid", "issue", "/team//laptop"}, `SPIFFE ID path "/team//laptop" has an empty segment`, 2},
		{"svid not an id", []string{"svid", "issue", "team/laptop"}, `"team/laptop" is neither a SPIFFE ID nor a path`, 2},
		{"svid ttl not a duration", []string{"svid", "issue", "/x", "--ttl", "1 d"}, `invalid argument "1 d" for "--ttl" flag: "1 d" is not a duration`, 2},
		{"svid ttl in days over the maximum", []string{"svid", "issue", "/x", "--ttl", "2d"}, "--ttl 48h is over the 24h that any SVID may live", 2},
		{"days then a bad unit", []string{"token", "create", "--bot", "b", "--ttl", "1dx"}, `"1dx" is not a duration`, 2},
		{"svid ttl under a second", []string{"svid", "issue", "/x", "--ttl", "1500ms"}, "--ttl 1.5s is not a whole number of seconds", 2},
		{"svid ttl over the maximum", []string{"svid", "issue", "/x", "--ttl", "48h"}, "--ttl 48h is over the 24h that any SVID may live: set 24h or less", 2},
		{"svid ip san is a CIDR", []string{"svid", "issue", "/x", "--ip-san", "10.0.0.0/8"}, `--ip-san "10.0.0.0/8" is not an IP address`, 2},
		{"svid bad dns san", []string{"svid", "issue", "/x", "--dns-san", "10.1.2.3"}, `--dns-san: DNS SAN "10.1.2.3"`, 2},
		{"svid jwt without audience", []string{"svid", "issue", "/x", "--type", "jwt"}, "a JWT-SVID needs an audience: pass --audience", 2},
		{"svid jwt with a key type", []string{"svid", "issue", "/x", "--type", "jwt", "--audience", "api", "--key-type", "rsa2048"}, "--key-type is for X509-SVIDs", 2},
		{"svid unknown type", []string{"svid", "issue", "/x", "--type", "wit"}, `unknown SVID type "wit": use x509 or jwt`, 2},
		{"svid unknown key type", []string{"svid", "issue", "/x", "--key-type", "p521"}, `unknown key type "p521": use p256, rsa2048 or ed25519`, 2},
		{"svid x509 to stdout", []string{"svid", "issue", "/x", "--output", "-"}, "an X509-SVID is three files: give a directory", 2},
		{"svid output under a file", []string{"svid", "issue", "/x", "--output", filepath.Join(notADir, "out")}, "cannot use the output directory " + filepath.Join(notADir, "out") + ": not a directory: choose another --output", 2},
		{"svid output is a file", []string{"svid", "issue", "/x", "--output", notADir}, "--output " + notADir + " is not a directory", 2},
		{"svid existing file", []string{"svid", "issue", "/x", "--output", issued}, "svid.key already exists in " + issued + ": pass --overwrite to replace", 2},
		{"svid inspect garbage", []string{"svid", "inspect", file("garbage.pem", "not an SVID\n")}, "garbage.pem is neither an X509-SVID (PEM certificates) nor a JWT-SVID (a token)", 2},
		{"svid inspect a key", []string{"svid", "inspect", file("only-key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")}, "holds PEM but no CERTIFICATE block", 2},
		{"svid inspect bad token", []string{"svid", "inspect", file("bad.token", "a.b.c")}, "bad.token is not a JWT-SVID", 2},
		{"svid inspect missing file", []string{"svid", "inspect", filepath.Join(dir, "nope.pem")}, "nope.pem does not exist", 2},
		// Logging in (the rows that need an auth service are in login_test.go).
		{"login without user", []string{"login", "--auth", "auth.example.com:3025"}, "--user is required: pass --user NAME", 2},
		{"login bad user name", []string{"login", "--auth", "auth.example.com:3025", "--user", "Alice Smith"}, "--user: ", 2},
		{"login without auth", []string{"login", "--user", "alice"}, "no auth service to log in to: pass --auth HOST:PORT", 2},
		{"login first contact without pin", []string{"login", "--auth", "auth.example.com:3025", "--user", "alice"}, "is not known yet: pass --ca-pin sha256:...", 2},
		{"login without terminal", []string{"login", "--auth", "auth.example.com:3025", "--user", "alice", "--ca-pin", "sha256:" + strings.Repeat("ab", 32)}, "there is no terminal to read the password from: pass --password-stdin", 2},
		{"login empty stdin", []string{"login", "--auth", "auth.example.com:3025", "--user", "alice", "--ca-pin", "sha256:" + strings.Repeat("ab", 32), "--password-stdin"}, "stdin held no password", 2},
		{"status not logged in", []string{"status"}, "you are not logged in: run widctl login --auth HOST:PORT --user NAME", 3},
		// CA rotation (the refusals that need the CAs' phases are in e2e/rotation_test.go).
		{"rotate without type", []string{"ca", "rotate", "--phase", "init"}, "say which CA with --type", 2},
		{"rotate unknown type", []string{"ca", "rotate", "--type", "root", "--phase", "init"}, `unknown CA type "root": use one of spiffe, jwt, wit, user, host, or all`, 2},
		{"rotate unknown phase", []string{"ca", "rotate", "--type", "spiffe", "--phase", "prepare"}, `unknown rotation phase "prepare": use one of standby, init, update_clients, update_servers, rollback`, 2},
		{"rotate without phase", []string{"ca", "rotate", "--type", "spiffe"}, "say which phase to move to with --phase", 2},
		{"rotate manual with grace", []string{"ca", "rotate", "--type", "spiffe", "--grace-period", "30h", "--manual"}, "--grace-period starts an automatic rotation", 2},
		{"rotate bad grace", []string{"ca", "rotate", "--type", "spiffe", "--grace-period", "soon"}, "--grace-period", 2},
		{"status unknown type", []string{"ca", "status", "--type", "x"}, `unknown CA type "x"`, 2},

		// Command line.
		{"unknown command", []string{"rolez"}, `unknown command "rolez" for widctl (did you mean "role"?): run widctl --help to see the commands`, 2},
		{"unknown subcommand", []string{"role", "craete"}, `unknown command "craete" for widctl role (did you mean "create"?)`, 2},
		{"unknown flag", []string{"role", "ls", "--colour"}, "unknown flag: --colour: run widctl role ls --help to see the flags", 2},
		{"missing argument", []string{"role", "get"}, "missing the role's name: run widctl role get NAME", 2},
		{"extra argument", []string{"role", "get", "a", "b"}, `unexpected argument "b": run widctl role get NAME`, 2},
		{"flag without value", []string{"role", "create", "web", "--max-ttl"}, "flag needs an argument: --max-ttl", 2},
		{"help on nothing", []string{"help", "role", "nope"}, `there is no command "role nope": run widctl --help to see the commands`, 2},
		{"bad completion shell", []string{"completion", "powershell"}, `no completion for shell "powershell": use bash, zsh or fish`, 2},
		// Connection settings.
		{"bad CA pin", []string{"--auth", "auth.example.com:3025", "--ca-pin", "sha256:abc", "role", "ls"}, `CA pin "sha256:abc" is malformed: it is sha256: followed by 64 hex digits`, 2},
		{"socket and auth", []string{"--admin-socket", "/run/wid/admin.sock", "--auth", "a:1", "role", "ls"}, "use only one of them", 2},
		{"unknown config key", []string{"--config", badConfig, "role", "ls"}, `line 2: unknown key "admin-socket": the known keys are admin_socket`, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// No auth service: the factory fails the test if asked for a client.
			w := clitest.Widctl{T: t, Main: root.Run, Setup: func(f *cmdutil.Factory) { f.Client = clitest.NoClient(t) }}
			code, stdout, stderr := w.Run(tt.args...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.code, stderr)
			}
			if !strings.HasPrefix(stderr, "error: ") || !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr = %q, want error: ...%s...", stderr, tt.want)
			}
			if tt.name != "two bad documents" && strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr is not one line: %q", stderr)
			}
			if strings.Contains(stderr, "rpc error") || strings.Contains(stderr, "Usage:") {
				t.Errorf("stderr leaks internals or usage: %q", stderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
		})
	}
}
