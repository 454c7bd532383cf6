package tui

import (
	"os/exec"
	"strings"
	"testing"
)

// The TUI and widctl's commands are two faces of the same core: the TUI
// imports nothing of internal/cli, directly or through another package.
func TestTUIImportsNothingOfTheCLI(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/wid-project/wid/internal/cli") {
			t.Errorf("internal/tui imports %s", pkg)
		}
	}
}
