// Package bot holds `widctl bot`: bots are machine identities. An agent
// joins the trust domain as a bot with a join token and gets the SPIFFE IDs
// its roles grant.
package bot

import (
	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/core/resource"
)

// NewCmdBot builds the `widctl bot` group.
func NewCmdBot(f *cmdutil.Factory) *cobra.Command {
	cmd := cmdutil.Group(&cobra.Command{
		Use:   "bot <command>",
		Short: "Manage bots: the identities agents join as",
		Long: `A bot is a machine identity. An agent joins the trust domain as a bot with a
join token, then issues its workloads the SPIFFE IDs the bot's roles grant.`,
		Example: `  widctl bot create web-agent --roles web
  widctl bot update web-agent --roles web,api
  widctl bot ls
  widctl bot rm web-agent`,
	})
	cmd.AddCommand(
		NewCmdCreate(f, nil),
		resourcecmd.NewCmdListKind(f, resource.KindBot, resourcecmd.Help{
			Short:   "List bots",
			Example: "  widctl bot ls\n  widctl bot ls --format yaml",
		}, nil),
		resourcecmd.NewCmdGetKind(f, resource.KindBot, resourcecmd.Help{
			Short:   "Show a bot",
			Example: "  widctl bot get web-agent",
		}, nil),
		NewCmdUpdate(f, nil),
		resourcecmd.NewCmdRemoveKind(f, resource.KindBot, resourcecmd.Help{
			Short:   "Remove a bot and its join tokens",
			Long:    "Remove a bot and its join tokens. Agents joined as the bot can no longer renew their certificates.",
			Example: "  widctl bot rm web-agent",
		}, nil),
	)
	return cmd
}
