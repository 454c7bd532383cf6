package cli_test

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/root"
	"github.com/wid-project/wid/internal/core/auth/authtest"
)

// TestMain lets the scripts run widctl: the test binary plays it, wired as
// cmd/widctl wires it.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"widctl": func() {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			code := root.Run(ctx, cmdutil.NewFactory(iostreams.System()), os.Args[1:])
			stop()
			os.Exit(code)
		},
	})
}

// TestScripts runs the end-to-end flows in testdata/script, each against a
// fresh auth service found through WIDCTL_ADMIN_SOCKET, as next to a
// running widagent. AUTH_ADDR, CA_PIN and TRUST_DOMAIN are set for scripts
// that go over TCP or check join commands.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(e *testscript.Env) error {
			srv := authtest.Start(e.T().(testing.TB))
			e.Setenv("WIDCTL_ADMIN_SOCKET", srv.AdminSocket)
			e.Setenv("AUTH_ADDR", srv.Addr)
			e.Setenv("CA_PIN", srv.CAPin)
			e.Setenv("TRUST_DOMAIN", srv.TrustDomain)
			e.Setenv("XDG_CONFIG_HOME", e.WorkDir+"/config")
			return nil
		},
	})
}
