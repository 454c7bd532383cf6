package bot

import (
	"github.com/spf13/cobra"

	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/principal"
	"github.com/wid-project/wid/internal/core/resource"
)

// UpdateOptions are the settings of `widctl bot update`.
type UpdateOptions = principal.UpdateOptions

// NewCmdUpdate builds `widctl bot update`.
func NewCmdUpdate(f *cmdutil.Factory, runF func(*UpdateOptions) error) *cobra.Command {
	return principal.NewCmdUpdate(f, resource.KindBot, principal.UpdateHelp{
		Long: `Replace the roles a bot holds; agents joined as the bot get what the new
roles grant, and lose what only the old ones did. The change is made only if
nobody changed the bot since it was read.`,
		Example: `  widctl bot update web-agent --roles web,api`,
	}, func(name string, roles []string) error {
		_, err := (&CreateOptions{Name: name, Roles: roles}).Bot()
		return err
	}, runF)
}
