package resourcecmd

import (
	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
)

// Help is the help text of a per-noun command.
type Help struct {
	Short   string
	Long    string
	Example string
}

// NewCmdListKind builds `widctl NOUN ls`, which runs `widctl get KIND`.
func NewCmdListKind(f *cmdutil.Factory, kind string, h Help, runF func(*GetOptions) error) *cobra.Command {
	opts := &GetOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer, Kind: kind}
	return &cobra.Command{
		Use:     "ls",
		Short:   h.Short,
		Long:    h.Long,
		Example: h.Example,
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(opts)
			}
			return GetRun(cmd.Context(), opts)
		},
	}
}

// NewCmdGetKind builds `widctl NOUN get NAME`, which runs `widctl get KIND/NAME`.
func NewCmdGetKind(f *cmdutil.Factory, kind string, h Help, runF func(*GetOptions) error) *cobra.Command {
	opts := &GetOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer, Kind: kind}
	return &cobra.Command{
		Use:               "get NAME",
		Short:             h.Short,
		Long:              h.Long,
		Example:           h.Example,
		Args:              cmdutil.ExactArgs(1, "the "+kind+"'s name"),
		ValidArgsFunction: CompleteNames(f, kind),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			if runF != nil {
				return runF(opts)
			}
			return GetRun(cmd.Context(), opts)
		},
	}
}

// NewCmdRemoveKind builds `widctl NOUN rm NAME`, which runs `widctl rm KIND/NAME`.
func NewCmdRemoveKind(f *cmdutil.Factory, kind string, h Help, runF func(*RemoveOptions) error) *cobra.Command {
	opts := &RemoveOptions{IO: f.IOStreams, Client: f.Client, Kind: kind}
	return &cobra.Command{
		Use:               "rm NAME",
		Short:             h.Short,
		Long:              h.Long,
		Example:           h.Example,
		Args:              cmdutil.ExactArgs(1, "the "+kind+"'s name"),
		ValidArgsFunction: CompleteNames(f, kind),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			if runF != nil {
				return runF(opts)
			}
			return RemoveRun(cmd.Context(), opts)
		},
	}
}
