// Command login measures issue 5's figures with the real binaries: a
// `widagent start` on loopback, then for each of -n fresh users an admin
// `widctl user add`, and the user's `widctl login --invite` followed by
// `widctl svid issue` into a new directory, each a new process, timed from
// the login's start to the SVID's files on disk. The auth service runs with
// debug logging, whose login line carries the time its argon2id computation
// took, so the figure is reported with and without the hash. It also times a
// later password login (the hash is then a check) and `widctl svid issue`
// alone, process start to files written.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

func main() {
	n := flag.Int("n", 15, "fresh users, each logged in and issuing once")
	bin := flag.String("bin", "", "directory holding widagent and widctl (default: build them into a temp dir)")
	flag.Parse()
	if err := run(*n, *bin); err != nil {
		log.Fatalf("bench/login: %v", err)
	}
}

// The figures issue 5 sets.
const (
	loginTarget = 300 * time.Millisecond // login to first SVID on disk, without the hash
	issueTarget = 150 * time.Millisecond // widctl svid issue, process start to files written
)

var (
	inviteRE  = regexp.MustCompile(`--invite (\S+)`)
	addrRE    = regexp.MustCompile(`^\s*auth address:\s+(\S+)`)
	pinRE     = regexp.MustCompile(`^\s*CA pin:\s+(\S+)`)
	socketRE  = regexp.MustCompile(`^\s*admin socket:\s+(\S+)`)
	loginLine = regexp.MustCompile(`msg=login user=(\S+) method=(\S+) argon2id=(\S+)`)
)

func run(n int, bin string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "wid-bench-login-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin == "" {
		bin = filepath.Join(dir, "bin")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "./cmd/widagent", "./cmd/widctl")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building the binaries (run from the module root): %w", err)
		}
	}

	agent, err := startAgent(ctx, bin, dir)
	if err != nil {
		return err
	}
	defer agent.stop()
	admin := func(args ...string) (string, error) {
		return widctl(ctx, bin, adminEnv(agent.socket), "", args...)
	}
	if _, err := admin("role", "create", "dev", "--spiffe-path", "/team/**", "--dns-san", "*.dev.example", "--max-ttl", "4h"); err != nil {
		return err
	}

	var first, hash, firstNoHash, issue, pwLogin, pwHash []time.Duration
	for i := range n {
		user := fmt.Sprintf("user%03d", i)
		out, err := admin("user", "add", user, "--roles", "dev")
		if err != nil {
			return err
		}
		m := inviteRE.FindStringSubmatch(out)
		if m == nil {
			return fmt.Errorf("widctl user add printed no invite:\n%s", out)
		}
		env := userEnv(filepath.Join(dir, "home", user))
		password := "bench password " + strings.Repeat("x", i%5) + "\n"
		outDir := filepath.Join(dir, "svid", user)

		start := time.Now()
		if _, err := widctl(ctx, bin, env, password, "login", "--auth", agent.addr, "--user", user, "--invite", m[1], "--ca-pin", agent.pin, "--password-stdin"); err != nil {
			return err
		}
		if _, err := widctl(ctx, bin, env, "", "svid", "issue", "/team/"+user+"/laptop", "--ttl", "1h", "-o", outDir); err != nil {
			return err
		}
		took := time.Since(start)
		if err := filesWritten(outDir); err != nil {
			return err
		}
		h, err := agent.hashTime(ctx, user, "invite")
		if err != nil {
			return err
		}
		first, hash, firstNoHash = append(first, took), append(hash, h), append(firstNoHash, took-h)

		// svid issue alone: a new process with the saved login.
		start = time.Now()
		if _, err := widctl(ctx, bin, env, "", "svid", "issue", "/team/"+user+"/ci", "-o", outDir+"-2"); err != nil {
			return err
		}
		issue = append(issue, time.Since(start))
		if err := filesWritten(outDir + "-2"); err != nil {
			return err
		}

		// A later login: the password is checked against its hash.
		start = time.Now()
		if _, err := widctl(ctx, bin, env, password, "login", "--auth", agent.addr, "--user", user, "--password-stdin"); err != nil {
			return err
		}
		pwLogin = append(pwLogin, time.Since(start))
		h, err = agent.hashTime(ctx, user, "password")
		if err != nil {
			return err
		}
		pwHash = append(pwHash, h)
	}

	fmt.Printf("bench/login: %d fresh users against widagent start on loopback (key in a 0600 file: no keyring)\n", n)
	fmt.Printf("%-52s %9s %9s %9s %9s  %s\n", "", "min", "median", "p90", "max", "target")
	row := func(name string, d []time.Duration, target time.Duration) {
		slices.Sort(d)
		verdict := ""
		if target > 0 {
			verdict = fmt.Sprintf("< %s: ", target)
			if pct(d, 50) < target {
				verdict += "ok"
			} else {
				verdict += "MISSED"
			}
		}
		fmt.Printf("%-52s %9s %9s %9s %9s  %s\n", name, ms(d[0]), ms(pct(d, 50)), ms(pct(d, 90)), ms(d[len(d)-1]), verdict)
	}
	row("login --invite + svid issue, to files on disk", first, 0)
	row("  of which argon2id (auth service, one hash)", hash, 0)
	row("  excluding the argon2id hash", firstNoHash, loginTarget)
	row("svid issue, process start to files written", issue, issueTarget)
	row("later login with the password", pwLogin, 0)
	row("  of which argon2id (auth service, one check)", pwHash, 0)
	return nil
}

func pct(sorted []time.Duration, p int) time.Duration {
	return sorted[(len(sorted)-1)*p/100]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

func filesWritten(dir string) error {
	for _, f := range []string{"svid.pem", "svid.key", "bundle.pem"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return fmt.Errorf("svid issue did not write %s: %w", f, err)
		}
	}
	return nil
}

// baseEnv is the environment without any widctl or widagent setting of the
// caller's, and with no D-Bus session: every login uses the key file.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "WIDCTL_") || strings.HasPrefix(kv, "WIDAGENT_") || strings.HasPrefix(kv, "DBUS_SESSION_BUS_ADDRESS=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func adminEnv(socket string) []string {
	return append(baseEnv(), "WIDCTL_ADMIN_SOCKET="+socket)
}

func userEnv(home string) []string {
	return append(baseEnv(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"DBUS_SESSION_BUS_ADDRESS=unix:path="+filepath.Join(home, "no-bus"))
}

func widctl(ctx context.Context, bin string, env []string, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "widctl"), args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("widctl %s: %w\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), nil
}

type agent struct {
	cmd               *exec.Cmd
	addr, pin, socket string
	mu                sync.Mutex
	logins            map[string]time.Duration // user+" "+method -> argon2id time
	loginSeen         chan struct{}
	waitDone          chan error
}

// startAgent runs widagent start on a kernel-picked loopback port and reads
// its banner for the address, CA pin and admin socket.
func startAgent(ctx context.Context, bin, dir string) (*agent, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "widagent"), "start", "--data-dir", filepath.Join(dir, "data"),
		"--auth-listen", "127.0.0.1:0", "--workload-socket", filepath.Join(dir, "workload.sock"), "--no-dev-identity", "--log-level", "debug")
	cmd.Env = baseEnv()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	a := &agent{cmd: cmd, logins: map[string]time.Duration{}, loginSeen: make(chan struct{}, 1), waitDone: make(chan error, 1)}
	go func() { err := cmd.Wait(); pw.Close(); a.waitDone <- err }()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			a.mu.Lock()
			if m := addrRE.FindStringSubmatch(line); m != nil {
				a.addr = m[1]
			}
			if m := pinRE.FindStringSubmatch(line); m != nil {
				a.pin = m[1]
			}
			if m := socketRE.FindStringSubmatch(line); m != nil {
				a.socket = m[1]
			}
			if m := loginLine.FindStringSubmatch(line); m != nil {
				if d, err := time.ParseDuration(m[3]); err == nil {
					a.logins[m[1]+" "+m[2]] = d
					select {
					case a.loginSeen <- struct{}{}:
					default:
					}
				}
			}
			done := a.addr != "" && a.pin != "" && a.socket != ""
			a.mu.Unlock()
			if done {
				once.Do(func() { close(ready) })
			}
		}
	}()
	select {
	case <-ready:
	case err := <-a.waitDone:
		return nil, fmt.Errorf("widagent start exited before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		a.stop()
		return nil, errors.New("widagent start printed no address, CA pin and admin socket in 30s")
	}
	// The admin socket exists once the banner is out, but wait for it to be
	// there rather than trust the order.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(a.socket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			a.stop()
			return nil, fmt.Errorf("no admin socket at %s", a.socket)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return a, nil
}

// hashTime waits for the auth service's debug line of user's login.
func (a *agent) hashTime(ctx context.Context, user, method string) (time.Duration, error) {
	timeout := time.After(10 * time.Second)
	for {
		a.mu.Lock()
		d, ok := a.logins[user+" "+method]
		delete(a.logins, user+" "+method)
		a.mu.Unlock()
		if ok {
			return d, nil
		}
		select {
		case <-a.loginSeen:
		case <-timeout:
			return 0, fmt.Errorf("the auth service logged no argon2id time for %s's %s login (widagent --log-level debug)", user, method)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

func (a *agent) stop() {
	a.cmd.Process.Signal(os.Interrupt)
	select {
	case <-a.waitDone:
	case <-time.After(10 * time.Second):
		a.cmd.Process.Kill()
		<-a.waitDone
	}
}
