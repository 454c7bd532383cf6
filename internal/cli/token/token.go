// Package token holds `widctl token`: join tokens let an agent join the
// trust domain as a bot. A token's secret is shown once, when it is made;
// the auth service keeps only its hash, and nothing here prints it again.
package token

import (
	"context"
	"time"

	"github.com/spf13/cobra"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// NewCmdToken builds the `widctl token` group.
func NewCmdToken(f *cmdutil.Factory) *cobra.Command {
	cmd := cmdutil.Group(&cobra.Command{
		Use:   "token <command>",
		Short: "Manage join tokens that let agents join as bots",
		Long: `A join token lets an agent join the trust domain as a bot, a given number
of times (once by default) until it expires (after an hour by default).
"widctl bot add" makes a bot's first token; "widctl token add" makes more.`,
		Example: `  widctl token add --bot web-agent --ttl 30m --uses 3
  widctl token ls
  widctl token rm 3f9a1c0b5d7e2a64`,
	})
	cmd.AddCommand(
		NewCmdAdd(f, nil),
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

// AddOptions are the settings of `widctl token add`.
type AddOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Bot  string
	TTL  resource.Duration
	Uses int
}

// NewCmdAdd builds `widctl token add`.
func NewCmdAdd(f *cmdutil.Factory, runF func(*AddOptions) error) *cobra.Command {
	opts := &AddOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "add --bot NAME [--ttl DURATION] [--uses N]",
		Short: "Make a join token for a bot",
		Long: `Make a join token for an existing bot and print it with the command that
joins an agent with it. The token is shown only this once.`,
		Example: `  widctl token add --bot web-agent
  widctl token add --bot web-agent --ttl 15m --uses 5`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.check(); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			return addRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Bot, "bot", "", "`NAME` of the bot that joins with the token")
	cmdutil.DurationVar(cmd.Flags(), &opts.TTL, "ttl", "the token expires after `DURATION` (default 1h)")
	cmd.Flags().IntVar(&opts.Uses, "uses", 1, "the token allows `N` joins")
	return cmd
}

func (opts *AddOptions) check() error {
	if opts.Bot == "" {
		return cmdutil.InputErrorf("no bot given: pass --bot NAME (see widctl bot ls)")
	}
	if err := resource.ValidateName(opts.Bot); err != nil {
		return cmdutil.InputErrorf("--bot: %v", err)
	}
	if opts.Uses < 1 {
		return cmdutil.InputErrorf("--uses %d is too few: a token allows at least 1 join", opts.Uses)
	}
	return nil
}

func addRun(ctx context.Context, opts *AddOptions) error {
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	ping, err := c.Ping(ctx, &authv1.PingRequest{})
	if err != nil {
		return err
	}
	resp, err := c.CreateJoinToken(ctx, &authv1.CreateJoinTokenRequest{
		Bot:        opts.Bot,
		TtlSeconds: int64(opts.TTL.D() / time.Second),
		Uses:       int32(opts.Uses),
	})
	if err != nil {
		return err
	}
	j, err := NewJoin(ping, resp.GetToken(), resp.GetJoinToken())
	if err != nil {
		return err
	}
	return j.Print(p, "")
}
