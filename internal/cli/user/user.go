// Package user holds `widctl user`: the people of a trust domain and the
// roles they hold. Logging in comes with `widctl login`.
package user

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// NewCmdUser builds the `widctl user` group.
func NewCmdUser(f *cmdutil.Factory) *cobra.Command {
	cmd := cmdutil.Group(&cobra.Command{
		Use:   "user <command>",
		Short: "Manage users: people and the roles they hold",
		Long: `Users are people. Each holds roles, which say which SPIFFE IDs the user may
get and which admin operations the user may do.`,
		Example: `  widctl user add alice --roles dev,editor
  widctl user update alice --roles dev
  widctl user reset alice
  widctl user ls`,
	})
	cmd.AddCommand(
		NewCmdAdd(f, nil),
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

// AddOptions are the settings of `widctl user add`.
type AddOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Name      string
	Roles     []string
	InviteTTL resource.Duration
	TOTP      bool
	Force     bool
}

// NewCmdAdd builds `widctl user add`.
func NewCmdAdd(f *cmdutil.Factory, runF func(*AddOptions) error) *cobra.Command {
	opts := &AddOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "add NAME --roles ROLE[,ROLE...] [--invite-ttl DURATION] [--force]",
		Short: "Add a user with roles, and print the user's one-time invite",
		Long: `Add a user holding the given roles. The roles must exist.

The command prints a one-time invite and the widctl login command that uses
it: the user's first login sets the password. The invite is shown only this
once and expires after --invite-ttl.

An existing user of the same name is refused unless --force replaces it: the
user then holds exactly the given roles, and the old password, second factor
and lockout give way to a new invite (as "widctl user reset" does).`,
		Example: `  widctl user add alice --roles dev
  widctl user add bob --roles dev,editor --invite-ttl 24h
  widctl user add alice --roles dev,editor --force`,
		Args:              cmdutil.ExactArgs(1, "the user's name"),
		ValidArgsFunction: resourcecmd.CompleteNames(f, resource.KindUser),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			if runF != nil {
				return runF(opts)
			}
			return addRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringSliceVar(&opts.Roles, "roles", nil, "`ROLES` the user holds, comma-separated")
	cmd.RegisterFlagCompletionFunc("roles", resourcecmd.CompleteNameList(f, resource.KindRole))
	cmdutil.DurationVar(cmd.Flags(), &opts.InviteTTL, "invite-ttl", "the invite expires after `DURATION` (default 1h)")
	cmd.Flags().BoolVar(&opts.TOTP, "totp", false, "require a TOTP second factor: the first login shows the secret, later logins need a code")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "replace a user of the same name: new roles, and a new invite in place of the password")
	return cmd
}

// Invite is what `widctl user add` prints: the one-time invite, shown once,
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

// User builds and checks the user the options describe.
func (opts *AddOptions) User() (*resource.User, error) {
	return newUser(opts.Name, opts.Roles)
}

func newUser(name string, roles []string) (*resource.User, error) {
	if err := resource.ValidateName(name); err != nil {
		return nil, cmdutil.InputError(err)
	}
	roles = nonEmpty(roles)
	if len(roles) == 0 {
		return nil, cmdutil.InputErrorf("user %q needs roles: pass --roles ROLE[,ROLE...]", name)
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

func addRun(ctx context.Context, opts *AddOptions) error {
	u, err := opts.User()
	if err != nil {
		return err
	}
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	// Ping first: the login command needs the auth address and CA pin.
	ping, err := c.Ping(ctx, &authv1.PingRequest{})
	if err != nil {
		return err
	}
	ttl := int64(opts.InviteTTL.D() / time.Second)
	verb := "Added"
	secret, expires, err := createUser(ctx, c, u, ttl, opts.TOTP)
	if status.Code(err) == codes.AlreadyExists && opts.Force {
		verb = "Replaced"
		secret, expires, err = replaceUser(ctx, c, u, ttl, opts.TOTP)
	}
	if err != nil {
		return err
	}
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

// createUser adds a new user and its invite in one step.
func createUser(ctx context.Context, c *client.Client, u *resource.User, ttlSeconds int64, totp bool) (string, time.Time, error) {
	resp, err := c.CreateUser(ctx, &authv1.CreateUserRequest{Name: u.Metadata.Name, Roles: u.Spec.Roles, InviteTtlSeconds: ttlSeconds, Totp: totp})
	if err != nil {
		return "", time.Time{}, err
	}
	return resp.GetInvite(), resp.GetInviteExpiresAt().AsTime(), nil
}

// replaceUser is --force on a user that exists: the user document is
// replaced the way "widctl create --force" replaces it, then the
// credentials are reset, so that a replaced user is a new user.
func replaceUser(ctx context.Context, c *client.Client, u *resource.User, ttlSeconds int64, totp bool) (string, time.Time, error) {
	if _, err := cmdutil.CreateResources(ctx, c, true, u); err != nil {
		return "", time.Time{}, err
	}
	resp, err := c.ResetUser(ctx, &authv1.ResetUserRequest{Name: u.Metadata.Name, InviteTtlSeconds: ttlSeconds, Totp: totp})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("user %s was replaced, but resetting its password failed (run widctl user reset %s): %w", u.Metadata.Name, u.Metadata.Name, err)
	}
	return resp.GetInvite(), resp.GetInviteExpiresAt().AsTime(), nil
}

// UpdateOptions are the settings of `widctl user update`.
type UpdateOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Name  string
	Roles []string
}

// NewCmdUpdate builds `widctl user update`.
func NewCmdUpdate(f *cmdutil.Factory, runF func(*UpdateOptions) error) *cobra.Command {
	opts := &UpdateOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:               "update NAME --roles ROLE[,ROLE...]",
		Short:             "Replace a user's roles",
		Long:              `Replace the roles a user holds. The change is made only if nobody changed the user since it was read.`,
		Example:           `  widctl user update alice --roles dev,editor`,
		Args:              cmdutil.ExactArgs(1, "the user's name"),
		ValidArgsFunction: resourcecmd.CompleteNames(f, resource.KindUser),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			if _, err := newUser(opts.Name, opts.Roles); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			return updateRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringSliceVar(&opts.Roles, "roles", nil, "`ROLES` the user holds from now on, comma-separated")
	cmd.RegisterFlagCompletionFunc("roles", resourcecmd.CompleteNameList(f, resource.KindRole))
	return cmd
}

func updateRun(ctx context.Context, opts *UpdateOptions) error {
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	cur, err := cmdutil.GetResource(ctx, c, resource.KindUser, opts.Name)
	if err != nil {
		return err
	}
	u, ok := cur.(*resource.User)
	if !ok {
		return fmt.Errorf("user/%s came back as a %s", opts.Name, cur.GetKind())
	}
	u.Spec.Roles = nonEmpty(opts.Roles)
	if err := u.Validate(); err != nil {
		return cmdutil.InputError(err)
	}
	updated, err := cmdutil.UpdateResource(ctx, c, u)
	if err != nil {
		return err
	}
	if p.Format != output.Text {
		return p.Resource(updated)
	}
	_, err = fmt.Fprintf(opts.IO.Out, "user %s now holds %s\n", u.Metadata.Name, strings.Join(u.Spec.Roles, ", "))
	return err
}

func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

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
