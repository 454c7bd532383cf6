package e2e

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The bash completion script works in a bare bash, without the
// bash-completion package, and completes resource names from the auth
// service: widctl get role/<TAB>.
func TestBashCompletionWithoutPackage(t *testing.T) {
	a := startAgent(t, newDataDir(t))
	a.widctl("role", "create", "web-issuer", "--spiffe-path", "/svc/*").must(t)
	a.widctl("role", "create", "db-reader", "--spiffe-path", "/db/*").must(t)
	script, err := filepath.Abs("../completions/widctl.bash")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		line string
		want []string
	}{
		{"widctl get role/", []string{"role/web-issuer", "role/db-reader"}},
		{"widctl role get d", []string{"db-reader"}},
		{"widctl rol", []string{"role"}},
		{"widctl --format=js", []string{"json"}},
	} {
		// --norc: nothing loads the bash-completion package.
		// compopt works only inside a real <TAB>; outside one, the script's
		// own check (type -t compopt == builtin) skips it for a function.
		cmd := exec.Command("bash", "--norc", "--noprofile", "-c", `
compopt() { :; }
source "$1"
COMP_LINE=$2
COMP_POINT=${#COMP_LINE}
read -r -a COMP_WORDS <<< "$COMP_LINE"
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
__start_widctl widctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
`, "bash", script, c.line)
		cmd.Env = []string{"PATH=" + binDir + ":/usr/bin:/bin", "HOME=" + t.TempDir(), "WIDCTL_ADMIN_SOCKET=" + a.socket}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || stderr.Len() > 0 {
			t.Fatalf("completing %q: %v\nstderr:\n%s", c.line, err, stderr.String())
		}
		got := strings.Fields(string(out))
		for _, w := range c.want {
			if !slices.Contains(got, w) {
				t.Errorf("completing %q: %q missing from %q", c.line, w, got)
			}
		}
	}
}
