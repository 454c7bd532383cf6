// Package proc runs the real widagent binary for the benchmarks under
// bench/: it starts the process, waits for the lines of its banner a
// benchmark needs, keeps what it logged for the error a failed run prints,
// and reads the process's memory and CPU from /proc. It is for benchmarks
// only; tests start widagent through e2e's harness.
package proc

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// startTimeout bounds how long widagent may take to print its banner.
const startTimeout = 60 * time.Second

// Proc is a running widagent and what it logged to stderr.
type Proc struct {
	Cmd  *exec.Cmd
	mu   sync.Mutex
	log  strings.Builder
	done chan struct{}
}

// Write keeps the process's stderr.
func (p *Proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.Write(b)
}

// String is what the process logged so far.
func (p *Proc) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// Pid is the process's id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Kill ends the process at once and waits for it. A process stopped with
// SIGSTOP is continued first so that it can be reaped.
func (p *Proc) Kill() {
	p.Cmd.Process.Signal(syscall.SIGCONT)
	p.Cmd.Process.Kill()
	<-p.done
}

// Stop asks the process to end (SIGTERM) and kills it if it has not within
// grace.
func (p *Proc) Stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
	}
}

// Start runs bin/widagent with args, env added to this process's
// environment, and returns once its standard output matched every pattern
// of want, with the first submatch of each (in want's order). The process
// is killed if this process dies without ending it.
func Start(ctx context.Context, bin string, env []string, want []*regexp.Regexp, args ...string) (*Proc, []string, error) {
	p := &Proc{Cmd: exec.Command(filepath.Join(bin, "widagent"), args...), done: make(chan struct{})}
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := p.Cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	p.Cmd.Stderr = p
	if err := p.Cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("starting widagent: %w", err)
	}
	go func() { p.Cmd.Wait(); close(p.done) }()
	found := make(chan []string, 1)
	go func() {
		got := make([]string, len(want))
		n := 0
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			for i, re := range want {
				if m := re.FindStringSubmatch(sc.Text()); m != nil && got[i] == "" {
					got[i] = m[1]
					if n++; n == len(want) {
						found <- got
					}
				}
			}
		}
		io.Copy(io.Discard, out)
	}()
	select {
	case m := <-found:
		return p, m, nil
	case <-p.done:
		return nil, nil, fmt.Errorf("widagent %s exited:\n%s", strings.Join(args, " "), p)
	case <-time.After(startTimeout):
		p.Kill()
		return nil, nil, fmt.Errorf("widagent %s did not print its banner within %s:\n%s", strings.Join(args, " "), startTimeout, p)
	case <-ctx.Done():
		p.Kill()
		return nil, nil, ctx.Err()
	}
}

// Memory reads the resident (VmRSS) and peak resident (VmHWM) memory of
// pid, in MB.
func Memory(pid int) (rss, hwm float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			hwm = kb / 1024
		}
	}
	return rss, hwm, nil
}

// CPU is pid's user and system CPU seconds so far, 0 if it cannot be read.
func CPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
	u, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return (u + st) / 100 // USER_HZ
}
