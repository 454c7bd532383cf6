// Package completion holds `widctl completion`: shell completion scripts
// generated from the command tree.
package completion

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
)

// Shells that completion scripts exist for.
var Shells = []string{"bash", "zsh", "fish"}

// Options are the settings of `widctl completion`.
type Options struct {
	IO    *iostreams.IOStreams
	Shell string
	// Root is the tree to complete.
	Root *cobra.Command
}

// NewCmdCompletion builds `widctl completion`.
func NewCmdCompletion(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams}
	cmd := &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script",
		Long: `Print the completion script for bash, zsh or fish. Packages install these
from the completions/ directory; to load them by hand, see the examples.`,
		Example: `  # bash, for this shell
  source <(widctl completion bash)

  # zsh, for every shell (a directory on your $fpath)
  widctl completion zsh > "${fpath[1]}/_widctl"

  # fish
  widctl completion fish > ~/.config/fish/completions/widctl.fish`,
		ValidArgs: Shells,
		Args:      cmdutil.ExactArgs(1, "the shell: bash, zsh or fish"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Shell, opts.Root = args[0], cmd.Root()
			if runF != nil {
				return runF(opts)
			}
			return Write(opts.IO.Out, opts.Root, opts.Shell)
		},
	}
	return cmd
}

// Write writes root's completion script for shell.
func Write(w io.Writer, root *cobra.Command, shell string) error {
	switch shell {
	case "bash":
		return root.GenBashCompletionV2(w, true)
	case "zsh":
		return root.GenZshCompletion(w)
	case "fish":
		return root.GenFishCompletion(w, true)
	}
	return cmdutil.InputErrorf("no completion for shell %q: use bash, zsh or fish", shell)
}

// Name is a completion script's file name under completions/.
func Name(program, shell string) string { return fmt.Sprintf("%s.%s", program, shell) }
