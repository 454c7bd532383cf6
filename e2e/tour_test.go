package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/testkit"
)

// A page's ```sh blocks are what a reader types. A block that cannot run on a
// developer's machine is preceded by a marker the reader does not see:
//
//	<!-- tour: skip (needs Kubernetes) -->        not run
//	<!-- tour: background (follows the log) -->  each command runs in the background until the page ends
//	<!-- tour: retry (waits for agents) -->      each command is asked again until it succeeds, as the page says to
var tourMarkerRE = regexp.MustCompile(`^<!--\s*tour:\s*(skip|background|retry)\s*(?:\((.+)\))?\s*-->$`)

// heredocRE finds a here-document's terminator, so its lines stay with its command.
var heredocRE = regexp.MustCompile(`<<-?\s*'?"?([A-Za-z_]+)'?"?`)

type tourBlock struct {
	line     int // of the opening fence, 1-based
	mode     string
	why      string
	commands []string
}

// tourBlocks returns a page's ```sh blocks (indented ones in lists too), each
// split into the commands a shell would run one by one.
func tourBlocks(t *testing.T, page, text string) []tourBlock {
	t.Helper()
	lines := strings.Split(text, "\n")
	var blocks []tourBlock
	prev := ""
	for i := 0; i < len(lines); i++ {
		trimmed := strings.TrimSpace(lines[i])
		if trimmed != "```sh" {
			if strings.HasPrefix(trimmed, "```") {
				// Skip other fences whole: their lines are not markers.
				for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
				}
				prev = ""
				continue
			}
			if trimmed != "" {
				prev = trimmed
			}
			continue
		}
		b := tourBlock{line: i + 1}
		if m := tourMarkerRE.FindStringSubmatch(prev); m != nil {
			b.mode, b.why = m[1], m[2]
		} else if strings.HasPrefix(prev, "<!--") && strings.Contains(prev, "tour") {
			t.Fatalf("%s:%d: malformed tour marker %q", page, i, prev)
		}
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, lines[i])
		}
		b.commands = splitCommands(body)
		blocks = append(blocks, b)
		prev = ""
	}
	return blocks
}

// splitCommands joins continued lines and here-documents into one command each,
// and drops blank and comment-only lines.
func splitCommands(body []string) []string {
	var cmds []string
	for i := 0; i < len(body); i++ {
		line := strings.TrimSpace(body[i])
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cmd := []string{line}
		for strings.HasSuffix(line, `\`) && i+1 < len(body) {
			i++
			line = strings.TrimSpace(body[i])
			cmd = append(cmd, line)
		}
		if m := heredocRE.FindStringSubmatch(strings.Join(cmd, "\n")); m != nil {
			for i+1 < len(body) {
				i++
				// Here-document lines keep their indentation (YAML needs it),
				// less the block's own.
				cmd = append(cmd, strings.TrimPrefix(body[i], commonIndent(body)))
				if strings.TrimSpace(body[i]) == m[1] {
					break
				}
			}
		}
		cmds = append(cmds, strings.Join(cmd, "\n"))
	}
	return cmds
}

func commonIndent(body []string) string {
	indent := ""
	first := true
	for _, l := range body {
		if strings.TrimSpace(l) == "" {
			continue
		}
		lead := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		if first || len(lead) < len(indent) {
			indent, first = lead, false
		}
	}
	return indent
}

// tourPages is the README, then every page its Documentation list links to,
// in that order; it fails if a page under docs/ is not in the list.
func tourPages(t *testing.T, readme string) []string {
	t.Helper()
	_, list, ok := strings.Cut(readme, "## Documentation")
	if !ok {
		t.Fatal("README has no Documentation section")
	}
	pages := []string{"README.md"}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile(`\]\((docs/[a-z0-9-]+\.md)\)`).FindAllStringSubmatch(list, -1) {
		pages = append(pages, m[1])
		listed[m[1]] = true
	}
	all, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range all {
		if p := strings.TrimPrefix(p, "../"); !listed[p] {
			t.Errorf("%s is not in the README's Documentation list, so the tour does not follow it", p)
		}
	}
	return pages
}

// tourShell runs the pages' commands the way a reader's shell would: in one
// working directory, with what `export` set kept for the next commands.
type tourShell struct {
	t   *testing.T
	dir string
	env []string
}

type tourRun struct {
	stdout, stderr string
	code           int
}

func (s *tourShell) run(cmdline string) tourRun {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	script := cmdline
	export := strings.HasPrefix(cmdline, "export ")
	if export {
		script += "\nenv -0"
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Dir, cmd.Env = s.dir, s.env
	// A command that hangs is killed with everything it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := tourRun{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("running %q: %v", cmdline, err)
	}
	if ctx.Err() != nil {
		r.code, r.stderr = -1, r.stderr+"\n(killed after 30s)"
	}
	if export && r.code == 0 {
		s.env = nil
		for _, kv := range strings.Split(r.stdout, "\x00") {
			if kv != "" {
				s.env = append(s.env, kv)
			}
		}
		r.stdout = ""
	}
	return r
}

// background starts a command that runs until stopped; stop reports whether it
// was still running, and what it printed.
func (s *tourShell) background(cmdline string) (stop func() (running bool, output string)) {
	s.t.Helper()
	cmd := exec.Command("sh", "-c", cmdline)
	cmd.Dir, cmd.Env = s.dir, s.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := testkit.NewSyncBuffer()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting %q: %v", cmdline, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	kill := func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	s.t.Cleanup(kill)
	return func() (bool, string) {
		select {
		case <-exited:
			return false, out.String()
		default:
		}
		kill()
		return true, out.String()
	}
}

// The README's set-up and tour, then every docs page in the README's order,
// run as written against one widagent start: each page works after the ones
// before it, so a reader who follows them all meets no error the page does
// not show.
func TestReadmeTour(t *testing.T) {
	a := startAgent(t, newDataDir(t))
	if a.td != "example.org" {
		t.Fatalf("default trust domain = %q, want example.org", a.td)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// The reader's clone: bin/ holds what `go build -o bin/ ./cmd/...` made.
	clone := t.TempDir()
	if err := os.Symlink(binDir, filepath.Join(clone, "bin")); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	sh := &tourShell{t: t, dir: clone, env: append(os.Environ(), "HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "XDG_DATA_HOME="+filepath.Join(home, ".local/share"),
		"WIDCTL_ADMIN_SOCKET="+a.socket, "SPIFFE_ENDPOINT_SOCKET=unix://"+a.workload)}

	start := time.Now()
	ran, skipped := map[string]int{}, map[string][]string{}
	for _, page := range tourPages(t, string(readme)) {
		text, err := os.ReadFile(filepath.Join("..", page))
		if err != nil {
			t.Fatal(err)
		}
		var stops []func() (bool, string)
		var stopped []string
		for bi, b := range tourBlocks(t, page, string(text)) {
			where := fmt.Sprintf("%s, block %d (line %d)", page, bi+1, b.line)
			if len(b.commands) == 0 {
				t.Fatalf("%s: an empty ```sh block", where)
			}
			if b.mode != "" && b.why == "" {
				t.Fatalf("%s: the tour marker says %s but not why", where, b.mode)
			}
			switch b.mode {
			case "skip":
				skipped[b.why] = append(skipped[b.why], where)
				continue
			case "background":
				for _, c := range b.commands {
					stops = append(stops, sh.background(c))
					stopped = append(stopped, c)
				}
				ran[page] += len(b.commands)
				continue
			}
			for _, c := range b.commands {
				r := sh.run(c)
				if b.mode == "retry" {
					// The page tells the reader to ask again until the step is allowed.
					testkit.WithinEvery(20*time.Second, 200*time.Millisecond, func() bool {
						if r.code != 0 {
							r = sh.run(c)
						}
						return r.code == 0
					})
				}
				ran[page]++
				checkTourCommand(t, where, c, r)
			}
		}
		for i, stop := range stops {
			if running, out := stop(); !running {
				t.Fatalf("%s: %s stopped before the page ended:\n%s", page, stopped[i], out)
			}
		}
	}
	var whys []string
	for why, where := range skipped {
		whys = append(whys, fmt.Sprintf("%s: %s", why, strings.Join(where, "; ")))
	}
	sort.Strings(whys)
	t.Logf("ran %v in %v; skipped:\n%s", ran, time.Since(start).Round(time.Millisecond), strings.Join(whys, "\n"))
	if ran["README.md"] < 10 {
		t.Fatalf("ran only %d commands of the README", ran["README.md"])
	}
}

func checkTourCommand(t *testing.T, where, cmdline string, r tourRun) {
	t.Helper()
	fail := func(why string) {
		t.Helper()
		t.Fatalf("%s: %s\n$ %s\nexit %d\nstderr:\n%s\nstdout:\n%s", where, why, cmdline, r.code, r.stderr, r.stdout)
	}
	// explain exits 1 for a refusal, which is what the pages use it to show;
	// the refusal must say why.
	if strings.HasPrefix(cmdline, "widctl explain") && r.code == 1 {
		if out := strings.ToLower(r.stdout + r.stderr); !strings.Contains(out, "denied") && !strings.Contains(out, "refused") {
			fail("explain exited 1 without saying what was refused")
		}
		if strings.Contains(cmdline, "/svc/admin") && !strings.Contains(r.stdout+r.stderr, "/svc/admin") {
			fail("the refusal does not name /svc/admin")
		}
		return
	}
	if r.code != 0 {
		fail("the command failed")
	}
	if strings.HasPrefix(cmdline, "widctl explain") && strings.Contains(cmdline, "/svc/admin") {
		fail("the page shows this as a refusal, but it was allowed")
	}
	if strings.HasPrefix(cmdline, "bin/widagent api fetch x509") && !strings.Contains(r.stdout, "spiffe://example.org/uid/") {
		fail("the first SVID is not the dev identity")
	}
	if strings.HasPrefix(cmdline, "widagent api fetch x509") && strings.Contains(where, "README") && !strings.Contains(r.stdout, "spiffe://example.org/svc/web") {
		fail("the SVID of the new workload identity is missing")
	}
}
