package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/core/x509pop/x509poptest"
)

// An x509pop join token is made once under its name; making it again is
// refused with advice that works, since token create has no --force.
func TestX509PopJoinTokenNameTaken(t *testing.T) {
	w := start(t)
	w.OK("role", "create", "hosts", "--spiffe-path", "/hosts/**")
	w.OK("bot", "create", "host-agent", "--roles", "hosts")
	bundle := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(bundle, x509poptest.NewCA(t, "hosts CA").PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"token", "create", "--method", "x509pop", "--name", "hosts", "--bot", "host-agent", "--ca-bundle", bundle}
	if text := w.OK(args...); !strings.Contains(text, "x509pop join token hosts for bot host-agent") {
		t.Fatalf("token create --method x509pop printed:\n%s", text)
	}
	code, out, errOut := w.Run(args...)
	want := "error: token/hosts already exists: remove it first with widctl rm token/hosts, or replace it with widctl create -f FILE --force\n"
	if code != cmdutil.ExitBadInput || out != "" || errOut != want {
		t.Errorf("second token create: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
	}
}
