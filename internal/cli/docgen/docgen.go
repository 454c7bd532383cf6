// Package docgen generates the shell completions and man pages that are
// committed under completions/ and man/, from the command trees themselves,
// so that they cannot drift from the commands. Output is byte-for-byte
// reproducible: a fixed date, no generator tag, no machine-specific defaults.
package docgen

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
	"github.com/wid-project/wid/internal/cli/agentcmd"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/completion"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/root"
	"github.com/wid-project/wid/internal/core/paths"
)

// Directories of the generated files, relative to the repository root.
const (
	CompletionsDir = "completions"
	ManDir         = "man/man1"
)

// manDate is the date every man page carries. A fixed date keeps the pages
// reproducible; change it when the pages change in substance.
var manDate = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)

// Program is a binary whose command tree ships with docs.
type Program struct {
	Name string
	// Root builds a fresh command tree.
	Root func() *cobra.Command
}

// Programs lists every binary documented under completions/ and man/.
func Programs() []Program {
	ios, _, _, _ := iostreams.Test()
	return []Program{
		{Name: "widctl", Root: func() *cobra.Command { return root.NewRootCmd(cmdutil.NewFactory(ios)) }},
		{Name: "widagent", Root: func() *cobra.Command { return agentcmd.NewRootCmd(ios.Out, ios.ErrOut) }},
	}
}

// Files generates every file, keyed by its slash-separated path relative to
// the repository root.
func Files() (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, p := range Programs() {
		for _, shell := range completion.Shells {
			var buf bytes.Buffer
			if err := completion.Write(&buf, p.Root(), shell); err != nil {
				return nil, fmt.Errorf("generating %s completion for %s: %w", shell, p.Name, err)
			}
			files[CompletionsDir+"/"+completion.Name(p.Name, shell)] = buf.Bytes()
		}
		r := p.Root()
		portableDefaults(r)
		if err := manPages(r, files); err != nil {
			return nil, fmt.Errorf("generating man pages for %s: %w", p.Name, err)
		}
	}
	return files, nil
}

// manPages adds one page per available command, named as cobra's
// GenManTree names them (widctl-role-create.1).
func manPages(cmd *cobra.Command, files map[string][]byte) error {
	for _, c := range cmd.Commands() {
		if !c.IsAvailableCommand() || c.IsAdditionalHelpTopicCommand() || c.Name() == "help" {
			continue
		}
		if err := manPages(c, files); err != nil {
			return err
		}
	}
	cmd.DisableAutoGenTag = true
	date := manDate
	// A fresh header per page: GenMan fills in the title of the first page it is given.
	header := &doc.GenManHeader{Section: "1", Date: &date, Source: "wid", Manual: "wid manual"}
	var buf bytes.Buffer
	if err := doc.GenMan(cmd, header, &buf); err != nil {
		return err
	}
	name := strings.ReplaceAll(cmd.CommandPath(), " ", "-") + ".1"
	files[ManDir+"/"+name] = buf.Bytes()
	return nil
}

// portableDefaults replaces flag defaults that depend on the machine or the
// user running the generator (home directory, root or not) with words that
// hold everywhere, so that the pages come out the same for everyone.
func portableDefaults(cmd *cobra.Command) {
	machine := []struct{ path, words string }{
		{paths.DefaultWorkloadSocket(), "$XDG_RUNTIME_DIR/wid/workload.sock, or /run/wid/workload.sock as root"},
		{paths.DefaultDataDir(), "$WID_DATA_DIR, else $XDG_DATA_HOME/wid (~/.local/share/wid), or /var/lib/wid as root"},
		{paths.ConfigDir(), "~/.config/widctl"},
	}
	fix := func(f *pflag.Flag) {
		for _, m := range machine {
			if f.DefValue == m.path {
				f.DefValue = m.words
				return
			}
		}
	}
	cmd.Flags().VisitAll(fix)
	cmd.PersistentFlags().VisitAll(fix)
	for _, c := range cmd.Commands() {
		portableDefaults(c)
	}
}

// Write writes every file under dir (the repository root) and removes
// generated files that no command produces any more.
func Write(dir string) error {
	files, err := Files()
	if err != nil {
		return err
	}
	stale, err := Stale(dir, files)
	if err != nil {
		return err
	}
	for _, name := range stale {
		if err := os.Remove(filepath.Join(dir, filepath.FromSlash(name))); err != nil {
			return fmt.Errorf("removing stale %s: %w", name, err)
		}
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
		if err := os.WriteFile(path, files[name], 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}

// Stale lists the files in the generated directories under dir that files
// does not hold.
func Stale(dir string, files map[string][]byte) ([]string, error) {
	var stale []string
	for _, sub := range []string{CompletionsDir, ManDir} {
		entries, err := os.ReadDir(filepath.Join(dir, filepath.FromSlash(sub)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			name := sub + "/" + e.Name()
			if _, ok := files[name]; !ok && !e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				stale = append(stale, name)
			}
		}
	}
	sort.Strings(stale)
	return stale, nil
}
