// Package agentcmd is widagent's command tree: `widagent start` runs the
// auth service and the agent until told to stop, and `widagent api` talks to
// a Workload API as a workload would. It follows widctl's conventions: the
// commands get their streams and printer from a cmdutil.Factory, and
// cmdutil maps their errors to one sentence and an exit code.
package agentcmd

import (
	"context"
	"sync"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
)

// exitCodesHelp documents widagent's exit codes for the root command's help.
const exitCodesHelp = `Exit codes:
  0    success, or stopped by SIGINT or SIGTERM
  1    failure: widagent could not start, or stopped with an error
  2    bad input: flags, arguments, the config file or the join token file
  130  interrupted before it was done (widagent api)`

// NewFactory builds the Factory widagent runs with. Its only setting is
// --format of the api commands: widagent reads no widctl configuration.
func NewFactory(ios *iostreams.IOStreams) *cmdutil.Factory {
	f := &cmdutil.Factory{IOStreams: ios, GlobalFlags: pflag.NewFlagSet("widagent", pflag.ContinueOnError)}
	f.GlobalFlags.String(cmdutil.KeyFormat, string(output.Text), "print results as `FORMAT`: text, json or yaml")
	f.Config = sync.OnceValues(func() (*cmdutil.Config, error) {
		s, _ := f.GlobalFlags.GetString(cmdutil.KeyFormat)
		format, err := output.ParseFormat(s)
		if err != nil {
			return nil, cmdutil.InputError(err)
		}
		return &cmdutil.Config{Format: format}, nil
	})
	return f
}

// NewRootCmd builds widagent's command tree on f.
func NewRootCmd(f *cmdutil.Factory) *cobra.Command {
	root := cmdutil.Group(&cobra.Command{
		Use:   "widagent <command>",
		Short: "Run a wid auth service and agent",
		Long: `widagent runs the wid auth service: the trust domain's certificate
authorities, roles, users, bots, join tokens and audit log. With no
configuration, "widagent start" creates a trust domain in its data dir and
serves it; widctl finds it through the admin socket.

Errors are one sentence on stderr; set WID_DEBUG=1 to see what is behind it.

` + exitCodesHelp,
		Example:       "  widagent start\n  widagent start --trust-domain example.org --data-dir /var/lib/wid",
		SilenceUsage:  true,
		SilenceErrors: true,
	})
	cmdutil.SetupRoot(root, f.IOStreams)
	root.AddCommand(NewCmdStart(f, nil), NewCmdAPI(f), NewCmdVersion(f, nil))
	return root
}

// Run runs widagent with args on f and returns the exit code, having
// printed any error. main and the tests share it.
func Run(ctx context.Context, f *cmdutil.Factory, args []string) int {
	cmd := NewRootCmd(f)
	cmd.SetArgs(args)
	return cmdutil.HandleError(f, cmd.ExecuteContext(ctx))
}
