package cli_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/cli/clitest"
)

// completions runs cobra's hidden __complete command in-process, as the
// shell scripts do on <TAB>, and returns the candidates it printed.
func (w widctl) completions(args ...string) []string {
	w.T.Helper()
	code, out, errOut := w.Run(append([]string{"__complete"}, args...)...)
	if code != 0 {
		w.T.Fatalf("__complete %q: exit %d: %s", args, code, errOut)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" && !strings.HasPrefix(l, ":") {
			name, _, _ := strings.Cut(l, "\t")
			got = append(got, name)
		}
	}
	return got
}

// Resource names complete from the auth service: after KIND/ in get and rm,
// and as the NAME of the per-noun commands and of explain's principals.
func TestCompletionAsksTheAuthService(t *testing.T) {
	w := start(t)
	w.OK("role", "create", "web-issuer", "--spiffe-path", "/svc/*")
	w.OK("role", "create", "db-reader", "--spiffe-path", "/db/*")
	w.OK("bot", "create", "web", "--roles", "web-issuer")
	w.OK("workload-identity", "create", "api", "--spiffe-id", "/svc/api", "--rule", "workload.unix.uid=1000")

	for _, c := range []struct {
		args []string
		want []string
		not  []string
	}{
		{[]string{"get", "role/"}, []string{"role/web-issuer", "role/db-reader"}, []string{"role/api"}},
		{[]string{"get", "roles/"}, []string{"roles/web-issuer"}, nil},
		{[]string{"rm", "workload_identity/"}, []string{"workload_identity/api"}, nil},
		{[]string{"get", "ro"}, []string{"role", "role/"}, nil},
		{[]string{"rm", ""}, []string{"role/", "bot/"}, []string{"role"}},
		{[]string{"role", "get", ""}, []string{"web-issuer", "db-reader"}, nil},
		{[]string{"role", "update", ""}, []string{"web-issuer"}, nil},
		{[]string{"bot", "rm", ""}, []string{"web"}, []string{"web-issuer"}},
		{[]string{"wi", "get", ""}, []string{"api"}, nil},
		{[]string{"bot", "update", "web", "--roles", "web-issuer,"}, []string{"web-issuer,db-reader"}, nil},
		{[]string{"explain", "--bot", ""}, []string{"web"}, nil},
		{[]string{"role", "get", "web-issuer", ""}, nil, []string{"web-issuer"}},
	} {
		got := w.completions(c.args...)
		for _, want := range c.want {
			if !slices.Contains(got, want) {
				t.Errorf("completing %q: %q is missing from %q", c.args, want, got)
			}
		}
		for _, not := range c.not {
			if slices.Contains(got, not) {
				t.Errorf("completing %q: %q should not be offered: %q", c.args, not, got)
			}
		}
	}
}

// With no auth service to ask, a <TAB> offers nothing and prints no error.
func TestCompletionWithoutAuthServiceIsSilent(t *testing.T) {
	clitest.Isolate(t)
	w := newWidctl(t, nil)
	code, out, errOut := w.Run("--admin-socket", t.TempDir()+"/none.sock", "__complete", "get", "role/")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.TrimSpace(out) != ":4" {
		t.Fatalf("want no candidates and the no-file directive, got:\n%s", out)
	}
	if strings.Contains(strings.ToLower(errOut), "error") {
		t.Fatalf("completion printed an error:\n%s", errOut)
	}
}
