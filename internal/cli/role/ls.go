package role

import (
	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/core/resource"
)

// NewCmdList builds `widctl role ls`, which is `widctl get roles`.
func NewCmdList(f *cmdutil.Factory, runF func(*resourcecmd.GetOptions) error) *cobra.Command {
	return resourcecmd.NewCmdListKind(f, resource.KindRole, resourcecmd.Help{
		Short: "List roles",
		Example: `  widctl role ls
  widctl role ls --format yaml > roles.yaml`,
	}, runF)
}

// NewCmdGet builds `widctl role get`, which is `widctl get role/NAME`.
func NewCmdGet(f *cmdutil.Factory, runF func(*resourcecmd.GetOptions) error) *cobra.Command {
	return resourcecmd.NewCmdGetKind(f, resource.KindRole, resourcecmd.Help{
		Short: "Show a role",
		Long: `Show a role. With --format yaml this is the role document that
"widctl create -f" accepts, the same as "widctl get role/NAME --format yaml".`,
		Example: `  widctl role get web
  widctl role get web --format yaml`,
	}, runF)
}

// NewCmdRemove builds `widctl role rm`, which is `widctl rm role/NAME`.
func NewCmdRemove(f *cmdutil.Factory, runF func(*resourcecmd.RemoveOptions) error) *cobra.Command {
	return resourcecmd.NewCmdRemoveKind(f, resource.KindRole, resourcecmd.Help{
		Short:   "Remove a role",
		Long:    `Remove a role. A role that a user or bot still holds is not removed: take it away from them first with "widctl user update" or "widctl bot update".`,
		Example: `  widctl role rm web`,
	}, runF)
}
