package agentcmd

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/version"
)

// VersionOptions are the settings of `widagent version`.
type VersionOptions struct {
	IO *iostreams.IOStreams
}

// NewCmdVersion builds `widagent version`.
func NewCmdVersion(f *cmdutil.Factory, runF func(*VersionOptions) error) *cobra.Command {
	opts := &VersionOptions{IO: f.IOStreams}
	return &cobra.Command{
		Use:     "version",
		Short:   "Print widagent's version",
		Example: "  widagent version",
		Args:    cmdutil.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if runF != nil {
				return runF(opts)
			}
			_, err := fmt.Fprintf(opts.IO.Out, "widagent %s\n", version.Version)
			return err
		},
	}
}
