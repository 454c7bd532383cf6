package user

import (
	"context"
	"fmt"
	"io"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// ResetOptions are the settings of `widctl user reset`.
type ResetOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Name      string
	InviteTTL resource.Duration
	TOTP      bool
}

// NewCmdReset builds `widctl user reset`.
func NewCmdReset(f *cmdutil.Factory, runF func(*ResetOptions) error) *cobra.Command {
	opts := &ResetOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "reset NAME [--invite-ttl DURATION] [--totp]",
		Short: "Give a user a new invite in place of the password",
		Long: `Replace a user's password, second factor and lockout with a new one-time
invite, for a forgotten password, a lost authenticator or a locked user. The
old password stops working at once; the user's roles stay. Pass --totp to
enroll a new second factor; without it the user has none.`,
		Example: `  widctl user reset alice
  widctl user reset alice --totp --invite-ttl 24h`,
		Args:              cmdutil.ExactArgs(1, "the user's name"),
		ValidArgsFunction: resourcecmd.CompleteNames(f, resource.KindUser),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			if err := resource.ValidateName(opts.Name); err != nil {
				return cmdutil.InputError(err)
			}
			if runF != nil {
				return runF(opts)
			}
			return resetRun(cmd.Context(), opts)
		},
	}
	cmdutil.DurationVar(cmd.Flags(), &opts.InviteTTL, "invite-ttl", "the invite expires after `DURATION` (default 1h)")
	cmd.Flags().BoolVar(&opts.TOTP, "totp", false, "enroll a new TOTP second factor at the next login")
	return cmd
}

func resetRun(ctx context.Context, opts *ResetOptions) error {
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
	u, err := cmdutil.GetResource(ctx, c, resource.KindUser, opts.Name)
	if err != nil {
		return err
	}
	resp, err := c.ResetUser(ctx, &authv1.ResetUserRequest{Name: opts.Name, InviteTtlSeconds: int64(opts.InviteTTL.D() / time.Second), Totp: opts.TOTP})
	if err != nil {
		return err
	}
	var roles []string
	if uu, ok := u.(*resource.User); ok {
		roles = uu.Spec.Roles
	}
	inv := &Invite{
		User: opts.Name, Roles: roles, Invite: resp.GetInvite(), Expires: resp.GetInviteExpiresAt().AsTime(), TOTP: opts.TOTP,
		LoginCommand: LoginCommand(ping.GetAuthAddr(), opts.Name, resp.GetInvite(), ping.GetCaPin()),
	}
	return p.Print(inv, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "Reset user %s: the old password no longer works.\n\nInvite (expires %s):\n  %s\nIt is shown only this once.\n\nTo set a new password and log in, the user runs:\n  %s\n",
			inv.User, p.Time(inv.Expires), inv.Invite, inv.LoginCommand)
		return err
	})
}
