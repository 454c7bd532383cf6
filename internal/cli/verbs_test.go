package cli_test

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/clitest"
	"github.com/wid-project/wid/internal/cli/root"
)

// create is the verb that makes a thing of any kind; no command is named
// add. The add of bot, user and token stays, for one release, as an alias.
func TestCreateIsTheVerbForEveryNoun(t *testing.T) {
	f, _ := clitest.Factory(t)
	rootCmd := root.NewRootCmd(f)
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() == "add" {
			t.Errorf("%s: make things with create (add may be an alias only)", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(rootCmd)
	for _, noun := range []string{"bot", "user", "token", "role", "workload-identity"} {
		c, _, err := rootCmd.Find([]string{noun, "create"})
		if err != nil || c.Name() != "create" {
			t.Errorf("widctl %s create: %v", noun, err)
		}
	}
	for _, noun := range []string{"bot", "user", "token"} {
		c, _, err := rootCmd.Find([]string{noun, "add"})
		if err != nil || c.CommandPath() != "widctl "+noun+" create" {
			t.Errorf("widctl %s add is not an alias of create: %v", noun, err)
		}
	}
}

// The old verb still does the work.
func TestAddStillCreates(t *testing.T) {
	w := start(t)
	w.OK("role", "create", "web", "--spiffe-path", "/svc/web")
	if out := w.OK("bot", "add", "robot", "--roles", "web"); !strings.HasPrefix(out, "Created bot robot with roles web.") {
		t.Errorf("bot add printed:\n%s", out)
	}
	if out := w.OK("token", "add", "--bot", "robot"); !strings.Contains(out, "WID_JOIN_TOKEN=") {
		t.Errorf("token add printed:\n%s", out)
	}
	if out := w.OK("user", "add", "carol", "--roles", "web"); !strings.HasPrefix(out, "Created user carol with roles web.") {
		t.Errorf("user add printed:\n%s", out)
	}
}
