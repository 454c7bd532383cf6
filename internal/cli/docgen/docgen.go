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
	"strconv"
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

// ReleaseDate is the date the man pages carry unless SOURCE_DATE_EPOCH says
// otherwise: the date of the release they document, set when a release is
// cut. A constant (rather than today or the last commit) keeps make gen
// reproducible, so the freshness test only fails when the commands changed.
var ReleaseDate = time.Date(2026, time.December, 4, 0, 0, 0, 0, time.UTC)

// manDate is SOURCE_DATE_EPOCH (reproducible-builds.org) when set, else ReleaseDate.
func manDate() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return ReleaseDate, nil
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q is not a Unix time in seconds", s)
	}
	return time.Unix(sec, 0).UTC(), nil
}

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
		{Name: "widagent", Root: func() *cobra.Command { return agentcmd.NewRootCmd(agentcmd.NewFactory(ios)) }},
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
	date, err := manDate()
	if err != nil {
		return err
	}
	// A fresh header per page: GenMan fills in the title of the first page it is given.
	header := &doc.GenManHeader{Section: "1", Date: &date, Source: "wid", Manual: "wid manual"}
	var buf bytes.Buffer
	if err := doc.GenMan(cmd, header, &buf); err != nil {
		return err
	}
	name := strings.ReplaceAll(cmd.CommandPath(), " ", "-") + ".1"
	files[ManDir+"/"+name] = mendMan(buf.Bytes(), synopsis(cmd))
	return nil
}

// synopsis is a command's usage line. cobra's man page takes "<command>" in
// a Use line for an HTML tag and drops it ("widctl  [flags]"), and a command
// that only groups others has no usage of its own: both read COMMAND.
func synopsis(cmd *cobra.Command) string {
	if cmd.HasAvailableSubCommands() && !cmd.Runnable() {
		return cmd.CommandPath() + " COMMAND [flags]"
	}
	return strings.ReplaceAll(cmd.UseLine(), "<command>", "COMMAND")
}

// mendMan fixes two things in cobra's roff. The synopsis line is replaced
// with the real one. Each option's text is on a tab-indented line after the
// flag, which roff fills into the flag's own line ("--auth="" reach a
// remote..."); a tagged paragraph (.TP) puts the flag in the margin and
// indents its text.
func mendMan(page []byte, synopsisLine string) []byte {
	lines := strings.Split(string(page), "\n")
	var out []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case l == ".SH SYNOPSIS" && i+1 < len(lines):
			out = append(out, l, `\fB`+roffEscape(synopsisLine)+`\fP`)
			i++
		case strings.HasPrefix(l, `\fB-`) && i+1 < len(lines) && strings.HasPrefix(lines[i+1], "\t"):
			// Drop the paragraph break cobra put between two options.
			for len(out) > 0 && (out[len(out)-1] == ".PP" || out[len(out)-1] == "") && isOption(out) {
				out = out[:len(out)-1]
			}
			out = append(out, ".TP", l, strings.TrimPrefix(lines[i+1], "\t"))
			i++
		default:
			out = append(out, l)
		}
	}
	return []byte(strings.Join(out, "\n"))
}

// isOption reports whether the lines before a trailing ".PP" and blank lines
// end with an option's text, so only the breaks between options go.
func isOption(out []string) bool {
	j := len(out) - 1
	for j >= 0 && (out[j] == ".PP" || out[j] == "") {
		j--
	}
	return j >= 2 && out[j-2] == ".TP"
}

func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return strings.ReplaceAll(s, "-", `\-`)
}

// portableDefaults replaces flag defaults that depend on the machine or the
// user running the generator (home directory, root or not) with words that
// hold everywhere, so that the pages come out the same for everyone.
func portableDefaults(cmd *cobra.Command) {
	machine := []struct{ path, words string }{
		{paths.DefaultWorkloadSocket(), "$XDG_RUNTIME_DIR/wid/workload.sock, or /run/wid/workload.sock as root"},
		{paths.DefaultDataDir(), "$WID_DATA_DIR, else $XDG_DATA_HOME/wid (~/.local/share/wid), or /var/lib/wid as root"},
		{cmdutil.ConfigDir(), "~/.config/widctl"},
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
