package user

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"

	"github.com/spf13/cobra"

	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/cli/principal"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// CreateOptions are the settings of `widctl user create`.
type CreateOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Name      string
	Roles     []string
	InviteTTL resource.Duration
	TOTP      bool
	Force     bool
}

// NewCmdCreate builds `widctl user create`.
func NewCmdCreate(f *cmdutil.Factory, runF func(*CreateOptions) error) *cobra.Command {
	opts := &CreateOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:     "create NAME --roles ROLE[,ROLE...] [--invite-ttl DURATION] [--force]",
		Aliases: []string{"add"},
		Short:   "Create a user with roles, and print the user's one-time invite",
		Long: `Create a user holding the given roles. The roles must exist.

The command prints a one-time invite and the widctl login command that uses
it: the user's first login sets the password. The invite is shown only this
once and expires after --invite-ttl.

An existing user of the same name is refused unless --force replaces it: the
user then holds exactly the given roles, and the old password, second factor
and lockout give way to a new invite (as "widctl user reset" does).`,
		Example: `  widctl user create alice --roles dev
  widctl user create bob --roles dev,editor --invite-ttl 24h
  widctl user create alice --roles dev,editor --force`,
		Args:              cmdutil.ExactArgs(1, "the user's name"),
		ValidArgsFunction: resourcecmd.CompleteNames(f, resource.KindUser),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			if runF != nil {
				return runF(opts)
			}
			return createRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringSliceVar(&opts.Roles, "roles", nil, "`ROLES` the user holds, comma-separated")
	cmd.RegisterFlagCompletionFunc("roles", resourcecmd.CompleteNameList(f, resource.KindRole))
	cmdutil.DurationVar(cmd.Flags(), &opts.InviteTTL, "invite-ttl", "the invite expires after `DURATION` (default 1h)")
	cmd.Flags().BoolVar(&opts.TOTP, "totp", false, "require a TOTP second factor: the first login shows the secret, later logins need a code")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "replace a user of the same name: new roles, and a new invite in place of the password")
	return cmd
}

// User builds and checks the user the options describe.
func (opts *CreateOptions) User() (*resource.User, error) {
	return newUser(opts.Name, opts.Roles)
}

func newUser(name string, roles []string) (*resource.User, error) {
	if err := resource.ValidateName(name); err != nil {
		return nil, cmdutil.InputError(err)
	}
	roles, err := principal.Roles(resource.KindUser, name, roles)
	if err != nil {
		return nil, err
	}
	u := &resource.User{
		Header: resource.Header{Kind: resource.KindUser, Version: resource.V1, Metadata: resource.Metadata{Name: name}},
		Spec:   resource.UserSpec{Roles: roles},
	}
	if err := u.Validate(); err != nil {
		return nil, cmdutil.InputError(err)
	}
	return u, nil
}

func createRun(ctx context.Context, opts *CreateOptions) error {
	u, err := opts.User()
	if err != nil {
		return err
	}
	// The login command printed needs the auth address and CA pin.
	p, c, ping, err := principal.Connect(ctx, opts.Printer, opts.Client)
	if err != nil {
		return err
	}
	defer c.Close()
	ttl := int64(opts.InviteTTL.D() / time.Second)
	type invite struct {
		secret  string
		expires time.Time
	}
	verb, in, err := principal.CreateOrReplace(ctx, c, u, opts.Force, func() (invite, error) {
		resp, err := c.CreateUser(ctx, &authv1.CreateUserRequest{Name: u.Metadata.Name, Roles: u.Spec.Roles, InviteTtlSeconds: ttl, Totp: opts.TOTP})
		return invite{resp.GetInvite(), resp.GetInviteExpiresAt().AsTime()}, err
	}, func() (invite, error) {
		// A replaced user is a new user: the old password, second factor
		// and lockout give way to a new invite.
		resp, err := c.ResetUser(ctx, &authv1.ResetUserRequest{Name: u.Metadata.Name, InviteTtlSeconds: ttl, Totp: opts.TOTP})
		if err != nil {
			return invite{}, fmt.Errorf("user %s was replaced, but resetting its password failed (run widctl user reset %s): %w", u.Metadata.Name, u.Metadata.Name, err)
		}
		return invite{resp.GetInvite(), resp.GetInviteExpiresAt().AsTime()}, nil
	})
	if err != nil {
		return err
	}
	secret, expires := in.secret, in.expires
	inv := &Invite{
		User: u.Metadata.Name, Roles: u.Spec.Roles, Invite: secret, Expires: expires, TOTP: opts.TOTP,
		LoginCommand: LoginCommand(ping.GetAuthAddr(), u.Metadata.Name, secret, ping.GetCaPin()),
	}
	return p.Print(inv, func(w io.Writer) error {
		if _, err := fmt.Fprintf(w, "%s user %s with roles %s.\n\nInvite (expires %s):\n  %s\nIt is shown only this once.\n\nTo set a password and log in, the user runs:\n  %s\n",
			verb, inv.User, strings.Join(inv.Roles, ", "), p.Time(inv.Expires), inv.Invite, inv.LoginCommand); err != nil {
			return err
		}
		if inv.TOTP {
			_, err := fmt.Fprintln(w, "\nThat first login shows the user a TOTP secret for an authenticator app; later logins need its code.")
			return err
		}
		return nil
	})
}
