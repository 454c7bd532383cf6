// Package e2e drives the real widagent and widctl binaries the way a user
// does: it builds them once, starts widagent on a temp data dir, and runs
// widctl against its admin socket.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/store/postgres/pgtest"
	"github.com/wid-project/wid/internal/testkit"
)

var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	moreParallel()
	stopSpirePrebuild := startSpirePrebuild()
	dir, err := os.MkdirTemp("", "wid-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		stopSpirePrebuild()
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-o", dir, "../cmd/widagent", "../cmd/widctl")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		stopSpirePrebuild()
		os.Exit(1)
	}
	binDir = dir
	// pgtest.Main stops the PostgreSQL server that tests of --store start.
	code := pgtest.Main(m)
	stopSpirePrebuild()
	os.RemoveAll(dir)
	os.Exit(code)
}

// moreParallel runs more parallel tests at once than go test's default of
// one per CPU, unless -parallel was given. The e2e tests mostly wait, on
// the processes they start and on clocks (a fault held for its length, a
// TTL running out, an idle minute): two at a time on 2 cores, the parallel
// tests with their widagents kept under half a core busy. A test that
// bounds a latency or a duration is not parallel, so it runs alone.
func moreParallel() {
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		flag.Set("test.parallel", strconv.Itoa(max(4, runtime.GOMAXPROCS(0))))
	}
}

// agent is a running widagent process.
type agent struct {
	t       *testing.T
	cmd     *exec.Cmd
	dataDir string
	addr    string
	pin     string
	socket  string
	td      string
	// workload is the Workload API socket; diag the diagnostics address.
	workload string
	diag     string
	out      *testkit.SyncBuffer
	exited   chan struct{}
}

func newDataDir(t *testing.T) string {
	t.Helper()
	// Short path: unix socket names are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "wid-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

var (
	addrRE = regexp.MustCompile(`auth address:\s+(\S+)`)
	pinRE  = regexp.MustCompile(`CA pin:\s+(sha256:[0-9a-f]{64})`)
	sockRE = regexp.MustCompile(`admin socket:\s+(\S+)`)
	tdRE   = regexp.MustCompile(`trust domain:\s+spiffe://(\S+)`)
	wlRE   = regexp.MustCompile(`workload API:\s+unix://(\S+)`)
	diagRE = regexp.MustCompile(`diagnostics:\s+http://(\S+)/metrics`)
)

// startAgent runs `widagent start` on dataDir and waits until it prints its addresses.
func startAgent(t *testing.T, dataDir string, extra ...string) *agent {
	t.Helper()
	args := append([]string{"start", "--data-dir", dataDir, "--auth-listen", "127.0.0.1:0"}, extra...)
	if !slices.Contains(extra, "--workload-socket") {
		// Each test's agent gets its own socket, not the user's default.
		args = append(args, "--workload-socket", filepath.Join(dataDir, "workload.sock"))
	}
	cmd := exec.Command(filepath.Join(binDir, "widagent"), args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errBuf := testkit.NewSyncBuffer()
	cmd.Stderr = errBuf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting widagent: %v", err)
	}
	a := &agent{t: t, cmd: cmd, dataDir: dataDir, out: errBuf, exited: make(chan struct{})}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, stdout)
	}()
	go func() { cmd.Wait(); close(a.exited) }()
	t.Cleanup(a.stop)
	deadline := time.After(20 * time.Second)
	roles := "auth,agent"
	for i, x := range args {
		if x == "--roles" && i+1 < len(args) {
			roles = args[i+1]
		}
	}
	wantAuth, wantAgent := strings.Contains(roles, "auth"), strings.Contains(roles, "agent")
	wantDiag := slices.Contains(args, "--diag-addr")
	for (wantAuth && (a.pin == "" || a.addr == "" || a.socket == "")) || (wantAgent && a.workload == "") || (wantDiag && a.diag == "") {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("widagent exited before it was ready; stderr:\n%s", errBuf)
			}
			if m := addrRE.FindStringSubmatch(l); m != nil {
				a.addr = m[1]
			}
			if m := pinRE.FindStringSubmatch(l); m != nil {
				a.pin = m[1]
			}
			if m := sockRE.FindStringSubmatch(l); m != nil {
				a.socket = m[1]
			}
			if m := tdRE.FindStringSubmatch(l); m != nil {
				a.td = m[1]
			}
			if m := wlRE.FindStringSubmatch(l); m != nil {
				a.workload = m[1]
			}
			if m := diagRE.FindStringSubmatch(l); m != nil {
				a.diag = m[1]
			}
		case <-deadline:
			t.Fatalf("widagent did not become ready; stderr:\n%s", errBuf)
		}
	}
	go func() {
		for range lines {
		}
	}()
	return a
}

// stop ends widagent with SIGTERM, as an operator would.
func (a *agent) stop() {
	select {
	case <-a.exited:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		a.cmd.Process.Kill()
		<-a.exited
		a.t.Errorf("widagent did not stop within 10s of SIGTERM")
	}
}

// kill ends widagent with SIGKILL.
func (a *agent) kill() {
	a.cmd.Process.Kill()
	<-a.exited
}

// result of one widctl run.
type result struct {
	stdout, stderr string
	code           int
}

// widctl runs widctl against the agent's admin socket.
func (a *agent) widctl(args ...string) result {
	a.t.Helper()
	return runWidctl(a.t, []string{"WIDCTL_ADMIN_SOCKET=" + a.socket}, "", args...)
}

// widctlIn runs widctl with stdin.
func (a *agent) widctlIn(stdin string, args ...string) result {
	a.t.Helper()
	return runWidctl(a.t, []string{"WIDCTL_ADMIN_SOCKET=" + a.socket}, stdin, args...)
}

func runWidctl(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "widctl"), args...)
	home := t.TempDir()
	// WID_DATA_DIR: as root the default data dir is /var/lib/wid whatever
	// XDG_DATA_HOME says, and a trust domain running there must not answer.
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "XDG_DATA_HOME="+filepath.Join(home, ".local/share"), "WID_DATA_DIR="+filepath.Join(home, ".local/share/wid"))
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running widctl %v: %v", args, err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// must fails the test unless widctl succeeded.
func (r result) must(t *testing.T, args ...string) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("widctl %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

// admin connects to the admin socket with the Go client.
func (a *agent) admin() *client.Client {
	a.t.Helper()
	c, err := client.Dial(client.Config{AdminSocket: a.socket})
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { c.Close() })
	return c
}
