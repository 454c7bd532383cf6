// Package principal holds what `widctl bot` and `widctl user` share: both
// nouns name a principal that holds a list of roles, given with --roles,
// replaced with `update`, and made anew with `create --force`. What differs
// (a bot's join token, a user's invite) stays with each noun.
package principal

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// Roles trims each --roles value and drops empty ones; a principal with no
// role is refused, naming the flag that gives them.
func Roles(kind, name string, roles []string) ([]string, error) {
	var out []string
	for _, r := range roles {
		if r = strings.TrimSpace(r); r != "" {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, cmdutil.InputErrorf("%s %q needs roles: pass --roles ROLE[,ROLE...]", kind, name)
	}
	return out, nil
}

// Connect opens what a create command needs: its printer, a client, and
// the auth service's Ping answer. The auth address and CA pin it carries go
// into the command printed for the new principal (to join, to log in);
// asked first, so that no principal is made with a credential nobody can
// use. The caller closes the client.
func Connect(ctx context.Context, printer func() (*output.Printer, error), dial func(context.Context) (*client.Client, error)) (*output.Printer, *client.Client, *authv1.PingResponse, error) {
	p, err := printer()
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := dial(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	ping, err := c.Ping(ctx, &authv1.PingRequest{})
	if err != nil {
		c.Close()
		return nil, nil, nil, err
	}
	return p, c, ping, nil
}

// CreateOrReplace runs create; when the name is taken and force is set, it
// replaces r the way "widctl create --force" does and then runs renew, the
// step that gives the replaced principal its new credential. verb says
// which happened, for the sentence the command prints.
func CreateOrReplace[T any](ctx context.Context, c *client.Client, r resource.Resource, force bool, create, renew func() (T, error)) (verb string, v T, err error) {
	v, err = create()
	if status.Code(err) != codes.AlreadyExists || !force {
		return "Created", v, err
	}
	if _, err := cmdutil.CreateResources(ctx, c, true, r); err != nil {
		return "", v, err
	}
	v, err = renew()
	return "Replaced", v, err
}

// UpdateOptions are the settings of `widctl bot update` and `widctl user
// update`.
type UpdateOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Kind  string
	Name  string
	Roles []string
}

// UpdateHelp is the help of one noun's update command.
type UpdateHelp struct {
	Long    string
	Example string
}

// NewCmdUpdate builds `widctl KIND update NAME --roles ...` for a bot or a
// user. check builds the principal the flags describe, so that bad input is
// refused before anything is sent.
func NewCmdUpdate(f *cmdutil.Factory, kind string, help UpdateHelp, check func(name string, roles []string) error, runF func(*UpdateOptions) error) *cobra.Command {
	opts := &UpdateOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer, Kind: kind}
	cmd := &cobra.Command{
		Use:               "update NAME --roles ROLE[,ROLE...]",
		Short:             fmt.Sprintf("Replace a %s's roles", kind),
		Long:              help.Long,
		Example:           help.Example,
		Args:              cmdutil.ExactArgs(1, fmt.Sprintf("the %s's name", kind)),
		ValidArgsFunction: resourcecmd.CompleteNames(f, kind),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			if err := check(opts.Name, opts.Roles); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			return updateRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringSliceVar(&opts.Roles, "roles", nil, fmt.Sprintf("`ROLES` the %s holds from now on, comma-separated", kind))
	cmd.RegisterFlagCompletionFunc("roles", resourcecmd.CompleteNameList(f, resource.KindRole))
	return cmd
}

func updateRun(ctx context.Context, opts *UpdateOptions) error {
	roles, err := Roles(opts.Kind, opts.Name, opts.Roles)
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
	cur, err := cmdutil.GetResource(ctx, c, opts.Kind, opts.Name)
	if err != nil {
		return err
	}
	// Revision stays as read: the auth service refuses the update if the
	// principal changed in between.
	switch r := cur.(type) {
	case *resource.Bot:
		r.Spec.Roles = roles
	case *resource.User:
		r.Spec.Roles = roles
	default:
		return fmt.Errorf("%s/%s came back as a %s", opts.Kind, opts.Name, cur.GetKind())
	}
	if cur.GetKind() != opts.Kind {
		return fmt.Errorf("%s/%s came back as a %s", opts.Kind, opts.Name, cur.GetKind())
	}
	if err := cur.Validate(); err != nil {
		return cmdutil.InputError(err)
	}
	updated, err := cmdutil.UpdateResource(ctx, c, cur)
	if err != nil {
		return err
	}
	if p.Format != output.Text {
		return p.Resource(updated)
	}
	_, err = fmt.Fprintf(opts.IO.Out, "%s %s now holds %s\n", opts.Kind, opts.Name, strings.Join(roles, ", "))
	return err
}
