package clitest

import (
	"context"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/core/auth/authtest"
)

// Main is widctl's entry point, root.Run. The tests that use Widctl pass
// it in: clitest cannot import the command tree, whose packages' own
// tests import clitest.
type Main func(ctx context.Context, f *cmdutil.Factory, args []string) int

// Widctl runs widctl in-process against a real auth service, as a user
// would: through the service's admin socket (as on the auth host) unless
// the arguments name --auth or --admin-socket, or Person is set.
type Widctl struct {
	T    testing.TB
	Srv  *authtest.Server
	Main Main
	// Person runs as a user on a laptop: no admin socket is added.
	Person bool
	// Setup adjusts the factory of each run (a test's keyring, ...).
	Setup func(*cmdutil.Factory)
}

// StartWidctl isolates the test from the developer's settings and starts
// an auth service for widctl to talk to.
func StartWidctl(t *testing.T, main Main, opts ...authtest.Option) Widctl {
	t.Helper()
	Isolate(t)
	return Widctl{T: t, Srv: authtest.Start(t, opts...), Main: main}
}

// Run runs widctl with args and returns its exit code and output.
func (w Widctl) Run(args ...string) (code int, stdout, stderr string) {
	w.T.Helper()
	return w.RunIn("", args...)
}

// RunIn is Run with stdin.
func (w Widctl) RunIn(stdin string, args ...string) (code int, stdout, stderr string) {
	w.T.Helper()
	ios, in, out, errOut := iostreams.Test()
	in.WriteString(stdin)
	if !w.Person && w.Srv != nil && !hasTargetFlag(args) {
		args = append([]string{"--admin-socket", w.Srv.AdminSocket}, args...)
	}
	f := cmdutil.NewFactory(ios)
	if w.Setup != nil {
		w.Setup(f)
	}
	code = w.Main(context.Background(), f, args)
	return code, out.String(), errOut.String()
}

// OK runs a command that must succeed and returns its stdout.
func (w Widctl) OK(args ...string) string {
	w.T.Helper()
	code, out, errOut := w.Run(args...)
	if code != 0 {
		w.T.Fatalf("widctl %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

func hasTargetFlag(args []string) bool {
	for _, a := range args {
		if a == "--auth" || a == "--admin-socket" {
			return true
		}
	}
	return false
}
