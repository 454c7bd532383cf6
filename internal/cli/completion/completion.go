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
		if err := root.GenBashCompletionV2(w, true); err != nil {
			return err
		}
		_, err := io.WriteString(w, bashWithoutPackage)
		return err
	case "zsh":
		return root.GenZshCompletion(w)
	case "fish":
		return root.GenFishCompletion(w, true)
	}
	return cmdutil.InputErrorf("no completion for shell %q: use bash, zsh or fish", shell)
}

// Name is a completion script's file name under completions/.
func Name(program, shell string) string { return fmt.Sprintf("%s.%s", program, shell) }

// bashWithoutPackage defines, when the bash-completion package has not, the
// two functions of that package the script above calls, so that <TAB> works
// in a bare bash (a container, a minimal install) instead of printing
// "_get_comp_words_by_ref: command not found". Words are split at blanks only,
// as the script asks of the package with -n =: (no split at = or :).
const bashWithoutPackage = `
# Without the bash-completion package: the two functions of it used above.
if ! declare -F _get_comp_words_by_ref >/dev/null 2>&1; then
_get_comp_words_by_ref()
{
    local line=${COMP_LINE:0:COMP_POINT}
    read -r -a words <<< "$line"
    if [[ -z $line || $line == *[[:blank:]] ]]; then
        words+=("")
    fi
    cword=$(( ${#words[@]} - 1 ))
    cur=${words[cword]}
    prev=${words[cword-1]}
}
fi
if ! declare -F _filedir >/dev/null 2>&1; then
_filedir()
{
    local IFS=$'\n'
    if [[ ${1-} == -d ]]; then
        COMPREPLY+=($(compgen -d -- "$cur"))
    else
        COMPREPLY+=($(compgen -f -- "$cur"))
    fi
    compopt -o filenames 2>/dev/null
}
fi
`
