package agentcmd

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/testkit"
)

// run runs widagent with args on test streams, as main does.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ios, _, out, errOut := iostreams.Test()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	code = Run(ctx, NewFactory(ios), args)
	return code, out.String(), errOut.String()
}

// widagent's errors go through cmdutil's one map to an exit code: one
// sentence on stderr, 2 for bad input, 1 for a start that fails.
func TestExitCodes(t *testing.T) {
	clearEnv(t)
	closed := testkit.ClosedAddr(t)
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"start", "--bogus"}, cmdutil.ExitBadInput, "error: unknown flag: --bogus: run widagent start --help to see the flags"},
		{"unknown command", []string{"api", "push"}, cmdutil.ExitBadInput, `error: unknown command "push" for widagent api`},
		{"argument", []string{"start", "now"}, cmdutil.ExitBadInput, `error: unexpected argument "now"`},
		{"unknown role", []string{"start", "--roles", "proxy"}, cmdutil.ExitBadInput, `error: role "proxy" is unknown: --roles takes auth, agent or both`},
		{"missing config file", []string{"start", "--config", filepath.Join(dir, "none.yaml")}, cmdutil.ExitBadInput, "error: reading config file " + filepath.Join(dir, "none.yaml")},
		{"unknown format", []string{"api", "fetch", "x509", "--format", "xml", "--socket", filepath.Join(dir, "w.sock")}, cmdutil.ExitBadInput, `error: unknown output format "xml": use text, json or yaml`},
		{"timeout", []string{"api", "fetch", "x509", "--timeout", "0s"}, cmdutil.ExitBadInput, "error: --timeout 0s must be positive"},
		{"no audience", []string{"api", "fetch", "jwt"}, cmdutil.ExitBadInput, "error: --audience is required"},
		{"no socket", []string{"api", "fetch", "x509", "--socket", filepath.Join(dir, "w.sock")}, cmdutil.ExitError, "error: no Workload API socket at " + filepath.Join(dir, "w.sock")},
		{"start fails", []string{"start", "--roles", "auth", "--data-dir", dir, "--auth-listen", "127.0.0.1:0", "--store", "postgres://wid:hunter2@" + closed + "/wid?sslmode=disable"},
			cmdutil.ExitError, "error: cannot use the PostgreSQL store at " + closed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := run(t, tt.args...)
			if code != tt.code || !strings.HasPrefix(stderr, tt.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want exit %d and one line starting %q", code, stderr, tt.code, tt.want)
			}
		})
	}
}

// The api commands hand their parsed options to runF, as widctl's do.
func TestFetchJWTOptions(t *testing.T) {
	ios, _, _, _ := iostreams.Test()
	var got *FetchJWTOptions
	cmd := NewCmdFetchJWT(NewFactory(ios), func(o *FetchJWTOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"--audience", "a,b", "--spiffe-id", "spiffe://example.org/svc/web", "--socket", "/tmp/w.sock", "--timeout", "2s"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Audiences, []string{"a", "b"}) || got.SPIFFEID != spiffeid.RequireFromString("spiffe://example.org/svc/web") ||
		got.Addr() != "unix:///tmp/w.sock" || got.Timeout != 2*time.Second {
		t.Errorf("options %+v", got)
	}
	cmd = NewCmdFetchJWT(NewFactory(ios), func(*FetchJWTOptions) error { t.Error("ran with a bad SPIFFE ID"); return nil })
	cmd.SetArgs([]string{"--audience", "a", "--spiffe-id", "web"})
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	if err := cmd.Execute(); err == nil || cmdutil.Explain(err, "").Code != cmdutil.ExitBadInput || !strings.Contains(err.Error(), `--spiffe-id "web" is not a SPIFFE ID`) {
		t.Errorf("a bad --spiffe-id: %v", err)
	}
}

// widagent start hands runF its settings and starts nothing.
func TestStartOptionsReachRunF(t *testing.T) {
	clearEnv(t)
	ios, _, _, _ := iostreams.Test()
	var got *StartOptions
	cmd := NewCmdStart(NewFactory(ios), func(o *StartOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"--roles", "agent", "--auth", "a:1", "--join-token", "t", "--server-name", "x.example.com", "--sds-spiffe-validator"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Roles, []string{"agent"}) || got.JoinToken != "t" || !slices.Equal(got.ServerNames, []string{"x.example.com"}) || !got.SDS.SPIFFEValidator {
		t.Errorf("options %+v", got)
	}
}
