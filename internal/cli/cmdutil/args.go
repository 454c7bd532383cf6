package cmdutil

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/core/spelling"
)

// usage is the command line a command expects, for error sentences.
func usage(cmd *cobra.Command) string {
	return strings.TrimSuffix(cmd.UseLine(), " [flags]")
}

// ExactArgs wants exactly n arguments; what names the missing one for the
// error ("the role's name").
func ExactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < n:
			return InputErrorf("missing %s: run %s", what, usage(cmd))
		case len(args) > n:
			return InputErrorf("unexpected argument %q: run %s", args[n], usage(cmd))
		}
		return nil
	}
}

// NoArgs refuses arguments.
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return InputErrorf("unexpected argument %q: %s takes only flags, see %s --help", args[0], cmd.CommandPath(), cmd.CommandPath())
	}
	return nil
}

// Group makes cmd a command group: run bare it prints its help, and an
// unknown subcommand is bad input (cobra would print help and succeed).
func Group(cmd *cobra.Command) *cobra.Command {
	cmd.Args = unknownCommand
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	return cmd
}

// SetupRoot readies the root command of a binary: its streams, flag errors
// as bad input, and a usage template for groups, which run (to refuse
// unknown subcommands) and so would get two usage lines from cobra while
// their Use line already says "<command>".
func SetupRoot(root *cobra.Command, ios *iostreams.IOStreams) {
	root.SetIn(ios.In)
	root.SetOut(ios.Out)
	root.SetErr(ios.ErrOut)
	root.SetFlagErrorFunc(FlagErrorFunc)
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(),
		"{{if .Runnable}}\n  {{.UseLine}}{{end}}{{if .HasAvailableSubCommands}}\n  {{.CommandPath}} [command]{{end}}",
		"\n  {{.UseLine}}", 1))
}

func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	hint := ""
	if cmd.SuggestionsMinimumDistance <= 0 {
		// cobra's own default, which it sets only on its error path.
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		hint = fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return InputErrorf("unknown command %q for %s%s: run %s --help to see the commands", args[0], cmd.CommandPath(), hint, cmd.CommandPath())
}

// FlagErrorFunc turns cobra's flag parsing errors into bad input.
func FlagErrorFunc(cmd *cobra.Command, err error) error {
	msg := err.Error()
	if strings.HasPrefix(msg, "invalid argument") {
		// pflag already says which flag and why.
		return InputErrorf("%s", msg)
	}
	return InputErrorf("%s: run %s --help to see the flags", msg, cmd.CommandPath())
}

// Nearest returns the candidate closest to name by edit distance, if it is
// close enough to be the one meant (at most a third of name's length off),
// for "did you mean" hints.
func Nearest(name string, candidates []string) string {
	return spelling.Nearest(name, candidates, len(name)/3+1)
}
