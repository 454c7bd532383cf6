package bot

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

// UpdateOptions are the settings of `widctl bot update`.
type UpdateOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Name  string
	Roles []string
}

// NewCmdUpdate builds `widctl bot update`.
func NewCmdUpdate(f *cmdutil.Factory, runF func(*UpdateOptions) error) *cobra.Command {
	opts := &UpdateOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "update NAME --roles ROLE[,ROLE...]",
		Short: "Replace a bot's roles",
		Long: `Replace the roles a bot holds; agents joined as the bot get what the new
roles grant, and lose what only the old ones did. The change is made only if
nobody changed the bot since it was read.`,
		Example:           `  widctl bot update web-agent --roles web,api`,
		Args:              cmdutil.ExactArgs(1, "the bot's name"),
		ValidArgsFunction: resourcecmd.CompleteNames(f, resource.KindBot),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			if _, err := (&CreateOptions{Name: opts.Name, Roles: opts.Roles}).Bot(); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			return updateRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringSliceVar(&opts.Roles, "roles", nil, "`ROLES` the bot holds from now on, comma-separated")
	cmd.RegisterFlagCompletionFunc("roles", resourcecmd.CompleteNameList(f, resource.KindRole))
	return cmd
}

func updateRun(ctx context.Context, opts *UpdateOptions) error {
	want, err := (&CreateOptions{Name: opts.Name, Roles: opts.Roles}).Bot()
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
	cur, err := cmdutil.GetResource(ctx, c, resource.KindBot, opts.Name)
	if err != nil {
		return err
	}
	b, ok := cur.(*resource.Bot)
	if !ok {
		return fmt.Errorf("bot/%s came back as a %s", opts.Name, cur.GetKind())
	}
	b.Spec.Roles = want.Spec.Roles
	updated, err := cmdutil.UpdateResource(ctx, c, b)
	if err != nil {
		return err
	}
	if p.Format != output.Text {
		return p.Resource(updated)
	}
	_, err = fmt.Fprintf(opts.IO.Out, "bot %s now holds %s\n", b.Metadata.Name, strings.Join(b.Spec.Roles, ", "))
	return err
}
