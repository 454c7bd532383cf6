// Package token holds `widctl token`: join tokens let an agent join the
// trust domain as a bot. A token's secret is shown once, when it is made;
// the auth service keeps only its hash, and nothing here prints it again.
package token

import (
	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/core/resource"
)

// NewCmdToken builds the `widctl token` group.
func NewCmdToken(f *cmdutil.Factory) *cobra.Command {
	cmd := cmdutil.Group(&cobra.Command{
		Use:   "token <command>",
		Short: "Manage join tokens that let agents join as bots",
		Long: `A join token lets an agent join the trust domain as a bot, a given number
of times (once by default) until it expires (after an hour by default).
"widctl bot create" makes a bot's first token; "widctl token create" makes more.

A kubernetes join token (--method kubernetes) has no secret: it is named,
and every agent whose projected service-account token passes its checks and
its allow list joins with it, as often as needed (see docs/kubernetes.md).`,
		Example: `  widctl token create --bot web-agent --ttl 30m --uses 3
  widctl token create --method kubernetes --name k8s-nodes --bot k8s-agent --allow wid:wid-agent --token-review
  widctl token ls
  widctl token rm 3f9a1c0b5d7e2a64`,
	})
	cmd.AddCommand(
		NewCmdCreate(f, nil),
		resourcecmd.NewCmdListKind(f, resource.KindJoinToken, resourcecmd.Help{
			Short:   "List join tokens (never their secrets)",
			Example: "  widctl token ls\n  widctl token ls --format json",
		}, nil),
		resourcecmd.NewCmdGetKind(f, resource.KindJoinToken, resourcecmd.Help{
			Short:   "Show a join token (never its secret)",
			Example: "  widctl token get 3f9a1c0b5d7e2a64",
		}, nil),
		resourcecmd.NewCmdRemoveKind(f, resource.KindJoinToken, resourcecmd.Help{
			Short:   "Revoke a join token",
			Long:    "Revoke a join token by its name, as \"widctl token ls\" shows it. Bots that already joined with it stay joined.",
			Example: "  widctl token rm 3f9a1c0b5d7e2a64",
		}, nil),
	)
	return cmd
}
