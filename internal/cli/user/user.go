// Package user holds `widctl user`: the people of a trust domain and the
// roles they hold. Logging in comes with `widctl login`.
package user

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/core/resource"
)

// NewCmdUser builds the `widctl user` group.
func NewCmdUser(f *cmdutil.Factory) *cobra.Command {
	cmd := cmdutil.Group(&cobra.Command{
		Use:   "user <command>",
		Short: "Manage users: people and the roles they hold",
		Long: `Users are people. Each holds roles, which say which SPIFFE IDs the user may
get and which admin operations the user may do.`,
		Example: `  widctl user create alice --roles dev,editor
  widctl user update alice --roles dev
  widctl user reset alice
  widctl user ls`,
	})
	cmd.AddCommand(
		NewCmdCreate(f, nil),
		resourcecmd.NewCmdListKind(f, resource.KindUser, resourcecmd.Help{
			Short: "List users, and who is locked out by failed logins",
			Long: `List users, the roles they hold, and whether failed logins have locked them.
LOCKED says "until TIME" when a user is locked for everyone, "from N
addresses" when only some addresses are locked out, and "-" otherwise. With
--format json or yaml the same is in each document's status: locked_until and
locked_sources, absent when nothing is locked. widctl user reset NAME lifts a
lock at once.`,
			Example: "  widctl user ls\n  widctl user ls --format json",
		}, nil),
		resourcecmd.NewCmdGetKind(f, resource.KindUser, resourcecmd.Help{
			Short: "Show a user, and whether failed logins have locked it",
			Long: `Show a user's roles, and whether failed logins have locked it (Locked, or
status in --format json or yaml; see widctl user ls).`,
			Example: "  widctl user get alice\n  widctl user get alice --format yaml",
		}, nil),
		NewCmdUpdate(f, nil),
		NewCmdReset(f, nil),
		resourcecmd.NewCmdRemoveKind(f, resource.KindUser, resourcecmd.Help{
			Short:   "Remove a user",
			Example: "  widctl user rm alice",
		}, nil),
	)
	return cmd
}

// Invite is what `widctl user create` prints: the one-time invite, shown once,
// and the command that logs in with it. Its JSON and YAML field names are stable.
type Invite struct {
	User         string    `json:"user" yaml:"user"`
	Roles        []string  `json:"roles" yaml:"roles"`
	Invite       string    `json:"invite" yaml:"invite"`
	Expires      time.Time `json:"expires" yaml:"expires"`
	TOTP         bool      `json:"totp" yaml:"totp"`
	LoginCommand string    `json:"login_command" yaml:"login_command"`
}

// LoginCommand is the command a new user runs to set a password and log in.
func LoginCommand(authAddr, user, invite, caPin string) string {
	if authAddr == "" {
		// The auth service has no TCP listener to tell us about.
		authAddr = "HOST:PORT"
	}
	return fmt.Sprintf("widctl login --auth %s --user %s --invite %s --ca-pin %s", authAddr, user, invite, caPin)
}
