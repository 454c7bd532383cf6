// Package system starts a whole SPIFFE implementation on this host for the
// Workload API benchmark and the interop tests: SPIRE (spire-server and
// spire-agent) or wid (widagent and widctl), each on a fresh temp dir, on
// loopback and temp unix sockets only. Both give the current uid its
// identities through their own admin commands, the way an operator would, so
// that the same measurements drive both.
//
// It must never leave a process behind: Stop ends every process a Start began
// (and the kernel kills them if this process dies first).
package system

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Process is one running process of a system, for reading its memory.
type Process struct {
	// Role says what the process does: "agent", "server", or "auth+agent"
	// when one process is both.
	Role string
	PID  int
}

// process is a long-running child with its output in a log file.
type process struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

// startProcess runs argv in the background, its stdout and stderr going to
// logPath. With stdout set, stdout goes there instead.
func startProcess(name, logPath string, stdout *os.File, argv ...string) (*process, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating %s's log: %w", name, err)
	}
	defer f.Close() // the child holds its own copy
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if stdout != nil {
		cmd.Stdout = stdout
	}
	// If the benchmark dies without stopping it, the kernel ends it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(p.exited) }()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// running reports an error if the process has exited, with its log's tail.
func (p *process) running() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%s); its log ends:\n%s", p.name, p.cmd.ProcessState, tail(p.log))
	default:
		return nil
	}
}

// stop ends the process with SIGTERM, then SIGKILL after 10s.
func (p *process) stop() error {
	if p == nil {
		return nil
	}
	select {
	case <-p.exited:
		return nil
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not stop within 10s of SIGTERM; killed it", p.name)
	}
}

// tail is the end of a log file, for errors.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// run runs a short command and returns its stdout; its error carries stderr.
func run(ctx context.Context, env []string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(argv[0]), strings.Join(argv[1:min(len(argv), 3)], " "), err, strings.TrimSpace(errb.String()+"\n"+out.String()))
	}
	return out.String(), nil
}

// tempDir is a fresh directory with a short path: unix socket paths are
// limited to about 100 bytes.
func tempDir(prefix string) (string, error) {
	return os.MkdirTemp("", prefix)
}

// checkBinary reports a missing binary with what to do about it.
func checkBinary(path, hint string) error {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s is missing: %s", path, hint)
		}
		return err
	}
	return nil
}
