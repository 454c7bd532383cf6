package user

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

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
