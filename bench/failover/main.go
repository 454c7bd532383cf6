// Command failover measures how long an agent given several auth replicas
// goes without issuing when the replica it follows dies: from the fault to
// the agent's next successful issuance (a JWT-SVID for an audience it has
// not served before, which only the auth service can mint).
//
//	go run ./bench/failover -wid-bin .bin/wid -runs 10 -fault kill
//	go run ./bench/failover -wid-bin .bin/wid -runs 3 -fault stop
//
// It runs three replicas of the auth service on a private PostgreSQL (fsync
// on) and one agent given all three, on loopback and temp dirs. -fault kill
// sends SIGKILL to the followed replica (restarted after each run); -fault
// stop sends SIGSTOP (SIGCONT after each run).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/wid-project/wid/bench/proc"
	"github.com/wid-project/wid/internal/core/store/postgres/pgtest"
)

func main() {
	var (
		bin   = flag.String("wid-bin", ".bin/wid", "directory holding widagent and widctl")
		runs  = flag.Int("runs", 10, "faults to time")
		fault = flag.String("fault", "kill", "what happens to the followed replica: kill (SIGKILL) or stop (SIGSTOP)")
	)
	flag.Parse()
	if *fault != "kill" && *fault != "stop" {
		fmt.Fprintln(os.Stderr, "failover bench: -fault is kill or stop")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *bin, *runs, *fault); err != nil {
		fmt.Fprintln(os.Stderr, "failover bench:", err)
		os.Exit(1)
	}
}

var (
	pinRE       = regexp.MustCompile(`CA pin:\s+(sha256:[0-9a-f]{64})`)
	sockRE      = regexp.MustCompile(`admin socket:\s+(\S+)`)
	tokenRE     = regexp.MustCompile(`WID_JOIN_TOKEN=(\S+)`)
	followingRE = regexp.MustCompile(`msg="following the auth service"[^\n]* auth=(\S+)`)
)

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func run(ctx context.Context, bin string, runs int, fault string) error {
	pg, err := pgtest.Start(ctx, pgtest.Options{Durable: true})
	if err != nil {
		return err
	}
	defer pg.Stop()
	_, store, err := pg.CreateDatabase(ctx)
	if err != nil {
		return err
	}
	root, err := os.MkdirTemp("", "wid-failover-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)

	const n = 3
	dirs, addrs := make([]string, n), make([]string, n)
	replicas := make([]*proc.Proc, n)
	defer func() {
		for _, r := range replicas {
			if r != nil {
				r.Kill()
			}
		}
	}()
	var pin, admin string
	kek := filepath.Join(root, "kek")
	startReplica := func(i int) error {
		args := []string{"start", "--roles", "auth", "--data-dir", dirs[i], "--store", store, "--auth-listen", addrs[i], "--log-level", "warn"}
		if i > 0 {
			args = append(args, "--kek-file", kek)
		}
		p, _, err := proc.Start(ctx, bin, nil, []*regexp.Regexp{sockRE}, args...)
		if err != nil {
			return err
		}
		replicas[i] = p
		return nil
	}
	for i := range n {
		dirs[i] = filepath.Join(root, strconv.Itoa(i))
		if addrs[i], err = freeAddr(); err != nil {
			return err
		}
	}
	// The first replica's banner names its CA pin; the others join with its key.
	p0, got, err := proc.Start(ctx, bin, nil, []*regexp.Regexp{pinRE}, "start", "--roles", "auth", "--data-dir", dirs[0], "--store", store, "--auth-listen", addrs[0], "--log-level", "warn")
	if err != nil {
		return err
	}
	replicas[0], pin, admin = p0, got[0], filepath.Join(dirs[0], "admin.sock")
	b, err := os.ReadFile(filepath.Join(dirs[0], "keys", "ca.key"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(kek, b, 0o600); err != nil {
		return err
	}
	for i := 1; i < n; i++ {
		if err := startReplica(i); err != nil {
			return err
		}
	}

	widctl := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "widctl"), args...)
		cmd.Env = append(os.Environ(), "WIDCTL_ADMIN_SOCKET="+admin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("widctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	out, err := widctl("bot", "add", "bench", "--roles", "local-agent")
	if err != nil {
		return err
	}
	m := tokenRE.FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("no join token in:\n%s", out)
	}
	if _, err := widctl("workload-identity", "create", "bench", "--spiffe-id", "/bench", "--rule", "workload.unix.uid="+strconv.Itoa(os.Getuid())); err != nil {
		return err
	}
	agentDir := filepath.Join(root, "agent")
	socket := filepath.Join(agentDir, "workload.sock")
	ag, _, err := proc.Start(ctx, bin, nil, []*regexp.Regexp{regexp.MustCompile(`workload API:\s+unix://(\S+)`)}, "start", "--roles", "agent", "--data-dir", agentDir,
		"--workload-socket", socket, "--auth", strings.Join(addrs, ","), "--join-token", m[1], "--ca-pin", pin)
	if err != nil {
		return err
	}
	defer ag.Kill()
	wl, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		return err
	}
	defer wl.Close()

	audience := 0
	issue := func(timeout time.Duration) error {
		audience++
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		_, err := wl.FetchJWTSVID(cctx, jwtsvid.Params{Audience: fmt.Sprintf("failover-%d", audience)})
		return err
	}
	followed := func() string {
		m := followingRE.FindAllStringSubmatch(ag.String(), -1)
		if len(m) == 0 {
			return ""
		}
		return m[len(m)-1][1]
	}
	if err := issue(30 * time.Second); err != nil {
		return fmt.Errorf("first issuance: %w\n%s", err, ag)
	}

	var took []time.Duration
	for r := range runs {
		// Settled: the agent follows a replica and issues through it.
		if err := issue(30 * time.Second); err != nil {
			return fmt.Errorf("issuing before run %d: %w", r+1, err)
		}
		addr := followed()
		victim := slices.Index(addrs, addr)
		if victim < 0 {
			return fmt.Errorf("the agent follows %q, none of %s", addr, strings.Join(addrs, ","))
		}
		at := time.Now()
		if fault == "kill" {
			replicas[victim].Kill()
		} else {
			replicas[victim].Signal(syscall.SIGSTOP)
		}
		for {
			if err := issue(2 * time.Second); err == nil {
				break
			}
			if time.Since(at) > 60*time.Second {
				return fmt.Errorf("no issuance within a minute of the fault:\n%s", ag)
			}
		}
		d := time.Since(at)
		took = append(took, d)
		fmt.Printf("run %d: %s of replica %d, next issuance after %s, the agent follows %s\n", r+1, fault, victim, d.Round(time.Millisecond), followed())
		if fault == "kill" {
			replicas[victim] = nil
			if err := startReplica(victim); err != nil {
				return err
			}
		} else {
			replicas[victim].Signal(syscall.SIGCONT)
		}
	}
	slices.Sort(took)
	q := func(p float64) time.Duration { return took[min(len(took)-1, int(p*float64(len(took))))] }
	fmt.Printf("failover (%s of the followed replica to the next issuance), %d runs: min %s  median %s  p99 %s  max %s\n",
		fault, len(took), took[0].Round(time.Millisecond), q(0.5).Round(time.Millisecond), q(0.99).Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
	return nil
}
