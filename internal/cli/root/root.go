// Package root assembles widctl's command tree. It holds no command logic:
// each noun lives in its own package.
package root

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/audit"
	"github.com/wid-project/wid/internal/cli/bot"
	"github.com/wid-project/wid/internal/cli/bundle"
	cacmd "github.com/wid-project/wid/internal/cli/ca"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/completion"
	"github.com/wid-project/wid/internal/cli/explain"
	"github.com/wid-project/wid/internal/cli/federation"
	"github.com/wid-project/wid/internal/cli/lock"
	"github.com/wid-project/wid/internal/cli/login"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/cli/role"
	"github.com/wid-project/wid/internal/cli/svid"
	"github.com/wid-project/wid/internal/cli/token"
	tuicmd "github.com/wid-project/wid/internal/cli/tui"
	"github.com/wid-project/wid/internal/cli/user"
	"github.com/wid-project/wid/internal/cli/versioncmd"
	"github.com/wid-project/wid/internal/cli/workloadidentity"
)

// Command groups, in the order help lists them.
const (
	groupAccess    = "access"
	groupResources = "resources"
	groupTrust     = "trust"
	groupOther     = "other"
)

// NewRootCmd builds widctl's command tree on f.
func NewRootCmd(f *cmdutil.Factory) *cobra.Command {
	root := cmdutil.Group(&cobra.Command{
		Use:   "widctl <command>",
		Short: "Administer a wid trust domain",
		Long: `widctl administers a wid trust domain: the roles that grant SPIFFE IDs, the
users and bots that hold them, join tokens, the workload identities agents
issue, the trust bundle and the audit log.

It talks to the auth service that "widagent start" runs. On the same machine
it finds the admin socket by itself; elsewhere log in once with
"widctl login --auth HOST:PORT --user NAME" (--ca-pin on first contact), and
later commands use that login until it expires; a bot's identity directory
works with --auth HOST:PORT --ca-pin ... --identity DIR.

Settings come from flags, then WIDCTL_* environment variables (WIDCTL_AUTH,
WIDCTL_ADMIN_SOCKET, WIDCTL_CA_PIN, WIDCTL_IDENTITY, WIDCTL_FORMAT,
WIDCTL_DEBUG, WIDCTL_CONFIG), then the config file
(~/.config/widctl/config.yaml; keys admin_socket, auth, ca_pin, identity,
format, debug), then defaults. An admin socket and an auth address from the
same place contradict each other; from different places, the higher one wins.

Errors are one sentence on stderr; set WID_DEBUG=1 to see what is behind it.

` + cmdutil.ExitCodesHelp,
		Example: `  # Next to a running "widagent start":
  widctl role create web --spiffe-path '/svc/web/*' --max-ttl 1h
  widctl bot create web-agent --roles web
  widctl explain --bot web-agent --spiffe-id /svc/web/frontend
  widctl audit ls --since 1h

  # Against a remote auth service, as a person:
  widctl login --auth auth.example.com:3025 --user alice
  widctl status

  # As a bot's saved identity:
  widctl --auth auth.example.com:3025 --ca-pin sha256:9f86d0... --identity ~/.wid/identity role ls`,
		SilenceErrors: true,
		SilenceUsage:  true,
	})
	cmdutil.SetupRoot(root, f.IOStreams)
	root.PersistentFlags().AddFlagSet(f.GlobalFlags)
	root.CompletionOptions.DisableDefaultCmd = true
	_ = root.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{"text", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))

	root.AddGroup(
		&cobra.Group{ID: groupAccess, Title: "Identities and access:"},
		&cobra.Group{ID: groupResources, Title: "Resources of any kind:"},
		&cobra.Group{ID: groupTrust, Title: "Trust and audit:"},
		&cobra.Group{ID: groupOther, Title: "Other commands:"},
	)
	add := func(group string, cmds ...*cobra.Command) {
		for _, c := range cmds {
			c.GroupID = group
			root.AddCommand(c)
		}
	}
	add(groupAccess,
		login.NewCmdLogin(f, nil),
		login.NewCmdStatus(f, nil),
		login.NewCmdLogout(f, nil),
		role.NewCmdRole(f),
		user.NewCmdUser(f),
		bot.NewCmdBot(f),
		token.NewCmdToken(f),
		workloadidentity.NewCmdWorkloadIdentity(f),
		svid.NewCmdSVID(f),
		lock.NewCmdLock(f),
	)
	add(groupResources,
		resourcecmd.NewCmdCreate(f, nil),
		resourcecmd.NewCmdGet(f, nil),
		resourcecmd.NewCmdRemove(f, nil),
	)
	add(groupTrust,
		explain.NewCmdExplain(f, nil),
		bundle.NewCmdBundle(f),
		federation.NewCmdFederation(f),
		cacmd.NewCmdCA(f),
		audit.NewCmdAudit(f),
		tuicmd.NewCmdTUI(f, nil),
	)
	add(groupOther,
		versioncmd.NewCmdVersion(f, nil),
		completion.NewCmdCompletion(f, nil),
	)
	root.SetHelpCommand(newHelpCmd())
	root.SetHelpCommandGroupID(groupOther)
	return root
}

// newHelpCmd replaces cobra's help command, which prints the root's help and
// succeeds when asked about a command that does not exist.
func newHelpCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "help [command]",
		Short:   "Help about any command",
		Example: "  widctl help role create",
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			if err != nil || len(rest) > 0 {
				return cmdutil.InputErrorf("there is no command %q: run widctl --help to see the commands", strings.Join(args, " "))
			}
			return cmd.Help()
		},
	}
}

// Run runs widctl with args on f and returns the exit code, having printed
// any error. main and the end-to-end tests share it.
func Run(ctx context.Context, f *cmdutil.Factory, args []string) int {
	cmd := NewRootCmd(f)
	cmd.SetArgs(args)
	return cmdutil.HandleError(f, cmd.ExecuteContext(ctx))
}
