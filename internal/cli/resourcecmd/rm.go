package resourcecmd

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// RemoveOptions are the settings of `widctl rm`.
type RemoveOptions struct {
	IO     *iostreams.IOStreams
	Client func(context.Context) (*client.Client, error)

	Kind string
	Name string
}

// NewCmdRemove builds `widctl rm`.
func NewCmdRemove(f *cmdutil.Factory, runF func(*RemoveOptions) error) *cobra.Command {
	opts := &RemoveOptions{IO: f.IOStreams, Client: f.Client}
	cmd := &cobra.Command{
		Use:   "rm KIND/NAME",
		Short: "Remove a resource",
		Long: `Remove a resource. A role still held by a user or bot is not removed;
removing a bot also removes its join tokens.`,
		Example: `  widctl rm role/web
  widctl rm workload_identity/api`,
		Args:              cmdutil.ExactArgs(1, "the resource to remove, as KIND/NAME"),
		ValidArgsFunction: completeTargets(f, true),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, name, err := resource.ParseRef(args[0])
			if err != nil {
				return cmdutil.InputError(err)
			}
			opts.Kind, opts.Name = kind, name
			if runF != nil {
				return runF(opts)
			}
			return RemoveRun(cmd.Context(), opts)
		},
	}
	return cmd
}

// RemoveRun removes one resource and says so.
func RemoveRun(ctx context.Context, opts *RemoveOptions) error {
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := cmdutil.DeleteResource(ctx, c, opts.Kind, opts.Name); err != nil {
		return err
	}
	_, err = fmt.Fprintf(opts.IO.Out, "removed %s/%s\n", opts.Kind, opts.Name)
	return err
}
