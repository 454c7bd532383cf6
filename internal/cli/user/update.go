package user

import (
	"github.com/spf13/cobra"

	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/principal"
	"github.com/wid-project/wid/internal/core/resource"
)

// UpdateOptions are the settings of `widctl user update`.
type UpdateOptions = principal.UpdateOptions

// NewCmdUpdate builds `widctl user update`.
func NewCmdUpdate(f *cmdutil.Factory, runF func(*UpdateOptions) error) *cobra.Command {
	return principal.NewCmdUpdate(f, resource.KindUser, principal.UpdateHelp{
		Long:    `Replace the roles a user holds. The change is made only if nobody changed the user since it was read.`,
		Example: `  widctl user update alice --roles dev,editor`,
	}, func(name string, roles []string) error {
		_, err := newUser(name, roles)
		return err
	}, runF)
}
